/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * A store over a connected libnbd handle.  libnbd handles are thread
 * safe, so one store may be used by several threads; requests are
 * synchronous, parallelism comes from the callers. */

#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <libnbd.h>

#include "store.h"

static int nbd_fail (void);

const char *
r3map_nbd_error (void)
{
  const char *e = nbd_get_error ();
  const char *colon;

  if (e == NULL)
    return "unknown error";
  colon = strstr (e, ": ");
  if (strncmp (e, "nbd_", 4) == 0 && colon && !memchr (e, ' ', colon - e))
    return colon + 2;
  return e;
}

int
r3map_nbd_connect_uri (struct nbd_handle *nbd, const char *uri,
                       uint64_t timeout_ms)
{
  int64_t deadline = g_get_monotonic_time () / 1000 + (int64_t) timeout_ms;

  if (nbd_aio_connect_uri (nbd, uri) == -1)
    return nbd_fail ();
  /* Until the handshake is done (ready, or the option phase if the
   * caller asked for it), the connection dies, or time is up. */
  while (!nbd_aio_is_ready (nbd) && !nbd_aio_is_negotiating (nbd)) {
    int64_t left = deadline - g_get_monotonic_time () / 1000;

    if (nbd_aio_is_dead (nbd) || nbd_aio_is_closed (nbd))
      return nbd_fail ();
    if (left <= 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    if (nbd_poll (nbd, left > INT_MAX ? INT_MAX : (int) left) == -1)
      return nbd_fail ();
  }
  return 0;
}

struct nbd_store {
  struct nbd_handle *nbd;
  bool own;
  bool can_flush, can_fua, can_trim, can_zero;
};

/* libnbd's error as an errno; a handle that failed without one
 * (a dead connection) reports EIO. */
static int
nbd_fail (void)
{
  int e = nbd_get_errno ();

  errno = e > 0 ? e : EIO;
  return -1;
}

static int
nbd_store_pread (void *h, void *buf, uint32_t count, uint64_t offset)
{
  struct nbd_store *s = h;

  return nbd_pread (s->nbd, buf, count, offset, 0) == -1 ? nbd_fail () : 0;
}

static int
nbd_store_flush (void *h)
{
  struct nbd_store *s = h;

  if (!s->can_flush)
    return 0;
  return nbd_flush (s->nbd, 0) == -1 ? nbd_fail () : 0;
}

static int
nbd_store_pwrite (void *h, const void *buf, uint32_t count, uint64_t offset,
                  bool fua)
{
  struct nbd_store *s = h;
  uint32_t flags = fua && s->can_fua ? LIBNBD_CMD_FLAG_FUA : 0;

  if (nbd_pwrite (s->nbd, buf, count, offset, flags) == -1)
    return nbd_fail ();
  if (fua && !s->can_fua)
    return nbd_store_flush (h);
  return 0;
}

static int
nbd_store_trim (void *h, uint32_t count, uint64_t offset)
{
  struct nbd_store *s = h;

  if (!s->can_trim)
    return 0;                   /* Trim is advisory. */
  return nbd_trim (s->nbd, count, offset, 0) == -1 ? nbd_fail () : 0;
}

static int
nbd_store_zero (void *h, uint32_t count, uint64_t offset)
{
  struct nbd_store *s = h;

  if (!s->can_zero) {
    errno = ENOTSUP;            /* The caller writes zeros. */
    return -1;
  }
  return nbd_zero (s->nbd, count, offset, 0) == -1 ? nbd_fail () : 0;
}

static void
nbd_store_close (void *h)
{
  struct nbd_store *s = h;

  if (s->own) {
    nbd_shutdown (s->nbd, 0);
    nbd_close (s->nbd);
  }
  free (s);
}

static const struct r3map_store_ops nbd_ops = {
  .name = "nbd",
  .pread = nbd_store_pread,
  .pwrite = nbd_store_pwrite,
  .flush = nbd_store_flush,
  .trim = nbd_store_trim,
  .zero = nbd_store_zero,
  .close = nbd_store_close,
};

struct r3map_store *
r3map_store_new_nbd (struct nbd_handle *nbd, bool own)
{
  struct r3map_store *store;
  struct nbd_store *s;
  int64_t size = nbd_get_size (nbd);

  if (size == -1) {
    nbd_fail ();
    return NULL;
  }
  s = calloc (1, sizeof *s);
  if (s == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  s->nbd = nbd;
  s->own = own;
  /* The answers are fixed once connected: ask once. */
  s->can_flush = nbd_can_flush (nbd) == 1;
  s->can_fua = nbd_can_fua (nbd) == 1;
  s->can_trim = nbd_can_trim (nbd) == 1;
  s->can_zero = nbd_can_zero (nbd) == 1;
  store = r3map_store_new (&nbd_ops, s, size);
  if (store == NULL)
    free (s);
  return store;
}
