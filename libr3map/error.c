/* libr3map: an NBD export as memory.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The last error of each thread, as libnbd keeps it: a message that
 * names what failed and why, and an errno.  Thread-local storage of a
 * fixed size, so that reporting an error never allocates.
 */

#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Thread_local char last_error[1024];
static _Thread_local int last_errno;

const char *
r3map_get_error (void)
{
  return last_error[0] ? last_error : NULL;
}

int
r3map_get_errno (void)
{
  return last_errno;
}

/* Record an error and set errno, so that callers can "return -1". */
void
r3map_set_error (int errnum, const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  vsnprintf (last_error, sizeof last_error, fs, args);
  va_end (args);
  last_errno = errnum;
  errno = errnum;
}

/* libnbd's error of this thread, after CONTEXT.  A handle that died
 * without an errno (a closed connection) reports EIO. */
void
r3map_set_error_nbd (const char *context)
{
  const char *msg = nbd_get_error ();
  int e = nbd_get_errno ();

  r3map_set_error (e > 0 ? e : EIO, "%s: %s", context,
                   msg ? msg : "the NBD connection failed");
}

/* LIBR3MAP_DEBUG=1: one line per notable event, on stderr. */
void
r3map_debug (const struct r3map_mapping *m, const char *fs, ...)
{
  va_list args;
  char line[512];

  if (m && !m->debug)
    return;
  va_start (args, fs);
  vsnprintf (line, sizeof line, fs, args);
  va_end (args);
  fprintf (stderr, "libr3map: debug: %s\n", line);
}
