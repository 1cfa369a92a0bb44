/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * A seeder's views, from the leecher's side: see seeder.h.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "parse.h"
#include "seeder.h"
#include "store.h"

/* Block status is asked for in pieces of at most 4 GiB (NBD lengths
 * are 32 bits; the seeder answers at most 2^20 chunks per request), this
 * many in flight at once: a disk of a TiB takes 256 pieces, and one at a
 * time each paid a round trip, at finalize (downtime). */
#define STATUS_IN_FLIGHT 16

/* Reads of the heat view, within any server's request limit. */
#define HEAT_PIECE (INT64_C (1) << 20)

bool
r3map_seeder_parse_description (const char *desc,
                                struct r3map_seeder_info *info,
                                GError **error)
{
  g_auto (GStrv) words = NULL;
  bool have_epoch = false, have_seq = false, have_sealed = false;
  bool have_chunk = false, have_final = false;
  size_t i;

  memset (info, 0, sizeof *info);
  if (desc == NULL || strncmp (desc, "r3map-track ", 12) != 0) {
    g_set_error (error, R3MAP_ERROR, EPROTO,
                 "not an r3map-track view (export description \"%s\")",
                 desc ? desc : "");
    return false;
  }
  words = g_strsplit (desc + 12, " ", -1);
  for (i = 0; words[i]; ++i) {
    const char *w = words[i];
    char *end;

    if (strncmp (w, "epoch=", 6) == 0 && strlen (w + 6) == 16 &&
        strspn (w + 6, "0123456789abcdef") == 16) {
      memcpy (info->epoch, w + 6, 17);
      have_epoch = true;
    }
    else if (strncmp (w, "seq=", 4) == 0) {
      errno = 0;
      info->seq = g_ascii_strtoull (w + 4, &end, 10);
      have_seq = errno == 0 && *end == '\0' && end != w + 4;
    }
    else if (strcmp (w, "sealed=yes") == 0 || strcmp (w, "sealed=no") == 0) {
      info->sealed = w[7] == 'y';
      have_sealed = true;
    }
    else if (strncmp (w, "final=", 6) == 0) {
      errno = 0;
      info->final = g_ascii_strtoull (w + 6, &end, 10);
      have_final = errno == 0 && *end == '\0' && end != w + 6;
    }
    else if (strncmp (w, "chunk-size=", 11) == 0) {
      errno = 0;
      info->chunk_size = g_ascii_strtoull (w + 11, &end, 10);
      have_chunk = errno == 0 && *end == '\0' && end != w + 11;
    }
    /* Words this version does not know are for later versions. */
  }
  if (!have_epoch || !have_seq || !have_sealed || !have_chunk ||
      (info->sealed && !have_final)) {
    g_set_error (error, R3MAP_ERROR, EPROTO,
                 "malformed r3map-track export description \"%s\"", desc);
    return false;
  }
  return true;
}

static void
set_nbd_error (GError **error, const char *uri, const char *what)
{
  int e = nbd_get_errno ();
  g_set_error (error, R3MAP_ERROR, e ? e : EIO, "seeder %s: %s: %s",
               uri, what, r3map_nbd_error ());
}

/* Every exchange with the seeder (connecting and opening a view, one
 * block status request, one read) must end within this: a seeder that
 * accepts a connection and never answers (an nbdkit shutting down
 * leaves queued connections so) must not hold a leecher's thread, and
 * with it the leecher's own shutdown, forever. */
static _Atomic uint64_t answer_ms = 30000;

/* How often an exchange that may be cancelled looks at its flag. */
#define CANCEL_SLICE_MS 100

void
r3map_seeder_set_timeout (uint64_t ms)
{
  answer_ms = ms ? ms : 1;
}

static int64_t
now_ms (void)
{
  return g_get_monotonic_time () / 1000;
}

/* Run NBD's state machine until DONE (NBD, ARG) is non-zero (returned:
 * 0 done, -1 failed with libnbd's error set in ERROR), the deadline
 * passes (-1, ETIMEDOUT) or CANCEL is set (-1, ECANCELED). */
static int
run_until (struct nbd_handle *nbd, int (*done) (struct nbd_handle *, void *),
           void *arg, const char *uri, const char *what,
           const atomic_bool *cancel, GError **error)
{
  int64_t deadline = now_ms () + (int64_t) answer_ms;

  for (;;) {
    int r = done (nbd, arg);
    int64_t left;

    if (r > 0)
      return 0;
    if (r < 0) {
      set_nbd_error (error, uri, what);
      return -1;
    }
    if (cancel && atomic_load (cancel)) {
      g_set_error (error, R3MAP_ERROR, ECANCELED,
                   "seeder %s: %s: cancelled", uri, what);
      return -1;
    }
    left = deadline - now_ms ();
    if (left <= 0) {
      g_set_error (error, R3MAP_ERROR, ETIMEDOUT,
                   "seeder %s: %s: no answer within %" PRIu64 " ms",
                   uri, what, (uint64_t) answer_ms);
      return -1;
    }
    if (cancel)
      left = MIN (left, CANCEL_SLICE_MS);
    if (nbd_poll (nbd, left > INT_MAX ? INT_MAX : (int) left) == -1) {
      set_nbd_error (error, uri, what);
      return -1;
    }
  }
}

