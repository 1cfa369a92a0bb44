/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * A seeder's views, from the leecher's side.
 *
 * A seeder is an nbdkit with the r3map-track filter.  Besides the disk
 * it answers reserved export names ("views", see
 * nbdkit-r3map-track-filter(1)) whose block status says which chunks
 * were written after a write number, and whose export description
 * carries the tracking epoch, the current number and the seal.  These
 * functions read them with libnbd: plain NBD, the same URI (and so the
 * same TLS) as the disk, only another export name.
 */

#ifndef R3MAP_SEEDER_H
#define R3MAP_SEEDER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

struct r3map_seeder_info {
  char epoch[17];               /* 16 hex digits */
  uint64_t seq;                 /* write number when the view opened */
  bool sealed;
  uint64_t final;               /* if sealed: the last write's number */
  uint64_t chunk_size;
};

/* Parse a view's export description.  False (with ERROR) if it is not
 * one. */
extern bool r3map_seeder_parse_description (const char *desc,
                                            struct r3map_seeder_info *info,
                                            GError **error);

/* The calls below take CANCEL, NULL or a flag another thread may set:
 * then the exchange in progress ends within 100 ms with ECANCELED, and
 * so does any later one.  A leecher's thread waits on the sealed view
 * for up to the seeder's track-seal-wait, and on a seeder that does
 * not answer for up to the timeout below: its owner's shutdown should
 * not. */

/* Just the description of "r3map:changed-since:0": is URI a seeder,
 * and where is it.  False with ERROR (code EPROTO if the server answers
 * but is not a seeder). */
extern bool r3map_seeder_info (const char *uri,
                               struct r3map_seeder_info *info,
                               const atomic_bool *cancel, GError **error);

/* Open "r3map:changed-since:SINCE", or "r3map:sealed-since:SINCE" if
 * SEALED (which waits on the seeder for the seal, up to its
 * track-seal-wait), on the seeder whose disk is at URI.  Fills INFO
 * and appends to CHUNKS (a GArray of guint64) the index of every chunk
 * of CHUNK_SIZE bytes written after SINCE.  CHUNK_SIZE must equal the
 * seeder's.  False with ERROR if the seeder cannot be reached or is
 * not an r3map-track seeder. */
extern bool r3map_seeder_changed (const char *uri, uint64_t since,
                                  bool sealed, uint64_t chunk_size,
                                  struct r3map_seeder_info *info,
                                  GArray *chunks, const atomic_bool *cancel,
                                  GError **error);

/* Every exchange with a seeder (connect and open a view, one block
 * status request, one read) fails with ETIMEDOUT if it takes longer
 * than MS milliseconds (default 30000).  It must exceed the seeder's
 * track-seal-wait, which the sealed view may wait. */
extern void r3map_seeder_set_timeout (uint64_t ms);

/* The seeder's read heat, one byte per chunk, into a new array. */
extern GByteArray *r3map_seeder_heat (const char *uri,
                                      const atomic_bool *cancel,
                                      GError **error);

#endif /* R3MAP_SEEDER_H */
