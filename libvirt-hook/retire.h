/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The end of a seeder whose domain migrated away.  When libvirt calls
 * the hook for "release end" on the source, QEMU is gone but the
 * destination may still be pulling the disk (post-copy): the seeder
 * must live until the destination's leecher lets go of it, which it
 * does once it holds every chunk (nbdkit-r3map-pull-filter(1)).  The
 * hook cannot wait that long (libvirtd waits for it), so it leaves a
 * detached process that does.
 *
 * "Let go" is seen from here as no TCP connection to the disk's
 * gateway for retire-grace: a leecher keeps its connections from its
 * start to its last chunk, and re-opens one within its retry backoff
 * (at most 5 s) if it fails.  Then the gateway and the seeder stop,
 * and the source's copy of an r3map-dir disk, now older than the
 * destination's, is renamed aside (or removed, with source-copy=
 * 'remove') so that it is never mistaken for the disk.  If the leecher
 * is still connected after retire-timeout, the seeder stops and the
 * copy is left where it is.
 */

#ifndef R3MAP_HOOK_RETIRE_H
#define R3MAP_HOOK_RETIRE_H

#include <stdbool.h>

#include <glib.h>

#include "hook-config.h"
#include "meta.h"

/* DISKS: the struct r3map_disk * of DOM to retire. */
extern bool retire_start (const struct hook_config *c,
                          struct r3map_domain *dom, GPtrArray *disks,
                          GError **error);

/* Is a retiring process running for this disk? */
extern bool retire_running (const struct hook_config *c, const char *uuid,
                            const char *target);

/* rm -r, without following symbolic links. */
extern void retire_remove_tree (const char *dir);

#endif /* R3MAP_HOOK_RETIRE_H */
