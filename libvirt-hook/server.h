/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The nbdkit processes the hook runs for a domain's disk, and their
 * files.  Per disk (TARGET) of a domain (UUID), under the host's
 * run-dir:
 *
 *   UUID/TARGET.pid      the disk's nbdkit (the one QEMU talks to)
 *   UUID/TARGET.ctl      its r3map-track control socket
 *   UUID/TARGET.log      its messages
 *   UUID/TARGET.status   its r3map-pull status, when it is a leecher
 *   UUID/TARGET.gw.pid   the gateway: other hosts' leechers reach the
 *   UUID/TARGET.gw.log   disk through it, over TCP and TLS
 *   UUID/TARGET.seed     "HOST PORT EPOCH": where the gateway is reached
 *                        (r3map-libvirt watch publishes it in the XML)
 *   UUID/TARGET.retire.pid  the process that stops a seeder once the
 *                        destination of its migration let go
 *   UUID/TARGET.created  the hook made the local copy's directory
 *
 * and under state-dir, UUID-TARGET.state, a leecher's state file, kept
 * until its copy is whole.
 *
 * Every process is started detached (own session, stdin from
 * /dev/null, output to its log): libvirt waits for the hook's own
 * stdout and stderr to close, so nothing may inherit them.
 */

#ifndef R3MAP_HOOK_SERVER_H
#define R3MAP_HOOK_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <glib.h>

#include "hook-config.h"
#include "meta.h"

/* The path of one of a disk's files: SUFFIX is ".pid", ".ctl", ... */
extern char *server_path (const struct hook_config *c, const char *uuid,
                          const char *target, const char *suffix);
extern char *server_state_path (const struct hook_config *c,
                                const char *uuid, const char *target);

/* Start ARGV (an nbdkit, which forks into the background) detached,
 * its early output to LOG; wait until PIDFILE holds a live
 * pid and the Unix socket SOCKET (or, if NULL, TCP HOST:PORT) accepts
 * connections.  On failure the process is stopped and ERROR carries
 * the last lines of its log. */
extern bool server_start (const struct hook_config *c, char **argv,
                          const char *log, const char *pidfile,
                          const char *socket, const char *host,
                          unsigned port, GError **error);

/* The pid in PIDFILE if that process is alive and is nbdkit, else 0. */
extern pid_t server_running (const char *pidfile);

/* SIGTERM, then SIGKILL after a while; removes PIDFILE. */
extern void server_stop (const char *pidfile);

/* Flush the export on Unix socket SOCKET, waiting at most TIMEOUT_MS. */
extern bool server_flush (const char *socket, unsigned timeout_ms,
                          GError **error);

/* A TCP port of the configured range that HOST can bind now. */
extern bool server_free_port (const struct hook_config *c, unsigned *port,
                              GError **error);

/* Established TCP connections whose local port is PORT. */
extern unsigned server_tcp_clients (unsigned port);

/* "HOST PORT EPOCH" files. */
extern bool server_write_endpoint (const char *path, const char *host,
                                   unsigned port, const char *epoch,
                                   GError **error);
extern bool server_read_endpoint (const char *path, char **host,
                                  unsigned *port, char epoch[17]);

#endif /* R3MAP_HOOK_SERVER_H */
