/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The r3map-track filter's local control socket: a Unix socket, mode
 * 0600, on which the host (r3map seal, the libvirt hook) seals and
 * unseals the export.  It is the only way to seal: nothing a remote NBD
 * client sends can.  See nbdkit-r3map-track-filter(1), CONTROL SOCKET.
 */

#ifndef R3MAP_TRACK_CONTROL_H
#define R3MAP_TRACK_CONTROL_H

/* Bind and listen on PATH (replacing a stale socket, never another
 * kind of file).  Called before nbdkit forks, so that a bad path is an
 * error at start with nbdkit's exit status.  -1 with the error logged. */
extern int control_listen (const char *path);

/* Serve it on a thread (after the fork: threads do not survive it). */
extern int control_start (void);

/* Stop serving and remove the socket. */
extern void control_stop (void);

#endif /* R3MAP_TRACK_CONTROL_H */
