/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Starting and stopping the nbdkit of a seeder or a leecher.
 *
 * nbdkit always runs in the foreground (-f), in a session of its own,
 * with its standard error ours.  Not nbdkit's own daemon mode: that
 * sends every message after the fork to syslog or nowhere, and the
 * messages of a filter that failed then (a state file of another disk,
 * a size that does not match the source's) are the ones a user needs.
 * In a session of its own, a Ctrl-C at the terminal reaches r3map only,
 * which then decides what to do (run a hook, unseal, stop nbdkit).
 *
 * A server that r3map owns (migrate, seed --foreground) is our child,
 * and nbdkit -f ends when its parent does: it never outlives us.  A
 * server that must go on after r3map returns (seed, leech) is our
 * grandchild instead: the process between us exits at once, and
 * nbdkit is started only once it is gone, so that its parent is
 * already the system's.  We watch it through a pipe whose write end it
 * holds without knowing: end of file on ours means it exited.
 *
 * nbdkit writes its pid file (-P) once it listens: that is "ready".
 * A bad start is an exit of nbdkit, with its reason on standard error.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>

#include "r3map.h"

/* Long enough for nbdkit under valgrind on a busy machine. */
#define READY_TIMEOUT_S 60
#define STOP_TIMEOUT_S 60
#define POLL_MS 10

volatile sig_atomic_t r3map_interrupted;

static void
on_signal (int sig)
{
  r3map_interrupted = sig;
}

void
r3map_catch_signals (void)
{
  struct sigaction sa = { .sa_handler = on_signal };

  /* No SA_RESTART: a wait or a sleep returns at once. */
  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGHUP, &sa, NULL);
}

const char *
r3map_nbdkit (void)
{
  const char *p = getenv ("R3MAP_NBDKIT");

  return p && *p ? p : "nbdkit";
}

/* In the process that becomes nbdkit. */
static void __attribute__ ((noreturn))
exec_nbdkit (char **argv, const char *cmd)
{
  int null = open ("/dev/null", O_RDWR);

  if (null >= 0) {
    dup2 (null, STDIN_FILENO);
    dup2 (null, STDOUT_FILENO);
  }
  execvp (argv[0], argv);
  fprintf (stderr, "%s: %s: cannot run %s: %s\n", progname, cmd, argv[0],
           g_strerror (errno));
  _exit (127);
}

/* Our child is nbdkit. */
static bool
spawn_owned (struct r3map_server *s, char **argv, const char *cmd)
{
  pid_t pid = fork ();

  if (pid == -1) {
    fprintf (stderr, "%s: %s: fork: %s\n", progname, cmd, g_strerror (errno));
    return false;
  }
  if (pid == 0) {
    setsid ();
    exec_nbdkit (argv, cmd);
  }
  s->pid = pid;
  return true;
}

/* Our grandchild is nbdkit, its parent the system's. */
static bool
spawn_detached (struct r3map_server *s, char **argv, const char *cmd)
{
  int fd[2], status;
  pid_t mid;

  if (pipe2 (fd, O_CLOEXEC) == -1) {
    fprintf (stderr, "%s: %s: pipe: %s\n", progname, cmd, g_strerror (errno));
    return false;
  }
  mid = fork ();
  if (mid == -1) {
    fprintf (stderr, "%s: %s: fork: %s\n", progname, cmd, g_strerror (errno));
    close (fd[0]);
    close (fd[1]);
    return false;
  }
  if (mid == 0) {
    pid_t me;
    int i;

    setsid ();
    me = getpid ();
    if (fork () != 0)
      _exit (0);
    /* Until the process between is gone, at once in practice. */
    for (i = 0; i < 10000 && getppid () == me; ++i)
      usleep (1000);
    close (fd[0]);
    fcntl (fd[1], F_SETFD, 0);  /* held by nbdkit until it exits */
    exec_nbdkit (argv, cmd);
  }
  close (fd[1]);
  while (waitpid (mid, &status, 0) == -1 && errno == EINTR)
    ;
  s->alive_fd = fd[0];
  s->detached = true;
  return true;
}

/* Say how our child ended, from a wait status. */
void
r3map_server_report (const struct r3map_server *s, const char *cmd,
                     int status, const char *when)
{
  const char *sp = when[0] ? " " : "";

  if (WIFEXITED (status))
    fprintf (stderr, "%s: %s: the %s (nbdkit) exited with status %d%s%s\n",
             progname, cmd, s->what, WEXITSTATUS (status), sp, when);
  else if (WIFSIGNALED (status))
    fprintf (stderr, "%s: %s: the %s (nbdkit) was killed by signal %d%s%s\n",
             progname, cmd, s->what, WTERMSIG (status), sp, when);
}

/* nbdkit writes "PID\n": a file without the newline is half written. */
static pid_t
pid_file_read (const char *path)
{
  g_autofree char *data = NULL;
  gsize len;
  long pid;

  if (!g_file_get_contents (path, &data, &len, NULL) ||
      len < 2 || data[len - 1] != '\n')
    return 0;
  pid = strtol (data, NULL, 10);
  return pid > 0 && pid < INT32_MAX ? (pid_t) pid : 0;
}

