/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0. */

#ifndef R3MAP_LIBVIRT_H
#define R3MAP_LIBVIRT_H

#include <stdio.h>

extern void usage (FILE *fp);
extern int cmd_attach (int argc, char *argv[]);   /* attach.c */
extern int cmd_watch (int argc, char *argv[]);    /* watch.c */

#endif /* R3MAP_LIBVIRT_H */
