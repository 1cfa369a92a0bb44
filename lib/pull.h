/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The pull engine: a disk made of a local store and a remote store.
 *
 * Every chunk of the disk is in one of these states (a chunk map):
 *
 *   missing   only the remote holds it;
 *   fetching  one thread is reading it from the remote; others wait,
 *             but a client writing the whole chunk takes it over;
 *   landing   that thread is writing what it read to the local store;
 *   overwriting  a client is writing the whole chunk, and no fetch of
 *             it is in flight;
 *   taken     a client is writing the whole chunk while a fetch of it
 *             is in flight: the fetch drops what it read of it;
 *   overwritten  that write is done, the fetch is still in flight: it
 *             makes the chunk local when it ends;
 *   local     the local store holds it;
 *   dirty     local, and written since it was last pushed;
 *   pushing   dirty, and one thread is copying it to the remote;
 *   redirtied pushing, and written again since the copy began.
 *
 * A fetch in flight stays the owner of the chunks it took over to its
 * end: none of them can become missing and be fetched again (by a
 * fetch that read newer data) under it.
 *
 * Reads are served from the local store once every chunk they touch is
 * local; a missing chunk is fetched on demand, once, however many
 * requests wait for it, and its neighbours go to the front of the pull
 * queue.  Background pull workers fetch the remaining chunks in
 * priority order.  Writes land in the local store; a write that covers
 * a whole missing chunk makes it local without fetching it, and does
 * not wait for a fetch of it that is still reading the remote.  With
 * push on, dirty chunks are copied back to the remote by push workers,
 * and a flush returns only when every write acknowledged before it is
 * durable in the remote.
 *
 * The engine knows nothing of nbdkit: the filter and the unit tests
 * give it two kinds of store (see store.h).  The remote is reached
 * through a small pool of stores, opened on demand by the caller's
 * open function, so that a connection that failed is replaced by a new
 * one and a remote that went away and came back is used again.
 */

#ifndef R3MAP_PULL_H
#define R3MAP_PULL_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "pull-state.h"
#include "store.h"

/* Chunk states.  Local ones are LOCAL and above. */
#define R3MAP_PULL_MISSING  0
#define R3MAP_PULL_FETCHING 1
#define R3MAP_PULL_LANDING  2
#define R3MAP_PULL_OVERWRITING 3
#define R3MAP_PULL_TAKEN    4
#define R3MAP_PULL_OVERWRITTEN 5
#define R3MAP_PULL_LOCAL    6
#define R3MAP_PULL_DIRTY    7
#define R3MAP_PULL_PUSHING  8
#define R3MAP_PULL_REDIRTIED 9

struct r3map_pull_params {
  uint64_t chunk_size;          /* power of 2 */
  unsigned pull_workers;        /* 0: on-demand fetches only */
  int pull_nice;                /* the pull workers' nice value, 0-19 */
  uint64_t pull_delay_ms;       /* the pull workers start this late */
  unsigned push_workers;        /* used only with push */
  bool push;
  uint64_t push_interval_ms;
  unsigned retries;             /* extra attempts of a failed fetch/push */
  uint64_t retry_delay_ms;      /* first delay; doubled each time */
  uint64_t backoff_max_ms;      /* longest pause of the background pull */
  uint64_t checkpoint_ms;       /* how often new local chunks are recorded */
  const char *priority;         /* ranges, see r3map_pull_parse_ranges */
  const char *hints_file;       /* ranges, one or more a line */
  const char *state_file;       /* NULL: nothing is persisted */
  const char *status_file;      /* NULL: nothing is published */
  const char *identity;         /* names the remote in the state file */
};

/* How the engine reaches the remote.  OPEN returns a new store, or
 * NULL with errno set; the engine closes it with r3map_store_close
 * when it is done with it or when a request on it failed.  MULTI_CONN
 * says that a flush through one store makes durable the writes made
 * through all of them. */
struct r3map_pull_remote {
  struct r3map_store *(*open) (void *opaque);
  void *opaque;
  bool multi_conn;
};

struct r3map_pull;

/* A disk of SIZE bytes (the remote's size).  LOCAL must hold at least
 * SIZE bytes; it stays the caller's.  FIRST, if not NULL, is an
 * already opened remote store that the engine takes over.  Nothing
 * runs until r3map_pull_start.  Bad parameters and state files fail
 * with a message naming the parameter. */
