/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libnbd.h>

#include "parse.h"
#include "server.h"

#define POLL_MS 20

char *
server_path (const struct hook_config *c, const char *uuid,
             const char *target, const char *suffix)
{
  g_autofree char *base = g_strconcat (target, suffix, NULL);
  return g_build_filename (c->run_dir, uuid, base, NULL);
}

char *
server_state_path (const struct hook_config *c, const char *uuid,
                   const char *target)
{
  g_autofree char *base = g_strdup_printf ("%s-%s.state", uuid, target);
  return g_build_filename (c->state_dir, base, NULL);
}

/* ---- Processes ------------------------------------------------------- */

static bool
is_zombie (pid_t pid)
{
  g_autofree char *path = g_strdup_printf ("/proc/%d/stat", (int) pid);
  g_autofree char *stat = NULL;
  const char *p;

  if (!g_file_get_contents (path, &stat, NULL, NULL))
    return true;                /* gone */
  p = strrchr (stat, ')');
  return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

static bool
alive (pid_t pid)
{
  /* Reap it if it is our own child (a start that failed). */
  waitpid (pid, NULL, WNOHANG);
  return pid > 0 && kill (pid, 0) == 0 && !is_zombie (pid);
}

pid_t
server_running (const char *pidfile)
{
  g_autofree char *s = NULL, *cmdpath = NULL, *cmd = NULL;
  gsize len, i;
  uint64_t pid;

  if (!g_file_get_contents (pidfile, &s, NULL, NULL) ||
      !r3map_parse_uint ("pid", g_strstrip (s), 2, INT32_MAX, &pid, NULL) ||
      !alive (pid))
    return 0;
  /* A pid file left by a crash may name a recycled pid: only an nbdkit
   * (or nbdkit under a wrapper such as valgrind) counts. */
  cmdpath = g_strdup_printf ("/proc/%d/cmdline", (int) pid);
  if (!g_file_get_contents (cmdpath, &cmd, &len, NULL))
    return 0;
  for (i = 0; i + 1 < len; ++i)
    if (cmd[i] == '\0')
      cmd[i] = ' ';
  return strstr (cmd, "nbdkit") ? (pid_t) pid : 0;
}

void
server_stop (const char *pidfile)
{
  pid_t pid = server_running (pidfile);
  int i;

  if (pid > 0) {
    kill (pid, SIGTERM);
    for (i = 0; i < 10000 / POLL_MS && alive (pid); ++i)
      g_usleep (POLL_MS * 1000);
    if (alive (pid)) {
      kill (pid, SIGKILL);
      for (i = 0; i < 5000 / POLL_MS && alive (pid); ++i)
        g_usleep (POLL_MS * 1000);
    }
  }
  unlink (pidfile);
}

static char *
log_tail (const char *log)
{
  g_autofree char *s = NULL;
  g_auto(GStrv) lines = NULL;
  guint n, from;

  if (!g_file_get_contents (log, &s, NULL, NULL) || *g_strstrip (s) == '\0')
    return g_strdup ("(nothing in its log)");
  lines = g_strsplit (s, "\n", -1);
  n = g_strv_length (lines);
  from = n > 3 ? n - 3 : 0;
  return g_strjoinv ("; ", lines + from);
}

static bool
unix_answers (const char *path)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  int fd, r;

  if (strlen (path) >= sizeof addr.sun_path)
    return false;
  strcpy (addr.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1)
    return false;
  r = connect (fd, (struct sockaddr *) &addr, sizeof addr);
  close (fd);
  return r == 0;
}

static bool
tcp_answers (const char *host, unsigned port)
{
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_NUMERICSERV };
  struct addrinfo *res = NULL, *a;
  char service[16];
  bool ok = false;

  /* A wildcard listens on loopback too. */
  if (strcmp (host, "0.0.0.0") == 0)
    host = "127.0.0.1";
  else if (strcmp (host, "::") == 0)
    host = "::1";
  snprintf (service, sizeof service, "%u", port);
  if (getaddrinfo (host, service, &hints, &res) != 0)
    return false;
  for (a = res; a && !ok; a = a->ai_next) {
    int fd = socket (a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
      ok = connect (fd, a->ai_addr, a->ai_addrlen) == 0;
      close (fd);
    }
  }
  freeaddrinfo (res);
  return ok;
}

