/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map mount --file [OPTIONS] URI PATH
 * r3map mount --file [OPTIONS] PATH -- SERVER [ARGS...]
 * r3map mount --device [OPTIONS] URI
 * r3map mount --device [OPTIONS] -- SERVER [ARGS...]
 *
 * An export as a file (through nbdfuse, FUSE) or as a block device
 * (through nbd-client and the kernel's nbd module), for as long as
 * this command runs: until --run's command exits, or a signal
 * (INT, TERM, HUP).  Then it unmounts or detaches, and stops the
 * server it started.
 *
 * A killed r3map leaves nothing behind: every child gets
 * PR_SET_PDEATHSIG, so the server exits, nbdfuse unmounts its file
 * (it does on SIGTERM) and nbd-client, which stays in the kernel's
 * NBD_DO_IT ioctl (-nofork -nonetlink), is interrupted, which
 * detaches the device.  A killed nbdfuse leaves a dead FUSE mount:
 * r3map unmounts it (lazily) when it sees nbdfuse die, and on start
 * when it finds one on PATH.
 *
 * With "-- SERVER ARGS", r3map runs the server itself with systemd
 * socket activation (as nbdfuse's "[ CMD ]" mode does, but owned by
 * r3map so that it cannot outlive it): nbdkit and qemu-nbd both
 * accept that.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#include "parse.h"
#include "r3map.h"

enum mode { MODE_NONE, MODE_FILE, MODE_DEVICE };

struct mount {
  enum mode mode;
  bool readonly;
  const char *run;              /* --run COMMAND */
  uint64_t timeout_ms;          /* until the frontend is ready */
  char **server;                /* -- SERVER ARGS, NULL-terminated */
  const char *uri;
  const char *path;             /* --file: the mount point */

  char *tmpdir;                 /* socket and pid file */
  char *sock;
  char *pidfile;
  char *ready;                  /* the file or device, once ready */
  char *device;                 /* --device: /dev/nbdN */
  pid_t server_pid, frontend_pid, run_pid;
  bool mounted;                 /* the file or device was there */
  int interrupted;              /* the signal that stopped the set-up */
  sigset_t oldmask;
};

static const char *
prog (void)
{
  return progname;
}

/* ---------------------------------------------------------------- children */

/* Fork a child that dies with us; in the child, restore the signal
 * mask.  Returns the pid, 0 in the child, -1 on failure. */
static pid_t
spawn (struct mount *mt)
{
  pid_t parent = getpid (), pid;

  fflush (stdout);
  fflush (stderr);
  pid = fork ();
  if (pid != 0)
    return pid;
  /* PR_SET_PDEATHSIG fires when the parent thread exits; if the
   * parent already died between fork and prctl, go now. */
  prctl (PR_SET_PDEATHSIG, SIGTERM);
  if (getppid () != parent)
    _exit (1);
  sigprocmask (SIG_SETMASK, &mt->oldmask, NULL);
  return 0;
}

static void
exec_or_die (char **argv, const char *package)
{
  execvp (argv[0], argv);
  fprintf (stderr, "%s: mount: cannot run %s: %s%s%s\n", prog (), argv[0],
           strerror (errno), errno == ENOENT ? ": install the Debian package "
           : "", errno == ENOENT ? package : "");
  _exit (127);
}

/* Has PID exited?  Reaps it, and stores its status. */
static bool
exited (pid_t pid, int *status)
{
  return pid > 0 && waitpid (pid, status, WNOHANG) == pid;
}

/* Wait for PID up to MS milliseconds; then SIGKILL it. */
static int
wait_or_kill (pid_t pid, unsigned ms)
{
  int status = 0;
  unsigned i;

  for (i = 0; i < ms / 20; i++) {
    if (exited (pid, &status))
      return status;
    g_usleep (20000);
  }
  kill (pid, SIGKILL);
  waitpid (pid, &status, 0);
  return status;
}

/* Run a short command to completion (fusermount3, nbd-client -d),
 * quietly unless VERBOSE.  Returns its exit status, or -1. */
static int
run_quick (struct mount *mt, char **argv, bool verbose)
{
  pid_t pid = spawn (mt);
  int status;

  if (pid == -1)
    return -1;
  if (pid == 0) {
    if (!verbose) {
      int fd = open ("/dev/null", O_WRONLY | O_CLOEXEC);
      if (fd >= 0)
        dup2 (fd, STDERR_FILENO);
    }
    execvp (argv[0], argv);
    _exit (127);
  }
  status = wait_or_kill (pid, 30000);
  return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

static char *
describe_status (int status)
{
  if (WIFSIGNALED (status))
    return g_strdup_printf ("was killed by signal %d (%s)", WTERMSIG (status),
                            strsignal (WTERMSIG (status)));
  return g_strdup_printf ("exited with status %d", WEXITSTATUS (status));
}

/* ---------------------------------------------------------------- server */

/* Listen on a Unix socket in our temporary directory and start the
 * server with it as fd 3 (LISTEN_FDS=1).  Our copy of the listening
 * socket is closed, so that if the server dies a client is refused
 * instead of waiting in the backlog. */
static int
start_server (struct mount *mt)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  int fd;

  mt->sock = g_build_filename (mt->tmpdir, "sock", NULL);
  if (strlen (mt->sock) >= sizeof addr.sun_path) {
    fprintf (stderr, "%s: mount: %s: too long for a Unix socket (set "
             "TMPDIR to a shorter directory)\n", prog (), mt->sock);
    return -1;
  }
  strcpy (addr.sun_path, mt->sock);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || bind (fd, (struct sockaddr *) &addr, sizeof addr) == -1 ||
      listen (fd, 64) == -1) {
    fprintf (stderr, "%s: mount: %s: %s\n", prog (), mt->sock,
             strerror (errno));
    if (fd >= 0)
      close (fd);
    return -1;
  }
  mt->server_pid = spawn (mt);
  if (mt->server_pid == -1) {
    fprintf (stderr, "%s: mount: fork: %s\n", prog (), strerror (errno));
    close (fd);
    return -1;
  }
  if (mt->server_pid == 0) {
    char pid[32];

    if (fd != 3) {
      dup2 (fd, 3);             /* dup2 clears FD_CLOEXEC */
      close (fd);
    }
    else
      fcntl (3, F_SETFD, 0);
    snprintf (pid, sizeof pid, "%d", (int) getpid ());
    setenv ("LISTEN_PID", pid, 1);
    setenv ("LISTEN_FDS", "1", 1);
    unsetenv ("LISTEN_FDNAMES");
    exec_or_die (mt->server, "nbdkit");
  }
  close (fd);
  mt->uri = g_strdup_printf ("nbd+unix:///?socket=%s", mt->sock);
  return 0;
}

