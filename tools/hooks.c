/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Hooks: the commands given to --on-before-sync, --on-after-sync,
 * --on-before-close and --on-chunk-is-local, where a migration meets
 * the application that uses the disk (suspend it before the seal,
 * resume it at the destination, watch the progress).  Each runs with
 * /bin/sh -c, as nbdkit runs --run, with our environment plus R3MAP_*
 * variables that say where the migration is, and is waited for: a
 * migration goes on only once its hook is done.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>

#include "r3map.h"

void
r3map_env_set (gchar ***env, const char *name, const char *value)
{
  *env = g_environ_setenv (*env, name, value, TRUE);
}

void
r3map_env_set_u64 (gchar ***env, const char *name, uint64_t value)
{
  char buf[32];

  snprintf (buf, sizeof buf, "%" PRIu64, value);
  r3map_env_set (env, name, buf);
}

void
r3map_env_set_counters (gchar ***env, const struct r3map_pull_counters *c)
{
  r3map_env_set_u64 (env, "R3MAP_SIZE", c->size);
  r3map_env_set_u64 (env, "R3MAP_CHUNK_SIZE", c->chunk_size);
  r3map_env_set_u64 (env, "R3MAP_CHUNKS_TOTAL", c->chunks_total);
  r3map_env_set_u64 (env, "R3MAP_CHUNKS_LOCAL", c->chunks_local);
  r3map_env_set_u64 (env, "R3MAP_BYTES_PULLED", c->bytes_pulled);
}

bool
r3map_hook_run (const char *cmd, const char *option, const char *command,
                gchar **env)
{
  char *argv[] = { (char *) "sh", (char *) "-c", (char *) command, NULL };
  int status;
  pid_t pid;

  r3map_end_bar ();
  fflush (NULL);
  pid = fork ();
  if (pid == -1) {
    fprintf (stderr, "%s: %s: %s: fork: %s\n", progname, cmd, option,
             g_strerror (errno));
    return false;
  }
  if (pid == 0) {
    execve ("/bin/sh", argv, env);
    fprintf (stderr, "%s: %s: %s: cannot run /bin/sh: %s\n", progname, cmd,
             option, g_strerror (errno));
    _exit (127);
  }
  /* A signal meant for the migration does not end the wait: the hook
   * (in our process group, so it got a Ctrl-C too) decides. */
  while (waitpid (pid, &status, 0) == -1)
    if (errno != EINTR) {
      fprintf (stderr, "%s: %s: %s: waitpid: %s\n", progname, cmd, option,
               g_strerror (errno));
      return false;
    }
  if (WIFEXITED (status) && WEXITSTATUS (status) == 0)
    return true;
  if (WIFEXITED (status))
    fprintf (stderr, "%s: %s: %s: the command exited with status %d\n",
             progname, cmd, option, WEXITSTATUS (status));
  else
    fprintf (stderr, "%s: %s: %s: the command was killed by signal %d\n",
             progname, cmd, option, WTERMSIG (status));
  return false;
}