/* The handshake is done (or stopped in the option phase). */
static int
connected_done (struct nbd_handle *nbd, void *arg)
{
  if (nbd_aio_is_ready (nbd) || nbd_aio_is_negotiating (nbd))
    return 1;
  if (nbd_aio_is_dead (nbd) || nbd_aio_is_closed (nbd))
    return -1;
  return 0;
}

/* opt_go's completion: its error, for go_done. */
struct go {
  bool completed;
  int err;
};

static int
go_completed (void *user_data, int *error)
{
  struct go *go = user_data;

  go->completed = true;
  go->err = *error;
  return 1;
}

static int
go_done (struct nbd_handle *nbd, void *arg)
{
  struct go *go = arg;

  if (nbd_aio_is_ready (nbd))
    return 1;
  if (nbd_aio_is_dead (nbd) || nbd_aio_is_closed (nbd))
    return -1;
  if (go->completed) {
    /* Refused: libnbd is back in the option phase. */
    nbd_aio_opt_abort (nbd);
    return -1;
  }
  return 0;
}

static int
command_done (struct nbd_handle *nbd, void *arg)
{
  return nbd_aio_command_completed (nbd, *(int64_t *) arg);
}

/* Connect to URI, but open export VIEW instead of the URI's. */
static struct nbd_handle *
open_view (const char *uri, const char *view, const atomic_bool *cancel,
           GError **error)
{
  struct nbd_handle *nbd = nbd_create ();
  struct go go = { 0 };

  if (nbd == NULL) {
    set_nbd_error (error, uri, "nbd_create");
    return NULL;
  }
  /* Stop in the option phase to change the export name, then go. */
  if (nbd_set_opt_mode (nbd, true) == -1 ||
      nbd_set_full_info (nbd, true) == -1 ||
      nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      /* The URI is the administrator's (source=): its TLS files are
       * local files. */
      nbd_set_uri_allow_local_file (nbd, true) == -1) {
    set_nbd_error (error, uri, "connect");
    goto fail;
  }
  if (nbd_aio_connect_uri (nbd, uri) == -1) {
    set_nbd_error (error, uri, "connect");
    goto fail;
  }
  if (run_until (nbd, connected_done, NULL, uri, "connect", cancel,
                 error) == -1)
    goto fail;
  if (nbd_set_export_name (nbd, view) == -1 ||
      nbd_aio_opt_go (nbd, (nbd_completion_callback) {
          .callback = go_completed, .user_data = &go }) == -1) {
    set_nbd_error (error, uri, view);
    goto fail;
  }
  if (run_until (nbd, go_done, &go, uri, view, cancel, error) == -1) {
    if (go.completed) {
      /* The server said no: libnbd has no error of its own for that. */
      int e = go.err ? go.err : ENOENT;
      g_clear_error (error);
      g_set_error (error, R3MAP_ERROR, e, "seeder %s: %s: refused: %s",
                   uri, view, g_strerror (e));
    }
    goto fail;
  }
  return nbd;

 fail:
  nbd_close (nbd);
  return NULL;
}

static bool
read_info (struct nbd_handle *nbd, const char *uri,
           struct r3map_seeder_info *info, GError **error)
{
  g_autofree char *desc = nbd_get_export_description (nbd);
  GError *err = NULL;

  if (!r3map_seeder_parse_description (desc, info, &err)) {
    g_set_error (error, R3MAP_ERROR, err->code, "seeder %s: %s",
                 uri, err->message);
    g_error_free (err);
    return false;
  }
  return true;
}

bool
r3map_seeder_info (const char *uri, struct r3map_seeder_info *info,
                   const atomic_bool *cancel, GError **error)
{
  struct nbd_handle *nbd = open_view (uri, "r3map:changed-since:0", cancel,
                                      error);
  bool ret;

  if (nbd == NULL)
    return false;
  ret = read_info (nbd, uri, info, error);
  nbd_shutdown (nbd, 0);
  nbd_close (nbd);
  return ret;
}

struct collect {
  uint64_t chunk_size;
  GArray *chunks;
  uint64_t end;                 /* where the answer stopped */
  uint64_t last;                /* last chunk appended + 1 (no repeats) */
};

