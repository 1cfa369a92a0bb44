/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The two files of the pull engine that outlive a request.
 *
 * The state file (state=FILE) records which chunks the local store
 * holds and which of them were written but not yet pushed, so that a
 * restart neither refetches a chunk nor forgets a write.  It is a
 * header naming the disk (size, chunk size, identity) followed by two
 * bitmaps, and it is mapped shared: setting a bit is one atomic OR in
 * the page cache, which survives the process being killed; msync makes
 * it survive the machine.  A file made for another disk is refused,
 * never reinterpreted.
 *
 * The status file (status=FILE) is one page of counters that the
 * engine rewrites a few times a second and that any number of other
 * processes read without locks: a sequence counter, odd while the page
 * is being rewritten, tells a reader to read again.
 */

#ifndef R3MAP_PULL_STATE_H
#define R3MAP_PULL_STATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

/* ---- State file ----------------------------------------------------- */

#define R3MAP_STATE_MAGIC "r3map-pull-state"   /* 16 bytes, no NUL */
#define R3MAP_STATE_VERSION 1
#define R3MAP_STATE_HEADER 4096
#define R3MAP_STATE_IDENTITY_MAX 1024

struct r3map_pull_state;

/* Open the state file PATH for a disk of SIZE bytes in chunks of
 * CHUNK_SIZE bytes whose remote is named IDENTITY, or create it (with
 * no chunk local) if it does not exist.  *CREATED tells which.  A file
 * of another disk, or one that is not a state file, fails with a
 * message starting "state=PATH: ". */
extern struct r3map_pull_state *
r3map_pull_state_open (const char *path, uint64_t size, uint64_t chunk_size,
                       const char *identity, bool *created, GError **error);
extern void r3map_pull_state_close (struct r3map_pull_state *state);

/* Check, before starting, that the state file PATH (if it exists) is
 * one of this disk; SIZE 0 if the size is not known yet. */
extern bool r3map_pull_state_check (const char *path, uint64_t size,
                                    uint64_t chunk_size, const char *identity,
                                    GError **error);

extern bool r3map_pull_state_local (struct r3map_pull_state *state,
                                    uint64_t chunk);
extern bool r3map_pull_state_dirty (struct r3map_pull_state *state,
                                    uint64_t chunk);
extern void r3map_pull_state_set_local (struct r3map_pull_state *state,
                                        uint64_t chunk);
extern void r3map_pull_state_set_dirty (struct r3map_pull_state *state,
                                        uint64_t chunk);
extern void r3map_pull_state_clear_dirty (struct r3map_pull_state *state,
                                          uint64_t chunk);

extern void r3map_pull_state_clear_local (struct r3map_pull_state *state,
                                          uint64_t chunk);

/* A leecher's progress (see leech.h), kept in the state file's header
 * so that a restart resumes its pre-copy rounds where they were: the
 * seeder's tracking epoch, the write number up to which the local
 * chunks are known good, and whether finalize happened. */
struct r3map_leech_record {
  char epoch[17];
  uint64_t seq;
  bool finalized;
};
/* False if the file holds no record (a fresh file, or not a leecher). */
extern bool r3map_pull_state_get_leech (struct r3map_pull_state *state,
                                        struct r3map_leech_record *r);
/* Write the record and msync the whole file (bitmaps first).  -1 with
 * errno on failure. */
extern int r3map_pull_state_set_leech (struct r3map_pull_state *state,
                                       const struct r3map_leech_record *r);

/* Chunks recorded local. */
extern uint64_t r3map_pull_state_count_local (struct r3map_pull_state *state);

/* Write the bitmaps to disk (msync).  -1 with errno on failure. */
extern int r3map_pull_state_sync (struct r3map_pull_state *state);

/* What a state file says, read without opening it for a disk (for
 * `r3map status'). */
struct r3map_pull_state_info {
  uint64_t size, chunk_size, nchunks;
  uint64_t local, dirty;
  char identity[R3MAP_STATE_IDENTITY_MAX];
};
extern bool r3map_pull_state_inspect (const char *path,
                                      struct r3map_pull_state_info *info,
                                      GError **error);

/* ---- Status file ---------------------------------------------------- */

#define R3MAP_STATUS_MAGIC "r3map-status-v1"      /* 16 bytes with NUL */

enum r3map_pull_phase {
  R3MAP_PHASE_STARTING = 0,
  R3MAP_PHASE_PULLING = 1,     /* chunks are missing, the remote answers */
  R3MAP_PHASE_BACKOFF = 2,     /* chunks are missing, the remote fails */
  R3MAP_PHASE_COMPLETE = 3,    /* every chunk is local */
  R3MAP_PHASE_IDLE = 4,        /* chunks are missing, no pull workers */
  R3MAP_PHASE_STOPPED = 5,     /* the engine was shut down cleanly */
  /* A leecher, before finalize (leech.h): clients wait. */
  R3MAP_PHASE_PRECOPY = 6,     /* pre-copy rounds while the source runs */
  R3MAP_PHASE_SEAL_WAIT = 7,   /* converged: waiting for the seal */
  R3MAP_PHASE_SOURCE_LOST = 8, /* the source is gone before finalize */
};
extern const char *r3map_pull_phase_name (unsigned phase);

/* The counters, as published.  Rates are bytes per second averaged
 * over about the last second. */
struct r3map_pull_counters {
  uint64_t pid;
  uint64_t phase;
  uint64_t size, chunk_size, chunks_total;
  uint64_t chunks_local, chunks_dirty;
  uint64_t bytes_pulled, bytes_pushed;
  uint64_t pull_rate, push_rate;
  uint64_t fetches_on_demand, fetch_errors, push_errors;
  uint64_t started_ms, updated_ms;      /* CLOCK_REALTIME */
  /* A leecher's (0 otherwise). */
  uint64_t leech_rounds;                /* pre-copy rounds done */
  uint64_t leech_seq;                   /* source's write number reached */
  uint64_t leech_finalized_ms;          /* CLOCK_REALTIME, 0: not yet */
  uint64_t leech_final_chunks;          /* changed set at the seal */
  uint64_t leech_finalize_us;           /* sealed view answered -> release */
  /* Since when every chunk is local and none is expected to change
   * (a leecher: after finalize): the source is not needed any more.
   * CLOCK_REALTIME, 0: not so. */
  uint64_t complete_ms;
};
#define R3MAP_STATUS_NFIELDS \
  (sizeof (struct r3map_pull_counters) / sizeof (uint64_t))

/* The mapped page.  Every field is read and written atomically. */
struct r3map_status_page {
  char magic[16];
  _Atomic uint64_t seq;
  _Atomic uint64_t field[R3MAP_STATUS_NFIELDS];
};

struct r3map_pull_status;

/* Create (or replace) the status file PATH. */
extern struct r3map_pull_status *r3map_pull_status_create (const char *path,
                                                           GError **error);
extern void r3map_pull_status_publish (struct r3map_pull_status *status,
                                       const struct r3map_pull_counters *c);
extern void r3map_pull_status_close (struct r3map_pull_status *status);

/* Read a consistent copy of the counters in the status file PATH. */
extern bool r3map_pull_status_read (const char *path,
                                    struct r3map_pull_counters *c,
                                    GError **error);

#endif /* R3MAP_PULL_STATE_H */