bool
server_start (const struct hook_config *c, char **argv, const char *log,
              const char *pidfile, const char *socket, const char *host,
              unsigned port, GError **error)
{
  gint64 end = g_get_monotonic_time () + (gint64) c->start_timeout_ms * 1000;
  pid_t pid;

  unlink (pidfile);
  pid = fork ();
  if (pid == -1) {
    g_set_error (error, R3MAP_ERROR, errno, "fork: %s", g_strerror (errno));
    return false;
  }
  if (pid == 0) {
    int null = open ("/dev/null", O_RDWR);
    int out = open (log, O_WRONLY | O_CREAT | O_APPEND, 0640);

    setsid ();
    if (null < 0 || out < 0 || dup2 (null, 0) < 0 || dup2 (out, 1) < 0 ||
        dup2 (out, 2) < 0)
      _exit (126);
    /* Nothing of libvirtd's or the hook's may stay open in it. */
    closefrom (3);
    execvp (argv[0], argv);
    fprintf (stderr, "cannot run %s: %s\n", argv[0], g_strerror (errno));
    _exit (127);
  }

  for (;;) {
    int status;
    pid_t r = pid > 0 ? waitpid (pid, &status, WNOHANG) : 0;

    /* nbdkit's first process exits 0 once its daemon runs. */
    if (r == pid && WIFEXITED (status) && WEXITSTATUS (status) == 0)
      pid = 0;
    else if (r == pid) {
      g_autofree char *tail = log_tail (log);
      g_set_error (error, R3MAP_ERROR, EIO, "nbdkit exited at start "
                   "(status %d): %s", WIFEXITED (status) ?
                   WEXITSTATUS (status) : 128 + WTERMSIG (status), tail);
      return false;
    }
    if (pid == 0 && server_running (pidfile) &&
        (socket ? unix_answers (socket) : tcp_answers (host, port)))
      return true;
    if (g_get_monotonic_time () >= end) {
      g_autofree char *tail = log_tail (log);
      if (pid > 0) {
        kill (pid, SIGKILL);
        waitpid (pid, NULL, 0);
      }
      server_stop (pidfile);
      g_set_error (error, R3MAP_ERROR, ETIMEDOUT, "nbdkit did not answer "
                   "within %" G_GUINT64_FORMAT " ms (start-timeout): %s",
                   c->start_timeout_ms, tail);
      return false;
    }
    g_usleep (POLL_MS * 1000);
  }
}

/* ---- Flush ----------------------------------------------------------- */

/* Until connected (COOKIE 0) or until the command COOKIE is done: true
 * if it succeeded in time. */
static bool
nbd_wait (struct nbd_handle *nbd, gint64 end, int64_t cookie)
{
  for (;;) {
    gint64 left = (end - g_get_monotonic_time ()) / 1000;

    if (cookie == 0 && nbd_aio_is_ready (nbd) > 0)
      return true;
    if (cookie != 0) {
      int r = nbd_aio_command_completed (nbd, cookie);
      if (r != 0)
        return r == 1;
    }
    if (nbd_aio_is_dead (nbd) > 0 || nbd_aio_is_closed (nbd) > 0 ||
        left <= 0 || nbd_poll (nbd, (int) MIN (left, 1000)) == -1)
      return false;
  }
}

