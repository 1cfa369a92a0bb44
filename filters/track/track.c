/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * nbdkit r3map-track filter: the seeder side of a migration.
 *
 * On the disk (any export name not starting with "r3map:") it passes
 * every request through, numbering each write and counting reads per
 * chunk (tracker.h).  Leechers learn what changed through reserved,
 * read-only export names, the views, answered with standard NBD only:
 *
 *   r3map:changed-since:N  block status: chunks written after write
 *                          number N are data, the others holes
 *   r3map:sealed-since:N   the same, once sealed: opening it waits (up
 *                          to track-seal-wait) for the seal, so the
 *                          set it shows is final
 *   r3map:heat             one byte per chunk, its read count (0-255)
 *
 * Each view's export description carries the tracking epoch, the
 * current write number and the seal.  Views change nothing: opening,
 * listing, reading them, any number of times, has no effect on the
 * disk or on the tracking.  Sealing is local only (control.h).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "control.h"
#include "parse.h"
#include "tracker.h"

#define DEFAULT_CHUNK_SIZE (UINT64_C (64) << 10)
#define MIN_CHUNK_SIZE (UINT64_C (4) << 10)
#define MAX_CHUNK_SIZE (UINT64_C (64) << 20)
#define DEFAULT_SEAL_WAIT_MS 5000

/* Chunks looked at by one block status request on a view: the answer
 * may be shorter than asked (NBD allows it). */
#define EXTENTS_MAX_CHUNKS (UINT64_C (1) << 20)

#define VIEW_PREFIX "r3map:"

static uint64_t chunk_size = DEFAULT_CHUNK_SIZE;
static unsigned chunk_shift;
static char *control_path;
static uint64_t seal_wait_ms = DEFAULT_SEAL_WAIT_MS;

enum view { VIEW_DISK, VIEW_CHANGED, VIEW_SEALED, VIEW_HEAT };

struct handle {
  enum view view;
  uint64_t since;               /* N of changed-since/sealed-since */
  struct tracker_status st;     /* at open: the description's figures */
  int64_t disk_size;
};

static void
track_unload (void)
{
  control_stop ();
  tracker_free ();
  free (control_path);
}

static int
track_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
              const char *key, const char *value)
{
  GError *error = NULL;

  if (strcmp (key, "track-chunk-size") == 0) {
    if (!r3map_parse_size (key, value, &chunk_size, &error))
      goto parse_error;
    if (!r3map_is_power_of_2 (chunk_size) ||
        chunk_size < MIN_CHUNK_SIZE || chunk_size > MAX_CHUNK_SIZE) {
      nbdkit_error ("track-chunk-size=%s: must be a power of 2 from 4K "
                    "to 64M", value);
      return -1;
    }
    return 0;
  }
  if (strcmp (key, "track-control") == 0) {
    if (value[0] == '\0') {
      nbdkit_error ("track-control=: the socket path must not be empty");
      return -1;
    }
    free (control_path);
    control_path = nbdkit_absolute_path (value);
    return control_path ? 0 : -1;
  }
  if (strcmp (key, "track-seal-wait") == 0) {
    if (!r3map_parse_duration (key, value, &seal_wait_ms, &error))
      goto parse_error;
    if (seal_wait_ms > UINT64_C (3600) * 1000) {
      nbdkit_error ("track-seal-wait=%s: at most 1h", value);
      return -1;
    }
    return 0;
  }
  return next (nxdata, key, value);

 parse_error:
  nbdkit_error ("%s", error->message);
  g_error_free (error);
  return -1;
}

static int
track_config_complete (nbdkit_next_config_complete *next,
                       nbdkit_backend *nxdata)
{
  chunk_shift = __builtin_ctzll (chunk_size);
  if (tracker_init (chunk_shift) == -1)
    return -1;
  return next (nxdata);
}

#define track_config_help \
  "track-chunk-size=<SIZE>    Tracking granularity (power of 2, default 64K).\n" \
  "track-control=<SOCKET>     Local Unix socket to seal and unseal.\n" \
  "track-seal-wait=<DURATION> How long r3map:sealed-since:N waits (default 5s)."

/* The socket is made before nbdkit forks (a bad path fails the start),
 * its thread after (threads do not survive a fork). */
static int
track_get_ready (int thread_model)
{
  if (control_path)
    return control_listen (control_path);
  return 0;
}

static int
track_after_fork (nbdkit_backend *nxdata)
{
  return control_start ();
}

static void
track_cleanup (nbdkit_backend *nxdata)
{
  control_stop ();
}