bool
r3map_server_start (struct r3map_server *s, GPtrArray *args, bool detached,
                    const char *cmd)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  gint64 end;
  guint i;

  g_ptr_array_add (argv, (char *) r3map_nbdkit ());
  for (i = 0; i < args->len; ++i)
    g_ptr_array_add (argv, args->pdata[i]);
  g_ptr_array_add (argv, NULL);

  /* A pid file left by an earlier run would read as "ready" at once. */
  if (unlink (s->pid_file) == -1 && errno != ENOENT) {
    fprintf (stderr, "%s: %s: %s: %s\n", progname, cmd, s->pid_file,
             g_strerror (errno));
    return false;
  }
  s->alive_fd = -1;
  fflush (NULL);
  if (!(detached ? spawn_detached : spawn_owned) (s, (char **) argv->pdata,
                                                  cmd))
    return false;

  end = g_get_monotonic_time () + READY_TIMEOUT_S * G_USEC_PER_SEC;
  for (;;) {
    pid_t pid;

    if (!r3map_server_running (s)) {
      if (s->detached)
        fprintf (stderr, "%s: %s: the %s (nbdkit) exited before it was "
                 "ready\n", progname, cmd, s->what);
      else
        r3map_server_report (s, cmd, s->status, "before it was ready");
      return false;
    }
    if ((pid = pid_file_read (s->pid_file)) != 0) {
      /* Ours is our child (which a wrapper in R3MAP_NBDKIT may not
       * have replaced by nbdkit): that is the one to wait for. */
      if (s->detached)
        s->pid = pid;
      return true;
    }
    if (r3map_interrupted || g_get_monotonic_time () >= end) {
      if (!r3map_interrupted)
        fprintf (stderr, "%s: %s: the %s (nbdkit) was not ready within "
                 "%d s\n", progname, cmd, s->what, READY_TIMEOUT_S);
      if (s->detached)
        close (s->alive_fd);    /* its pid is not known: it goes on */
      else
        r3map_server_stop (s);
      s->alive_fd = -1;
      return false;
    }
    g_usleep (POLL_MS * 1000);
  }
}

bool
r3map_server_running (struct r3map_server *s)
{
  int status;

  if (s->detached) {
    struct pollfd p = { .fd = s->alive_fd, .events = POLLIN };

    /* End of file (or anything at all): the write end is closed. */
    if (s->alive_fd == -1)
      return false;
    if (poll (&p, 1, 0) == 1) {
      close (s->alive_fd);
      s->alive_fd = -1;
      return false;
    }
    return true;
  }
  if (s->pid == 0)
    return false;
  /* A child that exited is a zombie until waited for, and a zombie
   * still answers kill (pid, 0). */
  if (waitpid (s->pid, &status, WNOHANG) == s->pid) {
    s->pid = 0;
    s->status = status;
    return false;
  }
  return true;
}

int
r3map_server_wait (struct r3map_server *s)
{
  int status;

  while (s->pid) {
    pid_t r = waitpid (s->pid, &status, 0);
    if (r == s->pid) {
      s->pid = 0;
      s->status = status;
    }
    else if (r == -1 && (errno != EINTR || r3map_interrupted))
      return -1;
  }
  return 0;
}

void
r3map_server_stop (struct r3map_server *s)
{
  gint64 end;

  if (!r3map_server_running (s))
    return;
  /* TERM: nbdkit closes its clients and the filters clean up. */
  kill (s->pid, SIGTERM);
  end = g_get_monotonic_time () + STOP_TIMEOUT_S * G_USEC_PER_SEC;
  while (r3map_server_running (s)) {
    if (g_get_monotonic_time () >= end) {
      kill (s->pid, SIGKILL);
      if (!s->detached) {
        waitpid (s->pid, &s->status, 0);
        s->pid = 0;
      }
      return;
    }
    g_usleep (POLL_MS * 1000);
  }
}

/* What is left of a server that goes on without us. */
void
r3map_server_release (struct r3map_server *s)
{
  if (s->alive_fd >= 0)
    close (s->alive_fd);
  s->alive_fd = -1;
}

char *
r3map_private_dir (const char *cmd)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *name = g_strdup_printf ("r3map-%s-XXXXXX", cmd);
  char *dir = g_dir_make_tmp (name, &error);

  if (dir == NULL)
    fprintf (stderr, "%s: %s: %s\n", progname, cmd, error->message);
  return dir;
}

/* Only our own files are in it, and no directory. */
void
r3map_remove_private_dir (char *dir)
{
  GDir *d;
  const char *name;

  if (dir == NULL)
    return;
  d = g_dir_open (dir, 0, NULL);
  if (d) {
    while ((name = g_dir_read_name (d)) != NULL) {
      g_autofree char *path = g_build_filename (dir, name, NULL);
      unlink (path);
    }
    g_dir_close (d);
  }
  rmdir (dir);
  g_free (dir);
}
