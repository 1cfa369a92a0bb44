/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The generic half of the store interface: bounds checks, then the
 * backend's operation.  See store.h. */

#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include "store.h"

static bool
in_range (struct r3map_store *store, uint32_t count, uint64_t offset)
{
  if (offset > store->size || count > store->size - offset) {
    errno = ERANGE;
    return false;
  }
  return true;
}

struct r3map_store *
r3map_store_new (const struct r3map_store_ops *ops, void *h, uint64_t size)
{
  struct r3map_store *store = calloc (1, sizeof *store);

  if (store == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  store->ops = ops;
  store->h = h;
  store->size = size;
  return store;
}

void
r3map_store_close (struct r3map_store *store)
{
  if (store == NULL)
    return;
  if (store->ops->close)
    store->ops->close (store->h);
  free (store);
}

int
r3map_store_pread (struct r3map_store *store, void *buf,
                   uint32_t count, uint64_t offset)
{
  if (!in_range (store, count, offset))
    return -1;
  return count == 0 ? 0 : store->ops->pread (store->h, buf, count, offset);
}

int
r3map_store_pwrite (struct r3map_store *store, const void *buf,
                    uint32_t count, uint64_t offset, bool fua)
{
  if (!in_range (store, count, offset))
    return -1;
  return count == 0 ? 0 : store->ops->pwrite (store->h, buf, count, offset, fua);
}

int
r3map_store_flush (struct r3map_store *store)
{
  return store->ops->flush (store->h);
}

int
r3map_store_trim (struct r3map_store *store, uint32_t count, uint64_t offset)
{
  if (!in_range (store, count, offset))
    return -1;
  return count == 0 ? 0 : store->ops->trim (store->h, count, offset);
}

/* Zeroing for backends that cannot: write zeros. */
static int
write_zeros (struct r3map_store *store, uint32_t count, uint64_t offset)
{
  static const char zeros[65536];

  while (count > 0) {
    uint32_t n = count < sizeof zeros ? count : sizeof zeros;
    if (store->ops->pwrite (store->h, zeros, n, offset, false) == -1)
      return -1;
    count -= n;
    offset += n;
  }
  return 0;
}

int
r3map_store_zero (struct r3map_store *store, uint32_t count, uint64_t offset)
{
  if (!in_range (store, count, offset))
    return -1;
  if (count == 0)
    return 0;
  if (store->ops->zero != NULL) {
    if (store->ops->zero (store->h, count, offset) == 0)
      return 0;
    if (errno != ENOTSUP)
      return -1;
  }
  return write_zeros (store, count, offset);
}