static int
track_list_exports (nbdkit_next_list_exports *next, nbdkit_backend *nxdata,
                    int readonly, int is_tls, struct nbdkit_exports *exports)
{
  if (next (nxdata, readonly, exports) == -1)
    return -1;
  /* Only views that answer at once: listing must never wait. */
  if (nbdkit_add_export (exports, VIEW_PREFIX "changed-since:0",
                         "r3map-track: chunks written since start") == -1 ||
      nbdkit_add_export (exports, VIEW_PREFIX "heat",
                         "r3map-track: read count per chunk") == -1)
    return -1;
  return 0;
}

/* "r3map:NAME" into H; -1 with the error logged. */
static int
parse_view (const char *exportname, struct handle *h)
{
  const char *v = exportname + strlen (VIEW_PREFIX);
  const char *n = NULL;
  GError *error = NULL;

  if (strcmp (v, "heat") == 0) {
    h->view = VIEW_HEAT;
    return 0;
  }
  if (strncmp (v, "changed-since:", 14) == 0) {
    h->view = VIEW_CHANGED;
    n = v + 14;
  }
  else if (strncmp (v, "sealed-since:", 13) == 0) {
    h->view = VIEW_SEALED;
    n = v + 13;
  }
  else {
    nbdkit_error ("export %s: no such r3map-track view (known: "
                  "changed-since:N, sealed-since:N, heat)", exportname);
    return -1;
  }
  if (!r3map_parse_uint ("export", n, 0, UINT64_MAX, &h->since, &error)) {
    nbdkit_error ("export %s: N must be a write number: %s",
                  exportname, error->message);
    g_error_free (error);
    return -1;
  }
  return 0;
}