static int
extent_cb (void *opaque, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
  struct collect *c = opaque;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (i = 0; i + 1 < nr_entries; i += 2) {
    uint64_t len = entries[i], type = entries[i + 1];

    if (!(type & LIBNBD_STATE_HOLE)) {
      uint64_t ch = offset / c->chunk_size;
      uint64_t last = (offset + len + c->chunk_size - 1) / c->chunk_size;
      if (ch < c->last)
        ch = c->last;
      for (; ch < last; ++ch) {
        guint64 v = ch;
        g_array_append_val (c->chunks, v);
      }
      if (last > c->last)
        c->last = last;
    }
    offset += len;
  }
  c->end = offset;
  return 0;
}

/* One block status request of a view, in flight. */
struct piece {
  uint64_t off, len;
  int64_t cookie;
  bool done;
  struct collect c;
};

struct batch {
  struct piece *p;
  unsigned n;                   /* sent */
  int failed;                   /* the first failed piece's errno, or 0 */
  char *why;                    /* and libnbd's message for it */
};

/* Every piece sent is answered (1), or the connection is gone (-1).  A
 * piece the seeder fails is noted in B->failed and the others are still
 * waited for: see drain. */
static int
batch_done (struct nbd_handle *nbd, void *arg)
{
  struct batch *b = arg;
  bool pending = false;
  unsigned i;

  for (i = 0; i < b->n; ++i) {
    if (b->p[i].done)
      continue;
    switch (nbd_aio_command_completed (nbd, b->p[i].cookie)) {
    case -1:
      if (nbd_aio_is_dead (nbd) || nbd_aio_is_closed (nbd))
        return -1;
      b->p[i].done = true;
      if (b->failed == 0) {
        int e = nbd_get_errno ();
        b->failed = e ? e : EIO;
        b->why = g_strdup (r3map_nbd_error ());
      }
      break;
    case 0: pending = true; break;
    default: b->p[i].done = true;
    }
  }
  return pending ? 0 : 1;
}

/* Wait, for at most DRAIN_MS, until NBD has no request in flight.
 * nbdkit 1.32 (Debian 12's) ends its whole server when a client closes
 * a connection with two or more replies still to be sent (README,
 * "Known problems"), and the seeder is the running guest's disk
 * server: a leecher that gives up on a view (a failed piece, a timeout,
 * a cancel) lets the seeder finish answering before it closes.  The
 * extent callbacks still write into the pieces, which stay alive until
 * this returns. */
#define DRAIN_MS 2000

static void
drain (struct nbd_handle *nbd)
{
  int64_t deadline = now_ms () + DRAIN_MS;

  while (nbd_aio_in_flight (nbd) > 0 &&
         !nbd_aio_is_dead (nbd) && !nbd_aio_is_closed (nbd)) {
    int64_t left = deadline - now_ms ();

    if (left <= 0 || nbd_poll (nbd, (int) left) == -1)
      return;
  }
}

static int
cmp_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

  return x < y ? -1 : x > y;
}

/* Append to CHUNKS, in ascending order, the chunks of VIEW (SIZE bytes)
 * not reported as holes: the disk is asked for in pieces, several in
 * flight, and a piece answered short is asked for again from where its
 * answer stopped. */