/* ---------------------------------------------------------------- file */

static const char *
fusermount (void)
{
  static const char *found;
  char *p;

  if (found)
    return found;
  p = g_find_program_in_path ("fusermount3");
  found = p ? "fusermount3" : "fusermount";
  g_free (p);
  return found;
}

static int
fuse_unmount (struct mount *mt, bool lazy)
{
  char *argv[] = { (char *) fusermount (), (char *) (lazy ? "-uz" : "-u"),
                   (char *) mt->path, NULL };

  return run_quick (mt, argv, false);
}

/* A FUSE mount whose server was killed answers ENOTCONN: unmount it,
 * so that PATH can be used again. */
static int
clean_dead_mount (struct mount *mt)
{
  struct stat st;

  if (stat (mt->path, &st) == 0 || errno != ENOTCONN)
    return 0;
  if (fuse_unmount (mt, true) != 0 ||
      (stat (mt->path, &st) == -1 && errno == ENOTCONN)) {
    fprintf (stderr, "%s: mount: %s is a dead FUSE mount and cannot be "
             "unmounted: try '%s -uz %s'\n", prog (), mt->path,
             fusermount (), mt->path);
    return -1;
  }
  fprintf (stderr, "%s: mount: %s was a dead FUSE mount (its server had "
           "died): unmounted it\n", prog (), mt->path);
  return 0;
}