bool
server_flush (const char *socket, unsigned timeout_ms, GError **error)
{
  gint64 end = g_get_monotonic_time () + (gint64) timeout_ms * 1000;
  struct nbd_handle *nbd = nbd_create ();
  bool ok = false;
  int64_t cookie;

  if (nbd == NULL) {
    g_set_error (error, R3MAP_ERROR, EIO, "%s", nbd_get_error ());
    return false;
  }
  if (nbd_aio_connect_unix (nbd, socket) == -1 || !nbd_wait (nbd, end, 0))
    goto out;
  if (nbd_can_flush (nbd) > 0) {
    cookie = nbd_aio_flush (nbd, NBD_NULL_COMPLETION, 0);
    if (cookie == -1 || !nbd_wait (nbd, end, cookie))
      goto out;
  }
  ok = true;
  nbd_shutdown (nbd, 0);
 out:
  if (!ok)
    g_set_error (error, R3MAP_ERROR, EIO, "flush %s: %s", socket,
                 nbd_get_error () ? nbd_get_error () : "timed out");
  nbd_close (nbd);
  return ok;
}

/* ---- TCP ------------------------------------------------------------- */

bool
server_free_port (const struct hook_config *c, unsigned *port,
                  GError **error)
{
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
  unsigned p;

  for (p = c->port_min; p <= c->port_max; ++p) {
    struct addrinfo *res = NULL;
    char service[16];
    bool ok = false;

    snprintf (service, sizeof service, "%u", p);
    if (getaddrinfo (c->seed_listen, service, &hints, &res) != 0) {
      g_set_error (error, R3MAP_ERROR, EINVAL,
                   "seed-listen=%s: not an address of this host",
                   c->seed_listen);
      return false;
    }
    if (res) {
      int fd = socket (res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
      if (fd >= 0) {
        setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        ok = bind (fd, res->ai_addr, res->ai_addrlen) == 0;
        close (fd);
      }
    }
    freeaddrinfo (res);
    if (ok) {
      *port = p;
      return true;
    }
  }
  g_set_error (error, R3MAP_ERROR, EADDRINUSE, "seed-ports=%u-%u: every "
               "port is in use", c->port_min, c->port_max);
  return false;
}

unsigned
server_tcp_clients (unsigned port)
{
  static const char *const files[] = { "/proc/net/tcp", "/proc/net/tcp6" };
  unsigned n = 0;
  size_t f;

  for (f = 0; f < G_N_ELEMENTS (files); ++f) {
    g_autofree char *s = NULL;
    g_auto(GStrv) lines = NULL;
    size_t i;

    if (!g_file_get_contents (files[f], &s, NULL, NULL))
      continue;
    lines = g_strsplit (s, "\n", -1);
    /* "sl local_address rem_address st ...": ADDR:PORT in hex, st 01
     * is ESTABLISHED. */
    for (i = 1; lines[i]; ++i) {
      char local[64], remote[64], st[8];
      const char *colon;

      if (sscanf (lines[i], "%*s %63s %63s %7s", local, remote, st) != 3)
        continue;
      colon = strrchr (local, ':');
      if (colon && strcmp (st, "01") == 0 &&
          g_ascii_strtoull (colon + 1, NULL, 16) == port)
        n++;
    }
  }
  return n;
}

/* ---- Endpoint files -------------------------------------------------- */

bool
server_write_endpoint (const char *path, const char *host, unsigned port,
                       const char *epoch, GError **error)
{
  g_autofree char *s = g_strdup_printf ("%s %u %s\n", host, port, epoch);
  GError *err = NULL;

  if (!g_file_set_contents (path, s, -1, &err)) {
    g_set_error (error, R3MAP_ERROR, EIO, "%s", err->message);
    g_error_free (err);
    return false;
  }
  return true;
}

bool
server_read_endpoint (const char *path, char **host, unsigned *port,
                      char epoch[17])
{
  g_autofree char *s = NULL;
  g_auto(GStrv) w = NULL;
  uint64_t p;

  if (!g_file_get_contents (path, &s, NULL, NULL))
    return false;
  w = g_strsplit (g_strstrip (s), " ", 3);
  if (!w[0] || !w[1] || !w[2] || strlen (w[2]) != 16 ||
      !r3map_valid_host (w[0]) ||
      !r3map_parse_uint ("port", w[1], 1, 65535, &p, NULL))
    return false;
  *host = g_strdup (w[0]);
  *port = p;
  memcpy (epoch, w[2], 17);
  return true;
}
