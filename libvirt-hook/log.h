/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Where the hook and the watcher say what they do: one line per event,
 * to a log file (the host's log-file=) and to syslog.  Errors go to
 * stderr too: libvirt puts a failed hook's stderr in the error it
 * reports for the operation, so that is what the user sees.
 */

#ifndef R3MAP_HOOK_LOG_H
#define R3MAP_HOOK_LOG_H

#include <glib.h>

/* PROGRAM names the lines; FILE may be NULL or "" (no file). */
extern void hlog_open (const char *program, const char *file);
extern void hlog_close (void);

extern void hlog_info (const char *fmt, ...) G_GNUC_PRINTF (1, 2);
/* Also on stderr. */
extern void hlog_error (const char *fmt, ...) G_GNUC_PRINTF (1, 2);

#endif /* R3MAP_HOOK_LOG_H */
