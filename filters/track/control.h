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
 * kind of file), then serve it on a thread.  -1 with the error logged. */
extern int control_start (const char *path);

/* Stop serving and remove the socket. */
extern void control_stop (void);

#endif /* R3MAP_TRACK_CONTROL_H */