static void *
track_open (nbdkit_next_open *next, nbdkit_context *context,
            int readonly, const char *exportname, int is_tls)
{
  struct handle *h = calloc (1, sizeof *h);

  if (h == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  h->view = VIEW_DISK;
  if (strncmp (exportname, VIEW_PREFIX, strlen (VIEW_PREFIX)) == 0) {
    if (parse_view (exportname, h) == -1)
      goto fail;
    if (h->view == VIEW_SEALED && !tracker_wait_sealed (seal_wait_ms)) {
      nbdkit_error ("export %s: not sealed within %" PRIu64 " ms",
                    exportname, seal_wait_ms);
      goto fail;
    }
    /* The plugin's default export, read-only: views never write. */
    if (next (context, 1, "") == -1)
      goto fail;
  }
  else if (next (context, readonly, exportname) == -1)
    goto fail;
  /* Taken after the wait: the description and every block status of
   * this connection answer for this moment or later. */
  tracker_status (&h->st);
  return h;

 fail:
  free (h);
  return NULL;
}

static void
track_close (void *handle)
{
  free (handle);
}

static int
track_prepare (nbdkit_next *next, void *handle, int readonly)
{
  struct handle *h = handle;

  h->disk_size = next->get_size (next);
  if (h->disk_size == -1)
    return -1;
  if (tracker_set_size (h->disk_size) == -1) {
    nbdkit_error ("r3map-track: cannot allocate the tracking tables: %m");
    return -1;
  }
  return 0;
}

static int64_t
track_get_size (nbdkit_next *next, void *handle)
{
  struct handle *h = handle;

  if (h->view == VIEW_HEAT)
    return (h->disk_size + chunk_size - 1) >> chunk_shift;
  return next->get_size (next);
}

static const char *
track_export_description (nbdkit_next *next, void *handle)
{
  struct handle *h = handle;

  if (h->view == VIEW_DISK)
    return next->export_description (next);
  if (h->st.sealed)
    return nbdkit_printf_intern ("r3map-track epoch=%s seq=%" PRIu64
                                 " sealed=yes final=%" PRIu64
                                 " chunk-size=%" PRIu64,
                                 tracker_epoch (), h->st.seq,
                                 h->st.sealed_seq, chunk_size);
  return nbdkit_printf_intern ("r3map-track epoch=%s seq=%" PRIu64
                               " sealed=no chunk-size=%" PRIu64,
                               tracker_epoch (), h->st.seq, chunk_size);
}

/* Views are read-only snapshots of the tracking: no writes, no flush,
 * no cache; block status is what they are for. */
#define VIEW_OR(value, call) \
  (((struct handle *) handle)->view != VIEW_DISK ? (value) : (call))

static int
track_can_write (nbdkit_next *next, void *handle)
{
  return VIEW_OR (0, next->can_write (next));
}

static int
track_can_flush (nbdkit_next *next, void *handle)
{
  return VIEW_OR (0, next->can_flush (next));
}

static int
track_can_trim (nbdkit_next *next, void *handle)
{
  return VIEW_OR (0, next->can_trim (next));
}

static int
track_can_zero (nbdkit_next *next, void *handle)
{
  return VIEW_OR (NBDKIT_ZERO_NONE, next->can_zero (next));
}

static int
track_can_fast_zero (nbdkit_next *next, void *handle)
{
  return VIEW_OR (0, next->can_fast_zero (next));
}

static int
track_can_extents (nbdkit_next *next, void *handle)
{
  return VIEW_OR (1, next->can_extents (next));
}

static int
track_can_multi_conn (nbdkit_next *next, void *handle)
{
  return VIEW_OR (0, next->can_multi_conn (next));
}

static int
track_can_cache (nbdkit_next *next, void *handle)
{
  return VIEW_OR (NBDKIT_CACHE_NONE, next->can_cache (next));
}

static int
track_pread (nbdkit_next *next, void *handle, void *buf, uint32_t count,
             uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;
  uint32_t i;

  switch (h->view) {
  case VIEW_DISK:
    tracker_read (offset, count);
    return next->pread (next, buf, count, offset, flags, err);
  case VIEW_HEAT:
    for (i = 0; i < count; ++i)
      ((uint8_t *) buf)[i] = tracker_chunk_heat (offset + i);
    return 0;
  default:
    /* The disk's data, without counting it as heat. */
    return next->pread (next, buf, count, offset, flags, err);
  }
}

/* Writes: refused once sealed; numbered when done.  A failed write may
 * have changed part of its range below us, so it is numbered too. */
#define TRACKED_WRITE(call)                     \
  do {                                          \
    int r_;                                     \
    if (tracker_write_begin () == -1) {         \
      *err = EROFS;                             \
      return -1;                                \
    }                                           \
    r_ = (call);                                \
    tracker_write_end (offset, count, true);    \
    return r_;                                  \
  } while (0)

static int
track_pwrite (nbdkit_next *next, void *handle, const void *buf,
              uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  TRACKED_WRITE (next->pwrite (next, buf, count, offset, flags, err));
}

static int
track_trim (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
            uint32_t flags, int *err)
{
  TRACKED_WRITE (next->trim (next, count, offset, flags, err));
}

static int
track_zero (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
            uint32_t flags, int *err)
{
  TRACKED_WRITE (next->zero (next, count, offset, flags, err));
}

/* Block status of a changed-since or sealed-since view. */
static int
view_extents (struct handle *h, uint32_t count, uint64_t offset,
              struct nbdkit_extents *extents, int *err)
{
  uint64_t first = offset >> chunk_shift;
  uint64_t last = (offset + count - 1) >> chunk_shift, c, next;

  if (last - first >= EXTENTS_MAX_CHUNKS)
    last = first + EXTENTS_MAX_CHUNKS - 1;
  for (c = first; c <= last; c = next) {
    uint64_t len;
    uint32_t type;

    next = tracker_next_changed (c, last + 1, h->since);
    if (next > c)               /* unchanged since: one extent for all */
      type = NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
    else {
      next = c + 1;
      type = 0;
    }
    len = (next - c) << chunk_shift;
    if (nbdkit_add_extent (extents, c << chunk_shift, len, type) == -1) {
      *err = errno;
      return -1;
    }
  }
  return 0;
}

static int
track_extents (nbdkit_next *next, void *handle, uint32_t count,
               uint64_t offset, uint32_t flags,
               struct nbdkit_extents *extents, int *err)
{
  struct handle *h = handle;

  switch (h->view) {
  case VIEW_DISK:
    return next->extents (next, count, offset, flags, extents, err);
  case VIEW_HEAT:
    return nbdkit_add_extent (extents, offset, count, 0);
  default:
    return view_extents (h, count, offset, extents, err);
  }
}

static struct nbdkit_filter filter = {
  .name               = "r3map-track",
  .longname           = "r3map seeder: write tracking, views and seal",
  .unload             = track_unload,
  .config             = track_config,
  .config_complete    = track_config_complete,
  .config_help        = track_config_help,
  .get_ready          = track_get_ready,
  .after_fork         = track_after_fork,
  .cleanup            = track_cleanup,
  .list_exports       = track_list_exports,
  .open               = track_open,
  .close              = track_close,
  .prepare            = track_prepare,
  .get_size           = track_get_size,
  .export_description = track_export_description,
  .can_write          = track_can_write,
  .can_flush          = track_can_flush,
  .can_trim           = track_can_trim,
  .can_zero           = track_can_zero,
  .can_fast_zero      = track_can_fast_zero,
  .can_extents        = track_can_extents,
  .can_multi_conn     = track_can_multi_conn,
  .can_cache          = track_can_cache,
  .pread              = track_pread,
  .pwrite             = track_pwrite,
  .trim               = track_trim,
  .zero               = track_zero,
  .extents            = track_extents,
};

NBDKIT_REGISTER_FILTER (filter)
