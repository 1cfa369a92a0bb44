/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0. */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "parse.h"
#include "track-client.h"

bool
track_command (const char *ctl, const char *command, unsigned timeout_ms,
               char *answer, size_t len, GError **error)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  gint64 end = g_get_monotonic_time () + (gint64) timeout_ms * 1000;
  g_autofree char *line = g_strdup_printf ("%s\n", command);
  size_t got = 0;
  int fd = -1;
  bool ok = false;

  if (strlen (ctl) >= sizeof addr.sun_path) {
    g_set_error (error, R3MAP_ERROR, ENAMETOOLONG,
                 "%s: path too long for a Unix socket", ctl);
    return false;
  }
  strcpy (addr.sun_path, ctl);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || connect (fd, (struct sockaddr *) &addr, sizeof addr) == -1) {
    g_set_error (error, R3MAP_ERROR, errno, "%s: cannot connect: %s", ctl,
                 g_strerror (errno));
    goto out;
  }
  if (write (fd, line, strlen (line)) != (ssize_t) strlen (line)) {
    g_set_error (error, R3MAP_ERROR, EIO, "%s: cannot send %s", ctl, command);
    goto out;
  }
  while (got < len - 1) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    gint64 left = (end - g_get_monotonic_time ()) / 1000;
    ssize_t r;

    if (left <= 0 || poll (&p, 1, left) <= 0) {
      g_set_error (error, R3MAP_ERROR, ETIMEDOUT,
                   "%s: no answer to %s within %u ms", ctl, command,
                   timeout_ms);
      goto out;
    }
    r = read (fd, answer + got, 1);
    if (r <= 0) {
      g_set_error (error, R3MAP_ERROR, EIO, "%s: closed without an answer "
                   "to %s", ctl, command);
      goto out;
    }
    if (answer[got] == '\n')
      break;
    got++;
  }
  answer[got] = '\0';
  if (g_str_has_prefix (answer, "error")) {
    g_set_error (error, R3MAP_ERROR, EPROTO, "%s: %s: %s", ctl, command,
                 answer);
    goto out;
  }
  ok = true;
 out:
  if (fd >= 0)
    close (fd);
  return ok;
}

/* "epoch=E seq=S sealed=yes|no final=F writes=W refused=R" */
bool
track_status (const char *ctl, struct track_status *st, GError **error)
{
  char answer[256];
  g_auto(GStrv) words = NULL;
  size_t i;

  if (!track_command (ctl, "status", 5000, answer, sizeof answer, error))
    return false;
  memset (st, 0, sizeof *st);
  words = g_strsplit (answer, " ", -1);
  for (i = 0; words[i]; ++i) {
    const char *w = words[i];
    if (g_str_has_prefix (w, "epoch=") && strlen (w) == 6 + 16)
      memcpy (st->epoch, w + 6, 17);
    else if (g_str_has_prefix (w, "seq="))
      st->seq = g_ascii_strtoull (w + 4, NULL, 10);
    else if (g_str_has_prefix (w, "final="))
      st->final = g_ascii_strtoull (w + 6, NULL, 10);
    else if (g_str_has_prefix (w, "writes="))
      st->writes = g_ascii_strtoull (w + 7, NULL, 10);
    else if (g_str_has_prefix (w, "refused="))
      st->refused = g_ascii_strtoull (w + 8, NULL, 10);
    else if (strcmp (w, "sealed=yes") == 0)
      st->sealed = true;
  }
  return true;
}

bool
track_seal (const char *ctl, uint64_t *final, GError **error)
{
  char answer[256];

  /* The seal waits for the writes in flight below the filter. */
  if (!track_command (ctl, "seal", 30000, answer, sizeof answer, error))
    return false;
  if (sscanf (answer, "sealed seq=%" SCNu64, final) != 1) {
    g_set_error (error, R3MAP_ERROR, EPROTO, "%s: seal: unexpected answer "
                 "\"%s\"", ctl, answer);
    return false;
  }
  return true;
}

bool
track_unseal (const char *ctl, GError **error)
{
  char answer[256];
  return track_command (ctl, "unseal", 5000, answer, sizeof answer, error);
}