static int
start_file (struct mount *mt)
{
  struct stat st;
  char *p;

  p = g_find_program_in_path ("nbdfuse");
  if (p == NULL) {
    fprintf (stderr, "%s: mount --file: nbdfuse not found: install the "
             "Debian package libnbd-bin\n", prog ());
    return -1;
  }
  g_free (p);
  if (access ("/dev/fuse", R_OK | W_OK) == -1) {
    fprintf (stderr, "%s: mount --file: /dev/fuse: %s: FUSE is needed "
             "(modprobe fuse)\n", prog (), strerror (errno));
    return -1;
  }
  if (clean_dead_mount (mt) == -1)
    return -1;
  if (stat (mt->path, &st) == -1) {
    fprintf (stderr, "%s: mount --file: %s: %s\n", prog (), mt->path,
             strerror (errno));
    return -1;
  }
  if (!S_ISDIR (st.st_mode) && !S_ISREG (st.st_mode)) {
    fprintf (stderr, "%s: mount --file: %s: must be a directory (the file "
             "appears in it as 'nbd') or a regular file (mounted over)\n",
             prog (), mt->path);
    return -1;
  }
  mt->ready = S_ISDIR (st.st_mode)
    ? g_build_filename (mt->path, "nbd", NULL) : g_strdup (mt->path);

  mt->frontend_pid = spawn (mt);
  if (mt->frontend_pid == -1) {
    fprintf (stderr, "%s: mount: fork: %s\n", prog (), strerror (errno));
    return -1;
  }
  if (mt->frontend_pid == 0) {
    char *argv[8];
    int i = 0;

    argv[i++] = (char *) "nbdfuse";
    argv[i++] = (char *) "-P";
    argv[i++] = mt->pidfile;
    if (mt->readonly)
      argv[i++] = (char *) "-r";
    argv[i++] = (char *) mt->path;
    argv[i++] = (char *) mt->uri;
    argv[i] = NULL;
    exec_or_die (argv, "libnbd-bin");
  }
  return 0;
}

/* nbdfuse writes its pid file once the file is there. */
static bool
file_ready (struct mount *mt)
{
  struct stat st;

  return stat (mt->pidfile, &st) == 0 && st.st_size > 0;
}

static void
stop_file (struct mount *mt)
{
  int status, i;

  if (mt->frontend_pid <= 0)
    return;
  if (exited (mt->frontend_pid, &status)) {
    /* Died on its own (killed?): its mount, if any, is dead. */
    fuse_unmount (mt, true);
    mt->frontend_pid = 0;
    return;
  }
  if (!mt->mounted) {
    /* Never mounted (still connecting): stop it, and unmount in case
     * it mounted meanwhile. */
    kill (mt->frontend_pid, SIGTERM);
    wait_or_kill (mt->frontend_pid, 10000);
    fuse_unmount (mt, true);
    mt->frontend_pid = 0;
    return;
  }
  /* A file still open keeps the mount busy for a moment (a process
   * that is exiting): try for a few seconds, then detach it lazily:
   * it goes away when the last user closes it. */
  for (i = 0; i < 25; i++) {
    if (fuse_unmount (mt, false) == 0)
      break;
    if (exited (mt->frontend_pid, &status)) {
      fuse_unmount (mt, true);
      mt->frontend_pid = 0;
      return;
    }
    g_usleep (200000);
  }
  if (i == 25) {
    fprintf (stderr, "%s: mount: %s is busy: detached it lazily\n",
             prog (), mt->path);
    fuse_unmount (mt, true);
  }
  wait_or_kill (mt->frontend_pid, 10000);
  mt->frontend_pid = 0;
}

/* ---------------------------------------------------------------- device */

static bool
have_nbd_module (void)
{
  return access ("/sys/module/nbd", F_OK) == 0 ||
    access ("/sys/block/nbd0", F_OK) == 0;
}

/* The first /dev/nbdN that is not attached: attached ones have a pid
 * attribute in sysfs. */
static char *
free_device (void)
{
  int n;

  for (n = 0; n < 1024; n++) {
    char *dir = g_strdup_printf ("/sys/block/nbd%d", n);
    char *pid = g_strdup_printf ("%s/pid", dir);
    bool exists = access (dir, F_OK) == 0, busy = access (pid, F_OK) == 0;

    g_free (dir);
    g_free (pid);
    if (!exists)
      break;
    if (!busy)
      return g_strdup_printf ("/dev/nbd%d", n);
  }
  return NULL;
}

