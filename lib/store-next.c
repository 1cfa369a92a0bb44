/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * A store over an nbdkit `next': the plugin (or filter) below a filter.
 * Only the function pointers of nbdkit_next are used, so this file
 * links without nbdkit and is unit-tested with a fake `next'. */

#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include <nbdkit-filter.h>

#include "store.h"

struct next_store {
  nbdkit_next *next;
  bool can_flush, can_fua, can_trim, can_zero;
};

static int
next_fail (int err)
{
  errno = err > 0 ? err : EIO;
  return -1;
}

static int
next_pread (void *h, void *buf, uint32_t count, uint64_t offset)
{
  struct next_store *s = h;
  int err = 0;

  if (s->next->pread (s->next, buf, count, offset, 0, &err) == -1)
    return next_fail (err);
  return 0;
}

static int
next_flush (void *h)
{
  struct next_store *s = h;
  int err = 0;

  if (!s->can_flush)
    return 0;
  if (s->next->flush (s->next, 0, &err) == -1)
    return next_fail (err);
  return 0;
}

static int
next_pwrite (void *h, const void *buf, uint32_t count, uint64_t offset,
             bool fua)
{
  struct next_store *s = h;
  uint32_t flags = fua && s->can_fua ? NBDKIT_FLAG_FUA : 0;
  int err = 0;

  if (s->next->pwrite (s->next, buf, count, offset, flags, &err) == -1)
    return next_fail (err);
  if (fua && !s->can_fua)
    return next_flush (h);
  return 0;
}

static int
next_trim (void *h, uint32_t count, uint64_t offset)
{
  struct next_store *s = h;
  int err = 0;

  if (!s->can_trim)
    return 0;
  if (s->next->trim (s->next, count, offset, 0, &err) == -1)
    return next_fail (err);
  return 0;
}

static int
next_zero (void *h, uint32_t count, uint64_t offset)
{
  struct next_store *s = h;
  int err = 0;

  if (!s->can_zero) {
    errno = ENOTSUP;            /* The caller writes zeros. */
    return -1;
  }
  if (s->next->zero (s->next, count, offset, NBDKIT_FLAG_MAY_TRIM,
                     &err) == -1)
    return next_fail (err);
  return 0;
}

static void
next_close (void *h)
{
  free (h);
}

static const struct r3map_store_ops next_ops = {
  .name = "next",
  .pread = next_pread,
  .pwrite = next_pwrite,
  .flush = next_flush,
  .trim = next_trim,
  .zero = next_zero,
  .close = next_close,
};

struct r3map_store *
r3map_store_new_next (nbdkit_next *next)
{
  struct r3map_store *store;
  struct next_store *s;
  int64_t size = next->get_size (next);

  if (size == -1) {
    errno = EIO;
    return NULL;
  }
  s = calloc (1, sizeof *s);
  if (s == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  s->next = next;
  s->can_flush = next->can_flush (next) == 1;
  s->can_fua = next->can_fua (next) == NBDKIT_FUA_NATIVE;
  s->can_trim = next->can_trim (next) == 1;
  s->can_zero = next->can_zero (next) > NBDKIT_ZERO_NONE;
  store = r3map_store_new (&next_ops, s, size);
  if (store == NULL)
    free (s);
  return store;
}
