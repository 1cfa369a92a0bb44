/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The per-chunk state map.
 *
 * Every data-moving component of r3map keeps one small state per chunk
 * (missing, local, fetching, dirty ... : the meaning of the values is
 * the user's).  The map is built for the data path:
 *
 *  - reading a state is one atomic load, with no lock;
 *  - changing a state is one atomic store or compare-and-swap;
 *  - a thread can wait, with a deadline, for a chunk to leave a state
 *    (a reader waiting for a chunk being fetched by someone else);
 *  - per-state counters are kept exactly, so "how many chunks are local"
 *    costs nothing to answer;
 *  - memory grows with what is used, not with the disk: states live in
 *    pages of 65536 chunks, allocated on the first change away from
 *    state 0, so a map of a 16 TiB disk at 64 KiB chunks (2^28 chunks)
 *    costs 32 KiB of page pointers until it is touched, and 256 MiB
 *    only if every page is touched.
 */

#ifndef R3MAP_CHUNKMAP_H
#define R3MAP_CHUNKMAP_H

#include <stdbool.h>
#include <stdint.h>

/* States are small integers; 0 is the state of every chunk at start. */
#define R3MAP_CHUNK_STATES 16

struct r3map_chunkmap;

/* Create a map of NCHUNKS chunks, all in state 0.  Returns NULL with
 * errno set (ENOMEM, or EINVAL if NCHUNKS is 0 or absurdly large). */
extern struct r3map_chunkmap *r3map_chunkmap_new (uint64_t nchunks);
extern void r3map_chunkmap_free (struct r3map_chunkmap *map);

extern uint64_t r3map_chunkmap_size (const struct r3map_chunkmap *map);

/* Lock-free read of one chunk's state.  CHUNK must be < size. */
extern unsigned r3map_chunkmap_get (const struct r3map_chunkmap *map,
                                    uint64_t chunk);

/* Set CHUNK to STATE and wake its waiters.  Returns the previous state,
 * or -1 with errno = ENOMEM if the chunk's page could not be allocated
 * (then nothing changed). */
extern int r3map_chunkmap_set (struct r3map_chunkmap *map,
                               uint64_t chunk, unsigned state);

/* Atomically move CHUNK from state FROM to state TO.  Returns 1 if it
 * did, 0 if the chunk was not in state FROM (nothing changed), -1 with
 * errno = ENOMEM.  This is how exactly one of many threads claims a
 * chunk (for example missing -> fetching). */
extern int r3map_chunkmap_cas (struct r3map_chunkmap *map, uint64_t chunk,
                               unsigned from, unsigned to);

/* Wait until CHUNK is no longer in STATE, or until TIMEOUT_MS
 * milliseconds have passed (a negative timeout waits forever).
 * Returns the new state, or -1 with errno = ETIMEDOUT. */
extern int r3map_chunkmap_wait_while (struct r3map_chunkmap *map,
                                      uint64_t chunk, unsigned state,
                                      int64_t timeout_ms);

/* Exact number of chunks in STATE. */
extern uint64_t r3map_chunkmap_count (const struct r3map_chunkmap *map,
                                      unsigned state);

/* The first chunk >= FROM that is in STATE, or the map's size if there
 * is none.  Untouched pages are skipped without being read, so looking
 * for a non-zero state in a sparse map is fast. */
extern uint64_t r3map_chunkmap_find (const struct r3map_chunkmap *map,
                                     uint64_t from, unsigned state);

/* Bytes of state pages allocated so far (not counting the page table). */
extern uint64_t r3map_chunkmap_allocated (const struct r3map_chunkmap *map);

#endif /* R3MAP_CHUNKMAP_H */