/* nbd-client takes a host and port, or a socket, and an export name;
 * not a URI.  TLS URIs are refused: nbd-client's TLS options do not
 * map from libnbd's URI parameters, and a local server can do the TLS
 * instead ("-- nbdkit nbd uri=nbds://..."). */
static char **
nbd_client_argv (struct mount *mt)
{
  GError *error = NULL;
  GUri *u = g_uri_parse (mt->uri, G_URI_FLAGS_ENCODED_QUERY, &error);
  GPtrArray *a;
  const char *scheme, *path;
  char **r = NULL;

  if (u == NULL) {
    fprintf (stderr, "%s: mount --device: %s: %s\n", prog (), mt->uri,
             error->message);
    g_error_free (error);
    return NULL;
  }
  a = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (a, g_strdup ("nbd-client"));
  scheme = g_uri_get_scheme (u);
  path = g_uri_get_path (u);
  if (strcmp (scheme, "nbd+unix") == 0) {
    GHashTable *q = g_uri_get_query (u)
      ? g_uri_parse_params (g_uri_get_query (u), -1, "&",
                            G_URI_PARAMS_NONE, NULL) : NULL;
    const char *s = q ? g_hash_table_lookup (q, "socket") : NULL;

    if (s == NULL) {
      fprintf (stderr, "%s: mount --device: %s: an nbd+unix URI needs "
               "?socket=PATH\n", prog (), mt->uri);
      if (q)
        g_hash_table_unref (q);
      goto out;
    }
    g_ptr_array_add (a, g_strdup ("-unix"));
    g_ptr_array_add (a, g_strdup (s));
    g_hash_table_unref (q);
  }
  else if (strcmp (scheme, "nbd") == 0) {
    int port = g_uri_get_port (u);

    g_ptr_array_add (a, g_strdup (g_uri_get_host (u)));
    g_ptr_array_add (a, g_strdup_printf ("%d", port > 0 ? port : 10809));
  }
  else {
    fprintf (stderr, "%s: mount --device: %s: scheme %s is not supported "
             "by nbd-client (only nbd and nbd+unix); serve it locally: "
             "r3map mount --device -- nbdkit nbd uri=URI\n", prog (),
             mt->uri, scheme);
    goto out;
  }
  g_ptr_array_add (a, g_strdup (mt->device));
  g_ptr_array_add (a, g_strdup ("-name"));
  g_ptr_array_add (a, g_strdup (path && path[0] == '/' ? path + 1 : ""));
  g_ptr_array_add (a, g_strdup ("-nofork"));
  g_ptr_array_add (a, g_strdup ("-nonetlink"));
  if (mt->readonly)
    g_ptr_array_add (a, g_strdup ("-readonly"));
  g_ptr_array_add (a, NULL);
  r = (char **) g_ptr_array_free (a, FALSE);
  a = NULL;
 out:
  if (a)
    g_ptr_array_free (a, TRUE);
  g_uri_unref (u);
  return r;
}

static int
start_device (struct mount *mt)
{
  char **argv;

  mt->device = free_device ();
  if (mt->device == NULL) {
    fprintf (stderr, "%s: mount --device: every /dev/nbdN is in use "
             "(modprobe nbd nbds_max=N for more)\n", prog ());
    return -1;
  }
  argv = nbd_client_argv (mt);
  if (argv == NULL)
    return -1;
  mt->ready = g_strdup (mt->device);
  mt->frontend_pid = spawn (mt);
  if (mt->frontend_pid == -1) {
    fprintf (stderr, "%s: mount: fork: %s\n", prog (), strerror (errno));
    g_strfreev (argv);
    return -1;
  }
  if (mt->frontend_pid == 0) {
    /* /usr/sbin is not on every user's PATH. */
    char *p = g_find_program_in_path ("nbd-client");
    if (p == NULL && access ("/usr/sbin/nbd-client", X_OK) == 0)
      argv[0] = (char *) "/usr/sbin/nbd-client";
    exec_or_die (argv, "nbd-client");
  }
  g_strfreev (argv);
  return 0;
}

