/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The client side of r3map-track's control socket (track-control=):
 * one command line sent, one answer line read.  Used by `r3map seal'
 * for any number of seeders at once (one thread each, so this keeps
 * its state on the caller's stack) and by `r3map migrate' for its own.
 */

#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib.h>

#include "r3map.h"

bool
r3map_control (const char *path, const char *command,
               char *answer, size_t answer_len, char *error, size_t error_len)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  char line[64];
  size_t len = 0;
  bool ok = false;
  int fd = -1;

  answer[0] = '\0';
  if (strlen (path) >= sizeof addr.sun_path) {
    snprintf (error, error_len, "path too long for a Unix socket");
    return false;
  }
  strcpy (addr.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || connect (fd, (struct sockaddr *) &addr, sizeof addr) == -1) {
    snprintf (error, error_len, "cannot connect: %s", g_strerror (errno));
    goto out;
  }
  snprintf (line, sizeof line, "%s\n", command);
  if (write (fd, line, strlen (line)) != (ssize_t) strlen (line)) {
    snprintf (error, error_len, "cannot send: %s", g_strerror (errno));
    goto out;
  }
  /* One line back. */
  while (len < answer_len - 1) {
    ssize_t r = read (fd, answer + len, 1);
    if (r <= 0 || answer[len] == '\n')
      break;
    len++;
  }
  answer[len] = '\0';
  if (len == 0)
    snprintf (error, error_len, "no answer");
  else if (strncmp (answer, "error", 5) == 0) {
    snprintf (error, error_len, "%s", answer);
    answer[0] = '\0';
  }
  else
    ok = true;
 out:
  if (fd >= 0)
    close (fd);
  return ok;
}
