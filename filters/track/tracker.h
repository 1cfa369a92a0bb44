/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The state of the r3map-track filter, in one place: which chunks each
 * write touched (as a sequence number), how often each chunk was read,
 * and the seal.
 *
 * Sequence numbers.  Every completed write (pwrite, trim, zero) takes
 * the next number of one global counter, under seq_lock, and stores it
 * as the "last written" number of each chunk it touched (the maximum
 * is kept).  The number is taken after the data is below us, so:
 *
 *   a reader that reads the counter as S, and only then reads a chunk,
 *   either sees every write numbered <= S in that chunk's data, or the
 *   chunk's number is > S.
 *
 * which is what a leecher's pre-copy round needs: read S, list the
 * chunks whose number is > P (the S of its previous round), copy them;
 * next round, P = S.  Because numbers are published under the same
 * lock as the counter, a chunk's number is visible as soon as the
 * counter that includes it is.
 *
 * Memory grows with the chunks touched: numbers and heat live in pages
 * allocated on first touch.
 */

#ifndef R3MAP_TRACKER_H
#define R3MAP_TRACKER_H

#include <stdbool.h>
#include <stdint.h>

/* One of these per filter instance (nbdkit loads a filter once). */
extern int tracker_init (unsigned chunk_shift);
extern void tracker_free (void);

/* Size the tables for a disk of SIZE bytes; called at every open, only
 * the first call allocates.  -1 with errno = ENOMEM. */
extern int tracker_set_size (uint64_t size);

/* Writes.  Every write brackets its call to the layer below with
 * begin/end.  begin returns -1 with errno = EROFS once the export is
 * sealed; end (called whatever the outcome) records the chunks of
 * [OFFSET, OFFSET+COUNT) under a new sequence number if OK is true. */
extern int tracker_write_begin (void);
extern void tracker_write_end (uint64_t offset, uint64_t count, bool ok);

/* Reads from clients of the disk: count them in each chunk's heat. */
extern void tracker_read (uint64_t offset, uint64_t count);

/* The current sequence number (every write numbered <= it is in the
 * chunk numbers), whether the export is sealed and, if so, the number
 * at the seal. */
struct tracker_status {
  uint64_t seq;
  bool sealed;
  uint64_t sealed_seq;
  uint64_t writes;              /* writes tracked since start */
  uint64_t refused;             /* writes refused because sealed */
};
extern void tracker_status (struct tracker_status *st);

/* The first chunk in [FROM, END) whose last write number is > SINCE,
 * or END if there is none.  Pages never written, or written only up to
 * SINCE, are skipped whole: the cost is that of the pages written. */
extern uint64_t tracker_next_changed (uint64_t from, uint64_t end,
                                      uint64_t since);

/* The chunk's read heat, 0..255 (saturating count of reads). */
extern unsigned tracker_chunk_heat (uint64_t chunk);

/* Seal: wait for the writes in flight, refuse new ones.  Returns the
 * final sequence number.  Sealing a sealed export returns the same
 * number again. */
extern uint64_t tracker_seal (void);

/* Unseal (a migration was cancelled): writes are accepted again. */
extern void tracker_unseal (void);

/* Wait until sealed or TIMEOUT_MS passed.  Returns true if sealed. */
extern bool tracker_wait_sealed (int64_t timeout_ms);

/* The identity of this tracking run: random, fixed at start.  A leecher
 * that sees it change knows the numbers it holds mean nothing. */
extern const char *tracker_epoch (void);

#endif /* R3MAP_TRACKER_H */