/* Attached: the kernel shows the pid of the process in NBD_DO_IT. */
static bool
device_ready (struct mount *mt)
{
  char *pid = g_strdup_printf ("/sys/block/%s/pid", mt->device + 5);
  bool r = access (pid, F_OK) == 0;

  g_free (pid);
  return r;
}

static void
stop_device (struct mount *mt)
{
  int status;

  if (mt->frontend_pid <= 0)
    return;
  if (!exited (mt->frontend_pid, &status)) {
    char *argv[] = { (char *) "nbd-client", (char *) "-d", mt->device, NULL };
    char *p = g_find_program_in_path ("nbd-client");

    if (p == NULL)
      argv[0] = (char *) "/usr/sbin/nbd-client";
    g_free (p);
    run_quick (mt, argv, true);
    wait_or_kill (mt->frontend_pid, 10000);
  }
  mt->frontend_pid = 0;
}

/* ---------------------------------------------------------------- main */

static void
stop_all (struct mount *mt)
{
  if (mt->run_pid > 0) {
    kill (mt->run_pid, SIGTERM);
    wait_or_kill (mt->run_pid, 10000);
    mt->run_pid = 0;
  }
  if (mt->mode == MODE_FILE)
    stop_file (mt);
  else
    stop_device (mt);
  /* The server last: nbdkit flushes and closes its plugin and filters
   * on SIGTERM (r3map-pull saves its state), which can take a while. */
  if (mt->server_pid > 0) {
    kill (mt->server_pid, SIGTERM);
    wait_or_kill (mt->server_pid, 60000);
    mt->server_pid = 0;
  }
  if (mt->pidfile)
    unlink (mt->pidfile);
  if (mt->sock)
    unlink (mt->sock);
  if (mt->tmpdir)
    rmdir (mt->tmpdir);
}

/* Wait for the frontend to be ready, or for a child to die, a signal,
 * or the timeout.  Returns 0 when ready. */
static int
wait_ready (struct mount *mt)
{
  struct timespec tick = { 0, 20 * 1000 * 1000 };
  uint64_t waited = 0;
  sigset_t set;
  int status, sig;
  char *why;

  sigemptyset (&set);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGTERM);
  sigaddset (&set, SIGHUP);
  sigaddset (&set, SIGCHLD);
  for (;;) {
    if (mt->mode == MODE_FILE ? file_ready (mt) : device_ready (mt))
      return 0;
    /* A server that fails to start takes the frontend down with it
     * (its connection is refused or reset): name the server then, the
     * cause, not the frontend. */
    if (mt->server_pid > 0 && exited (mt->frontend_pid, &status)) {
      mt->frontend_pid = -mt->frontend_pid; /* reaped */
      for (int i = 0; i < 50 && mt->server_pid > 0; i++) {
        int sstatus;

        if (exited (mt->server_pid, &sstatus)) {
          why = describe_status (sstatus);
          fprintf (stderr, "%s: mount: the server (%s) %s before the %s was "
                   "ready\n", prog (), mt->server[0], why,
                   mt->mode == MODE_FILE ? "file" : "device");
          g_free (why);
          mt->server_pid = 0;
          return -1;
        }
        g_usleep (20000);
      }
      why = describe_status (status);
      fprintf (stderr, "%s: mount: %s %s before the %s was ready\n", prog (),
               mt->mode == MODE_FILE ? "nbdfuse" : "nbd-client", why,
               mt->mode == MODE_FILE ? "file" : "device");
      g_free (why);
      return -1;
    }
    if (exited (mt->frontend_pid, &status)) {
      why = describe_status (status);
      fprintf (stderr, "%s: mount: %s %s before the %s was ready\n", prog (),
               mt->mode == MODE_FILE ? "nbdfuse" : "nbd-client", why,
               mt->mode == MODE_FILE ? "file" : "device");
      g_free (why);
      mt->frontend_pid = -mt->frontend_pid; /* reaped */
      return -1;
    }
    if (exited (mt->server_pid, &status)) {
      why = describe_status (status);
      fprintf (stderr, "%s: mount: the server (%s) %s before the %s was "
               "ready\n", prog (), mt->server[0], why,
               mt->mode == MODE_FILE ? "file" : "device");
      g_free (why);
      mt->server_pid = 0;
      return -1;
    }
    sig = sigtimedwait (&set, NULL, &tick);
    if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
      fprintf (stderr, "%s: mount: interrupted by %s\n", prog (),
               strsignal (sig));
      mt->interrupted = sig;
      return -1;
    }
    waited += 20;
    if (waited >= mt->timeout_ms) {
      fprintf (stderr, "%s: mount: the %s was not ready after %" PRIu64
               " ms (--timeout)\n", prog (),
               mt->mode == MODE_FILE ? "file" : "device", mt->timeout_ms);
      return -1;
    }
  }
}

