/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The control socket: see control.h.  One command per line, one answer
 * line per command:
 *
 *   seal     -> "sealed seq=F"       (waits for writes in flight)
 *   unseal   -> "unsealed"
 *   status   -> "epoch=E seq=S sealed=yes|no final=F writes=W refused=R"
 *   anything else -> "error unknown command"
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "control.h"
#include "tracker.h"

static int listen_fd = -1;
static int wake[2] = { -1, -1 };
static char *sock_path;
static pthread_t thread;
static bool running;

/* A client that sends nothing for this long is dropped. */
#define CLIENT_IDLE_MS 10000

static void
answer (int fd, const char *line)
{
  char buf[512];
  struct tracker_status st;
  int n;

  if (strcmp (line, "seal") == 0) {
    uint64_t f = tracker_seal ();
    n = snprintf (buf, sizeof buf, "sealed seq=%" PRIu64 "\n", f);
    nbdkit_debug ("r3map-track: sealed at seq=%" PRIu64, f);
  }
  else if (strcmp (line, "unseal") == 0) {
    tracker_unseal ();
    n = snprintf (buf, sizeof buf, "unsealed\n");
    nbdkit_debug ("r3map-track: unsealed");
  }
  else if (strcmp (line, "status") == 0) {
    tracker_status (&st);
    n = snprintf (buf, sizeof buf,
                  "epoch=%s seq=%" PRIu64 " sealed=%s final=%" PRIu64
                  " writes=%" PRIu64 " refused=%" PRIu64 "\n",
                  tracker_epoch (), st.seq, st.sealed ? "yes" : "no",
                  st.sealed ? st.sealed_seq : 0, st.writes, st.refused);
  }
  else
    n = snprintf (buf, sizeof buf, "error unknown command\n");
  /* A client that went away is not our problem. */
  if (write (fd, buf, n) != n)
    nbdkit_debug ("r3map-track: control client went away");
}

/* Serve one client until EOF, error, idleness or shutdown. */
static void
serve (int fd)
{
  char line[256];
  size_t len = 0;

  for (;;) {
    struct pollfd p[2] = {
      { .fd = fd, .events = POLLIN },
      { .fd = wake[0], .events = POLLIN },
    };
    ssize_t r;
    char *nl;

    if (poll (p, 2, CLIENT_IDLE_MS) <= 0 || p[1].revents)
      return;
    r = read (fd, line + len, sizeof line - 1 - len);
    if (r <= 0)
      return;
    len += r;
    line[len] = '\0';
    while ((nl = strchr (line, '\n')) != NULL) {
      *nl = '\0';
      if (nl > line && nl[-1] == '\r')
        nl[-1] = '\0';
      answer (fd, line);
      len -= nl + 1 - line;
      memmove (line, nl + 1, len + 1);
    }
    if (len == sizeof line - 1)
      return;                   /* a line too long: not a client of ours */
  }
}

static void *
control_thread (void *arg)
{
  for (;;) {
    struct pollfd p[2] = {
      { .fd = listen_fd, .events = POLLIN },
      { .fd = wake[0], .events = POLLIN },
    };
    int fd;

    if (poll (p, 2, -1) == -1) {
      if (errno == EINTR)
        continue;
      nbdkit_error ("r3map-track: control socket: poll: %m");
      return NULL;
    }
    if (p[1].revents)
      return NULL;
    fd = accept4 (listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd == -1)
      continue;
    serve (fd);
    close (fd);
  }
}

int
control_listen (const char *path)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  struct stat st;
  mode_t old_mask;
  int err;

  if (strlen (path) >= sizeof addr.sun_path) {
    nbdkit_error ("track-control=%s: path too long for a Unix socket", path);
    return -1;
  }
  strcpy (addr.sun_path, path);
  if (lstat (path, &st) == 0) {
    if (!S_ISSOCK (st.st_mode)) {
      nbdkit_error ("track-control=%s: exists and is not a socket", path);
      return -1;
    }
    /* A socket someone still listens on belongs to a live nbdkit. */
    int probe = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 &&
        connect (probe, (struct sockaddr *) &addr, sizeof addr) == 0) {
      close (probe);
      nbdkit_error ("track-control=%s: in use by another process", path);
      return -1;
    }
    if (probe >= 0)
      close (probe);
    unlink (path);              /* stale, from a previous run */
  }
  listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd == -1) {
    nbdkit_error ("track-control=%s: socket: %m", path);
    return -1;
  }
  /* Only the owner may seal. */
  old_mask = umask (0177);
  err = bind (listen_fd, (struct sockaddr *) &addr, sizeof addr);
  umask (old_mask);
  if (err == -1) {
    nbdkit_error ("track-control=%s: bind: %m", path);
    goto fail;
  }
  if (listen (listen_fd, 16) == -1) {
    nbdkit_error ("track-control=%s: listen: %m", path);
    goto fail;
  }
  if (pipe2 (wake, O_CLOEXEC) == -1) {
    nbdkit_error ("track-control=%s: pipe: %m", path);
    goto fail;
  }
  sock_path = strdup (path);
  return 0;

 fail:
  control_stop ();
  unlink (path);
  return -1;
}

int
control_start (void)
{
  int err;

  if (listen_fd == -1)
    return 0;
  err = pthread_create (&thread, NULL, control_thread, NULL);
  if (err != 0) {
    errno = err;
    nbdkit_error ("track-control=%s: cannot start a thread: %m", sock_path);
    return -1;
  }
  running = true;
  return 0;
}

void
control_stop (void)
{
  if (running) {
    if (write (wake[1], "x", 1) != 1)
      nbdkit_debug ("r3map-track: cannot wake the control thread: %m");
    pthread_join (thread, NULL);
    running = false;
  }
  if (sock_path) {
    unlink (sock_path);
    free (sock_path);
    sock_path = NULL;
  }
  if (listen_fd >= 0)
    close (listen_fd);
  if (wake[0] >= 0)
    close (wake[0]);
  if (wake[1] >= 0)
    close (wake[1]);
  listen_fd = wake[0] = wake[1] = -1;
}
