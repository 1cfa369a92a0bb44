/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * A client of r3map-track's control socket (track-control=): seal,
 * unseal and status, one line each way.  See
 * nbdkit-r3map-track-filter(1), "Control socket".
 */

#ifndef R3MAP_HOOK_TRACK_CLIENT_H
#define R3MAP_HOOK_TRACK_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

struct track_status {
  char epoch[17];
  uint64_t seq, final, writes, refused;
  bool sealed;
};

/* Send COMMAND, put the answer line (without newline) in ANSWER.  Waits
 * at most TIMEOUT_MS for the whole exchange. */
extern bool track_command (const char *ctl, const char *command,
                           unsigned timeout_ms, char *answer, size_t len,
                           GError **error);

extern bool track_status (const char *ctl, struct track_status *st,
                          GError **error);

/* Seal, answering the write number of the seal. */
extern bool track_seal (const char *ctl, uint64_t *final, GError **error);
extern bool track_unseal (const char *ctl, GError **error);

#endif /* R3MAP_HOOK_TRACK_CLIENT_H */