extern struct r3map_pull *
r3map_pull_new (const struct r3map_pull_params *params, uint64_t size,
                struct r3map_store *local,
                const struct r3map_pull_remote *remote,
                struct r3map_store *first, GError **error);

/* True if the state file was created by r3map_pull_new (or there is
 * none): no chunk is local, so the local store's contents are not
 * trusted. */
extern bool r3map_pull_fresh (struct r3map_pull *pull);

/* Start the background threads. */
extern bool r3map_pull_start (struct r3map_pull *pull, GError **error);

/* Stop the threads, push what is dirty (if push is on), record the
 * state and free everything.  The local store is not closed. */
extern void r3map_pull_free (struct r3map_pull *pull);

extern uint64_t r3map_pull_size (struct r3map_pull *pull);

/* The data path.  0, or -1 with errno (EIO if the remote failed after
 * the retries). */
extern int r3map_pull_pread (struct r3map_pull *pull, void *buf,
                             uint32_t count, uint64_t offset);
extern int r3map_pull_pwrite (struct r3map_pull *pull, const void *buf,
                              uint32_t count, uint64_t offset);
extern int r3map_pull_flush (struct r3map_pull *pull);
/* Make the chunks of a range local (NBD_CMD_CACHE). */
extern int r3map_pull_prefetch (struct r3map_pull *pull,
                                uint32_t count, uint64_t offset);

/* Chunk state, and the live counters. */
extern unsigned r3map_pull_chunk_state (struct r3map_pull *pull,
                                        uint64_t chunk);
extern void r3map_pull_counters (struct r3map_pull *pull,
                                 struct r3map_pull_counters *c);

/* Wait until every chunk is local or TIMEOUT_MS passed.  True if
 * complete. */
extern bool r3map_pull_wait_complete (struct r3map_pull *pull,
                                      int64_t timeout_ms);

/* For a leecher (leech.h), whose remote keeps changing until it is
 * sealed.
 *
 * EXPECT_CHANGES keeps the pull workers alive when every chunk is
 * local, since chunks may become missing again. */
extern void r3map_pull_expect_changes (struct r3map_pull *pull, bool expect);

/* The chunks changed at the remote: each that is local becomes missing
 * (and is cleared in the state file), and each being fetched becomes
 * missing when its fetch ends, so that it is fetched again.  Returns at
 * once, without waiting for fetches.  Dirty chunks are left alone.
 * Returns how many were (or will be) made missing: the chunks to copy
 * again. */
extern uint64_t r3map_pull_invalidate (struct r3map_pull *pull,
                                       const uint64_t *chunks, size_t n);

/* HOLD: the background pull fetches nothing until called again with
 * false, and then for pull_delay_ms more (on-demand fetches still
 * happen). */
extern void r3map_pull_hold (struct r3map_pull *pull, bool hold);

/* True once the background pull's walk through the disk in pull order
 * reached its end (chunks made missing since are fetched after it). */
extern bool r3map_pull_first_pass_done (struct r3map_pull *pull);

/* Pull these missing chunks first, in this order (at most the first
 * few thousand). */
extern void r3map_pull_prioritize (struct r3map_pull *pull,
                                   const uint64_t *chunks, size_t n);

/* The leecher's record in the state file (none without state=):
 * see r3map_pull_state_get_leech. */
extern bool r3map_pull_leech_get (struct r3map_pull *pull,
                                  struct r3map_leech_record *r);
extern int r3map_pull_leech_set (struct r3map_pull *pull,
                                 const struct r3map_leech_record *r);

/* The leecher's phase (0: the engine's own) and leech_* counters, for
 * the status file; the other fields of C are ignored. */
extern void r3map_pull_leech_publish (struct r3map_pull *pull,
                                      const struct r3map_pull_counters *c);

/* Priority ranges: a comma-separated list of
 *   A-B   bytes A to B (B excluded)       0-64M
 *   A+N   N bytes from A                  1G+256M
 *   A-    from A to the end               10G-
 *   -N    the last N bytes                -16M
 *   A     the chunk holding byte A        512K
 * with sizes as r3map_parse_size takes them.  Ranges are clipped to
 * the disk.  The ranges are appended to RANGES as pairs of uint64_t
 * (start, end) in bytes.  KEY names the parameter in messages. */
extern bool r3map_pull_parse_ranges (const char *key, const char *value,
                                     uint64_t size, GArray *ranges,
                                     GError **error);

#endif /* R3MAP_PULL_H */
