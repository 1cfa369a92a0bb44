/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * What the r3map command's subcommands share.
 */

#ifndef R3MAP_TOOL_H
#define R3MAP_TOOL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pull-state.h"

extern const char *progname;
extern void usage (FILE *fp);

/* Bytes for people: 1.5 GiB, 445 MiB, 12 KiB, 100 B. */
extern void human (uint64_t n, char *buf, size_t len);

extern int cmd_seal (int argc, char *argv[]);
extern int cmd_finalize (int argc, char *argv[]);
extern int cmd_seed (int argc, char *argv[]);
extern int cmd_leech (int argc, char *argv[]);
extern int cmd_migrate (int argc, char *argv[]);

/* control.c: send COMMAND to an r3map-track control socket and read
 * its one-line answer.  False with a reason in ERROR if it could not be
 * asked or answered "error ...". */
extern bool r3map_control (const char *path, const char *command,
                           char *answer, size_t answer_len,
                           char *error, size_t error_len);

/* progress.c: the progress display of a status file, shared by
 * `status --follow', leech and migrate. */
extern bool r3map_process_alive (uint64_t pid);
extern bool r3map_pull_finished (const struct r3map_pull_counters *c);
extern void r3map_print_bar (const struct r3map_pull_counters *c, bool tty);

#endif /* R3MAP_TOOL_H */