/* Mounted: run --run's command, or wait for a signal.  Returns the
 * exit status. */
static int
serve (struct mount *mt)
{
  sigset_t set;
  int sig, status;
  char *why;

  printf ("%s\n", mt->ready);
  fflush (stdout);

  if (mt->run) {
    mt->run_pid = spawn (mt);
    if (mt->run_pid == -1) {
      fprintf (stderr, "%s: mount: fork: %s\n", prog (), strerror (errno));
      return EXIT_FAILURE;
    }
    if (mt->run_pid == 0) {
      setenv ("uri", mt->uri, 1);
      setenv (mt->mode == MODE_FILE ? "file" : "device", mt->ready, 1);
      execl ("/bin/sh", "sh", "-c", mt->run, (char *) NULL);
      _exit (127);
    }
  }

  sigemptyset (&set);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGTERM);
  sigaddset (&set, SIGHUP);
  sigaddset (&set, SIGCHLD);
  for (;;) {
    if (mt->run_pid > 0 && exited (mt->run_pid, &status)) {
      mt->run_pid = 0;
      if (WIFEXITED (status))
        return WEXITSTATUS (status);
      return 128 + WTERMSIG (status);
    }
    if (exited (mt->frontend_pid, &status)) {
      why = describe_status (status);
      fprintf (stderr, "%s: mount: %s %s: %s %s\n", prog (),
               mt->mode == MODE_FILE ? "nbdfuse" : "nbd-client", why,
               mt->mode == MODE_FILE ? "unmounting" : "detaching", mt->ready);
      g_free (why);
      if (mt->mode == MODE_FILE)
        fuse_unmount (mt, true);
      mt->frontend_pid = 0;
      return EXIT_FAILURE;
    }
    if (exited (mt->server_pid, &status)) {
      why = describe_status (status);
      fprintf (stderr, "%s: mount: the server (%s) %s: %s %s\n", prog (),
               mt->server[0], why,
               mt->mode == MODE_FILE ? "unmounting" : "detaching", mt->ready);
      g_free (why);
      mt->server_pid = 0;
      return EXIT_FAILURE;
    }
    sig = sigwaitinfo (&set, NULL);
    if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
      /* The normal end of a mount without --run; with --run, its
       * command did not finish. */
      if (mt->run_pid <= 0)
        return EXIT_SUCCESS;
      fprintf (stderr, "%s: mount: interrupted by %s: stopping the --run "
               "command\n", prog (), strsignal (sig));
      return 128 + sig;
    }
  }
}

static void
mount_usage (FILE *fp)
{
  fprintf (fp,
           "usage: %s mount --file [-r] [--run=CMD] [--timeout=TIME] URI PATH\n"
           "       %s mount --file [-r] [--run=CMD] [--timeout=TIME] PATH -- SERVER [ARGS...]\n"
           "       %s mount --device [-r] [--run=CMD] [--timeout=TIME] URI\n"
           "       %s mount --device [-r] [--run=CMD] [--timeout=TIME] -- SERVER [ARGS...]\n",
           prog (), prog (), prog (), prog ());
}

