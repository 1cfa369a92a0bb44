/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * What the r3map command's subcommands share.
 */

#ifndef R3MAP_TOOL_H
#define R3MAP_TOOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern const char *progname;
extern void usage (FILE *fp);

/* Bytes for people: 1.5 GiB, 445 MiB, 12 KiB, 100 B. */
extern void human (uint64_t n, char *buf, size_t len);

extern int cmd_seal (int argc, char *argv[]);
extern int cmd_finalize (int argc, char *argv[]);
extern int cmd_mount (int argc, char *argv[]);

#endif /* R3MAP_TOOL_H */
