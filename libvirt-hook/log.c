/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "log.h"

static const char *prog = "r3map";
static int log_fd = -1;

void
hlog_open (const char *program, const char *file)
{
  prog = program;
  openlog (program, LOG_PID, LOG_DAEMON);
  if (file && *file) {
    g_autofree char *dir = g_path_get_dirname (file);
    g_mkdir_with_parents (dir, 0755);
    /* O_APPEND: hooks of several domains run at once. */
    log_fd = open (file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (log_fd == -1)
      fprintf (stderr, "%s: log-file=%s: %s (logging to syslog only)\n",
               prog, file, g_strerror (errno));
  }
}

void
hlog_close (void)
{
  if (log_fd >= 0)
    close (log_fd);
  log_fd = -1;
  closelog ();
}

static void emit (int priority, const char *fmt, va_list ap)
  G_GNUC_PRINTF (2, 0);
static void
emit (int priority, const char *fmt, va_list ap)
{
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);

  syslog (priority, "%s", msg);
  if (log_fd >= 0) {
    g_autoptr(GDateTime) now = g_date_time_new_now_local ();
    g_autofree char *ts = g_date_time_format (now, "%Y-%m-%d %H:%M:%S");
    g_autofree char *line =
      g_strdup_printf ("%s.%03d %s[%d]: %s%s\n", ts,
                       g_date_time_get_microsecond (now) / 1000, prog,
                       (int) getpid (),
                       priority == LOG_ERR ? "error: " : "", msg);
    /* One write per line, so that lines of concurrent hooks never mix. */
    if (write (log_fd, line, strlen (line)) < 0) {
      /* Nowhere better to say it. */
    }
  }
  if (priority == LOG_ERR)
    fprintf (stderr, "%s: %s\n", prog, msg);
}

void
hlog_info (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  emit (LOG_INFO, fmt, ap);
  va_end (ap);
}

void
hlog_error (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  emit (LOG_ERR, fmt, ap);
  va_end (ap);
}