int
cmd_mount (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "file",     no_argument,       NULL, 'F' },
    { "device",   no_argument,       NULL, 'D' },
    { "readonly", no_argument,       NULL, 'r' },
    { "run",      required_argument, NULL, 'R' },
    { "timeout",  required_argument, NULL, 't' },
    { "help",     no_argument,       NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  struct mount mt = { .mode = MODE_NONE, .timeout_ms = 60000 };
  GError *error = NULL;
  sigset_t block;
  char **pos;
  int opt, npos, i, status;

  /* Everything after the first "--" is the server's: split there
   * before getopt, which would otherwise move operands across it. */
  for (i = 1; i < argc; i++)
    if (strcmp (argv[i], "--") == 0) {
      mt.server = argv + i + 1;
      argc = i;
      break;
    }
  while ((opt = getopt_long (argc, argv, "rht:", long_options, NULL)) != -1) {
    switch (opt) {
    case 'F': mt.mode = MODE_FILE; break;
    case 'D': mt.mode = MODE_DEVICE; break;
    case 'r': mt.readonly = true; break;
    case 'R': mt.run = optarg; break;
    case 't':
      if (!r3map_parse_duration ("--timeout", optarg, &mt.timeout_ms, &error)) {
        fprintf (stderr, "%s: mount: %s\n", prog (), error->message);
        g_error_free (error);
        return 2;
      }
      break;
    case 'h':
      mount_usage (stdout);
      return EXIT_SUCCESS;
    default:
      mount_usage (stderr);
      return 2;
    }
  }
  if (mt.mode == MODE_NONE) {
    fprintf (stderr, "%s: mount: give --file or --device\n", prog ());
    mount_usage (stderr);
    return 2;
  }

  pos = argv + optind;
  npos = argc - optind;
  if (mt.server && mt.server[0] == NULL) {
    fprintf (stderr, "%s: mount: nothing after '--': give the server to "
             "run, e.g. -- nbdkit memory 1G\n", prog ());
    return 2;
  }
  if (mt.mode == MODE_FILE) {
    if (npos != (mt.server ? 1 : 2)) {
      mount_usage (stderr);
      return 2;
    }
    mt.uri = mt.server ? NULL : pos[0];
    mt.path = pos[npos - 1];
  }
  else {
    if (npos != (mt.server ? 0 : 1)) {
      mount_usage (stderr);
      return 2;
    }
    mt.uri = mt.server ? NULL : pos[0];
  }

  /* Say at once what cannot work here, before anything is started. */
  if (mt.mode == MODE_DEVICE && !have_nbd_module ()) {
    fprintf (stderr, "%s: mount --device: this kernel has no nbd module "
             "(no /sys/module/nbd): load it with 'modprobe nbd', or use "
             "--file\n", prog ());
    return EXIT_FAILURE;
  }

  sigemptyset (&block);
  sigaddset (&block, SIGINT);
  sigaddset (&block, SIGTERM);
  sigaddset (&block, SIGHUP);
  sigaddset (&block, SIGCHLD);
  sigprocmask (SIG_BLOCK, &block, &mt.oldmask);

  mt.tmpdir = g_build_filename (g_get_tmp_dir (), "r3map-mount-XXXXXX", NULL);
  if (g_mkdtemp (mt.tmpdir) == NULL) {
    fprintf (stderr, "%s: mount: %s: %s\n", prog (), mt.tmpdir,
             strerror (errno));
    g_free (mt.tmpdir);
    return EXIT_FAILURE;
  }
  mt.pidfile = g_build_filename (mt.tmpdir, "frontend.pid", NULL);

  status = EXIT_FAILURE;
  if (mt.server && start_server (&mt) == -1)
    goto out;
  if ((mt.mode == MODE_FILE ? start_file (&mt) : start_device (&mt)) == -1)
    goto out;
  if (wait_ready (&mt) == -1) {
    if (mt.frontend_pid < 0) {  /* nbdfuse died early: a dead mount? */
      mt.frontend_pid = 0;
      if (mt.mode == MODE_FILE)
        clean_dead_mount (&mt);
    }
    /* A signal before the file or device was ready is a signal all
     * the same, as the shell counts it: the mount may have appeared
     * already, only not yet been seen here. */
    if (mt.interrupted)
      status = 128 + mt.interrupted;
    goto out;
  }
  mt.mounted = true;
  status = serve (&mt);
 out:
  stop_all (&mt);
  g_free (mt.tmpdir);
  g_free (mt.sock);
  g_free (mt.pidfile);
  g_free (mt.ready);
  g_free (mt.device);
  if (mt.server)
    g_free ((char *) mt.uri);
  return status;
}
