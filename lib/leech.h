/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The leecher: the destination side of a migration, on top of the pull
 * engine (pull.h) whose remote is a seeder (an nbdkit with the
 * r3map-track filter, read through seeder.h).
 *
 *   start     note the seeder's write number S before anything is
 *             fetched; the engine pulls the whole disk;
 *   pre-copy  every interval (after the engine's first pass, as soon
 *             as what the round before made missing is local again),
 *             ask for the chunks changed since S, make those local
 *             ones missing again, S = the new number;
 *             converged when `rounds' rounds in a row make at most
 *             `threshold' chunks missing again; or, after the engine's
 *             first pass, when a round makes no fewer missing than the
 *             one before (the writes outpace the rounds); or after
 *             `max_rounds'.  Without `precopy' the engine holds its
 *             background pull until finalize;
 *   finalize  once converged, wait on the seeder's sealed view: when the
 *             source is sealed, its final changed set is made missing
 *             and the clients (which waited until now) are released;
 *   post-copy the engine fetches misses on demand and pulls the rest,
 *             hot chunks first (the seeder's read heat).
 *
 * Why this is exact: the seeder numbers a write once its data is down,
 * so whatever is fetched after S was noted holds every write numbered
 * S or less, and anything written later is in a later changed set.
 *
 * Progress (epoch, S, finalized) is kept in the engine's state file,
 * after the chunk states it vouches for, so a leecher restarted with
 * its state resumes its rounds without fetching again what is good.
 * A seeder restarted meanwhile has a new epoch: then nothing local can
 * be trusted and the copy starts again.
 */

#ifndef R3MAP_LEECH_H
#define R3MAP_LEECH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include "pull.h"

struct r3map_leech_params {
  const char *source;           /* the seeder's disk, an NBD URI */
  uint64_t chunk_size;          /* the engine's, = the seeder's */
  uint64_t interval_ms;         /* between pre-copy rounds, at most */
  uint64_t threshold;           /* a "small" round: at most this many */
  unsigned converge_rounds;     /* small rounds in a row to converge */
  unsigned max_rounds;          /* converge after this many anyway */
  bool precopy;                 /* false: the background pull waits for
                                   finalize (pure post-copy) */
  uint64_t source_timeout_ms;   /* source unreachable this long before
                                   finalize: clients get errors */
};

struct r3map_leech;

/* Before r3map_pull_start: note where the seeder is (or resume from the
 * state file).  False with ERROR if the seeder cannot be asked. */
extern struct r3map_leech *
r3map_leech_new (const struct r3map_leech_params *params,
                 struct r3map_pull *pull, GError **error);

/* Start the rounds (after r3map_pull_start). */
extern bool r3map_leech_start (struct r3map_leech *leech, GError **error);

/* Stop the rounds and free.  The engine is the caller's. */
extern void r3map_leech_free (struct r3map_leech *leech);

/* For the data path: wait until finalized (0), or fail with EIO while
 * the source is lost before finalize (-1, with a reason logged by the
 * caller from r3map_leech_why), ESHUTDOWN once stopping, or ETIMEDOUT
 * after TIMEOUT_MS (negative: no limit). */
extern int r3map_leech_wait (struct r3map_leech *leech, int64_t timeout_ms);

extern bool r3map_leech_finalized (struct r3map_leech *leech);

/* Why r3map_leech_wait failed, into BUF. */
extern void r3map_leech_why (struct r3map_leech *leech, char *buf,
                             size_t len);

#endif /* R3MAP_LEECH_H */