static bool
changed_pieces (struct nbd_handle *nbd, const char *uri, const char *view,
                uint64_t size, uint64_t chunk_size, GArray *chunks,
                const atomic_bool *cancel, GError **error)
{
  uint64_t piece_max = ((UINT64_C (1) << 32) - chunk_size) & ~(chunk_size - 1);
  g_autoptr (GArray) pending = g_array_new (FALSE, FALSE, sizeof (uint64_t));
  struct piece p[STATUS_IN_FLIGHT];
  struct batch b = { .p = p };
  guint first = chunks->len, made, i;
  uint64_t off;
  bool ok = true;

  /* Ranges still to ask for, as (offset, length) pairs. */
  for (off = 0; off < size; off += piece_max) {
    uint64_t len = MIN (size - off, piece_max);
    g_array_append_val (pending, off);
    g_array_append_val (pending, len);
  }
  while (ok && pending->len > 0) {
    made = MIN (pending->len / 2, STATUS_IN_FLIGHT);
    for (i = 0; i < made; ++i) {
      memset (&p[i], 0, sizeof p[i]);
      p[i].off = g_array_index (pending, uint64_t, 2 * i);
      p[i].len = g_array_index (pending, uint64_t, 2 * i + 1);
      p[i].c.chunk_size = chunk_size;
      p[i].c.chunks = g_array_new (FALSE, FALSE, sizeof (guint64));
      p[i].c.end = p[i].off;
    }
    g_array_remove_range (pending, 0, 2 * made);
    for (b.n = 0; b.n < made; ++b.n) {
      struct piece *q = &p[b.n];
      q->cookie = nbd_aio_block_status (nbd, q->len, q->off,
                                        (nbd_extent_callback) {
                                          .callback = extent_cb,
                                          .user_data = &q->c },
                                        NBD_NULL_COMPLETION, 0);
      if (q->cookie == -1) {
        set_nbd_error (error, uri, view);
        ok = false;
        break;
      }
    }
    if (ok && run_until (nbd, batch_done, &b, uri, view, cancel, error) == -1)
      ok = false;
    if (ok && b.failed) {
      g_set_error (error, R3MAP_ERROR, b.failed, "seeder %s: %s: %s",
                   uri, view, b.why);
      ok = false;
    }
    b.failed = 0;
    g_clear_pointer (&b.why, g_free);
    if (!ok)
      drain (nbd);
    for (i = 0; i < made; ++i) {
      struct piece *q = &p[i];
      if (ok && q->c.end <= q->off) {
        g_set_error (error, R3MAP_ERROR, EPROTO,
                     "seeder %s: %s: empty block status answer", uri, view);
        ok = false;
      }
      if (ok && q->c.end < q->off + q->len) {
        uint64_t rest = q->off + q->len - q->c.end;
        g_array_append_val (pending, q->c.end);
        g_array_append_val (pending, rest);
      }
      if (ok)
        g_array_append_vals (chunks, q->c.chunks->data, q->c.chunks->len);
      g_array_unref (q->c.chunks);
    }
  }
  if (ok && chunks->len > first) {
    /* Pieces may end inside a chunk, and answers come back in any
     * order: sort, and keep each chunk once. */
    uint64_t *v = &g_array_index (chunks, uint64_t, first);
    guint n = chunks->len - first, k = 0;

    qsort (v, n, sizeof *v, cmp_u64);
    for (i = 0; i < n; ++i)
      if (k == 0 || v[k - 1] != v[i])
        v[k++] = v[i];
    g_array_set_size (chunks, first + k);
  }
  return ok;
}

bool
r3map_seeder_changed (const char *uri, uint64_t since, bool sealed,
                      uint64_t chunk_size, struct r3map_seeder_info *info,
                      GArray *chunks, const atomic_bool *cancel,
                      GError **error)
{
  g_autofree char *view =
    g_strdup_printf ("r3map:%s-since:%" PRIu64,
                     sealed ? "sealed" : "changed", since);
  struct nbd_handle *nbd = open_view (uri, view, cancel, error);
  int64_t size;
  bool ret = false;

  if (nbd == NULL)
    return false;
  if (!read_info (nbd, uri, info, error))
    goto out;
  if (info->chunk_size != chunk_size) {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "seeder %s tracks chunks of %" PRIu64 " bytes, not %"
                 PRIu64 ": give both the same chunk size", uri,
                 info->chunk_size, chunk_size);
    goto out;
  }
  size = nbd_get_size (nbd);
  if (size == -1) {
    set_nbd_error (error, uri, view);
    goto out;
  }
  if (!changed_pieces (nbd, uri, view, (uint64_t) size, chunk_size, chunks,
                       cancel, error))
    goto out;
  ret = true;
 out:
  /* After a failure requests may still be in flight, whose extent
   * callbacks point into changed_pieces' frame: nbd_shutdown would run
   * them on the replies; nbd_close alone does not. */
  if (ret)
    nbd_shutdown (nbd, 0);
  nbd_close (nbd);
  return ret;
}

GByteArray *
r3map_seeder_heat (const char *uri, const atomic_bool *cancel,
                   GError **error)
{
  struct nbd_handle *nbd = open_view (uri, "r3map:heat", cancel, error);
  GByteArray *heat = NULL;
  int64_t size;

  if (nbd == NULL)
    return NULL;
  size = nbd_get_size (nbd);
  if (size == -1 || size > (int64_t) G_MAXUINT) {
    set_nbd_error (error, uri, "r3map:heat");
    goto out;
  }
  heat = g_byte_array_sized_new (size);
  g_byte_array_set_size (heat, size);
  for (int64_t off = 0; off < size; off += HEAT_PIECE) {
    size_t n = size - off < HEAT_PIECE ? size - off : HEAT_PIECE;
    int64_t cookie = nbd_aio_pread (nbd, heat->data + off, n, off,
                                    NBD_NULL_COMPLETION, 0);

    if (cookie == -1)
      set_nbd_error (error, uri, "r3map:heat");
    if (cookie == -1 ||
        run_until (nbd, command_done, &cookie, uri, "r3map:heat", cancel,
                   error) == -1) {
      g_byte_array_unref (heat);
      heat = NULL;
      break;
    }
  }
 out:
  nbd_shutdown (nbd, 0);
  nbd_close (nbd);
  return heat;
}
