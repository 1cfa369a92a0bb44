/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map migrate [OPTIONS] SOURCE-PLUGIN [ARGS...] -- DEST-PLUGIN [ARGS...]
 *
 * Both ends of a migration on this machine, for demos, tests, and
 * moving a live disk from one store to another:
 *
 *   1. the seeder: nbdkit --filter=r3map-track SOURCE-PLUGIN ...
 *   2. the leecher: nbdkit --filter=r3map-pull DEST-PLUGIN ...
 *      source=the seeder, wait-finalize=on; pre-copy rounds run while
 *      the source is written, until they converge and every chunk was
 *      copied once;
 *   3. --on-before-sync (the application stops writing; if it fails,
 *      the migration is cancelled before anything is sealed);
 *   4. seal the seeder through its control socket;
 *   5. wait until the leecher finalized (downtime: 4 to 5);
 *   6. --on-after-sync, with the final changed set;
 *   7. wait until every chunk is local (post-copy);
 *   8. --on-before-close, then stop the seeder, then the leecher.
 *
 * --on-chunk-is-local runs during 2 and 7 (see follow.c).  Both
 * servers are ours: started with --exit-with-parent, they never
 * outlive r3map, whatever happens to it.  A failure before the leecher
 * finalized cancels: the leecher is stopped first, the source unsealed
 * (it stays the disk of record), then 8 runs with R3MAP_RESULT=cancelled.
 * After finalize nothing is cancelled: the destination has confirmed the
 * final set; a failure then is reported and the exit status is 1.
 */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#include "r3map.h"

#define CMD "migrate"

struct migration {
  /* Options. */
  char *source_unix, *dest_unix, *control, *state, *status_file;
  char *on_before_sync, *on_after_sync, *on_before_close, *on_chunk_is_local;
  uint64_t chunk_size, timeout_ms;
  bool quiet;
  /* Run time. */
  char *private;
  char *source_uri, *dest_uri;
  struct r3map_server seeder, leecher;
  struct r3map_follow follow;
  gchar **env;
  bool sealed, hooks_ok;
  bool keep_private;            /* it holds the only state file */
};

static bool
converged (const struct r3map_pull_counters *c)
{
  /* Pre-copy has nothing more to gain once the rounds converged and
   * the whole disk was copied; a seal by someone else ends it too. */
  return (c->phase == R3MAP_PHASE_SEAL_WAIT &&
          c->chunks_local == c->chunks_total) || c->leech_finalized_ms != 0;
}

static bool
finalized (const struct r3map_pull_counters *c)
{
  return c->leech_finalized_ms != 0;
}

static bool
complete (const struct r3map_pull_counters *c)
{
  return c->phase == R3MAP_PHASE_COMPLETE;
}

static uint64_t
realtime_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
say (const struct migration *m, const char *fmt, ...)
  G_GNUC_PRINTF (2, 3);

static void
say (const struct migration *m, const char *fmt, ...)
{
  va_list ap;

  if (m->quiet)
    return;
  r3map_end_bar ();
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  fflush (stdout);
}

static bool
hook (struct migration *m, const char *phase, const char *option,
      const char *command, const char *result)
{
  g_auto (GStrv) env = NULL;

  if (command == NULL)
    return true;
  env = g_strdupv (m->env);
  r3map_env_set (&env, "R3MAP_PHASE", phase);
  if (m->follow.c.chunks_total)
    r3map_env_set_counters (&env, &m->follow.c);
  if (strcmp (phase, "after-sync") == 0)
    r3map_env_set_final (&env, &m->follow.c);
  if (result)
    r3map_env_set (&env, "R3MAP_RESULT", result);
  if (!r3map_hook_run (CMD, option, command, env)) {
    m->hooks_ok = false;
    return false;
  }
  return true;
}

/* Why a wait ended early, in one line. */
static void
wait_failed (struct migration *m, enum r3map_follow_end end, const char *what)
{
  switch (end) {
  case R3MAP_FOLLOW_GONE:
    if (!r3map_server_running (&m->leecher)) {
      g_autofree char *when = g_strdup_printf ("before %s", what);
      r3map_server_report (&m->leecher, CMD, m->leecher.status, when);
    }
    else
      fprintf (stderr, "%s: %s: the leecher stopped before %s\n",
               progname, CMD, what);
    break;
  case R3MAP_FOLLOW_INTERRUPTED:
    fprintf (stderr, "%s: %s: interrupted before %s\n", progname, CMD, what);
    break;
  case R3MAP_FOLLOW_TIMEOUT:
    fprintf (stderr, "%s: %s: --timeout: %" PRIu64 " ms passed before %s\n",
             progname, CMD, m->timeout_ms, what);
    break;
  case R3MAP_FOLLOW_DONE:
  case R3MAP_FOLLOW_ERROR:
    break;
  }
}

/* A failure before finalize: the source stays the disk of record. */
static void
cancel (struct migration *m)
{
  g_autoptr (GError) error = NULL;
  char answer[256], err[256];
  struct r3map_pull_counters c;

  r3map_server_stop (&m->leecher);
  /* A leecher that finalized after all holds the final set: the
   * source must not take writes it would never see. */
  if (m->sealed &&
      r3map_pull_status_read (m->status_file, &c, &error) &&
      c.leech_finalized_ms == 0) {
    if (r3map_control (m->control, "unseal", answer, sizeof answer,
                       err, sizeof err))
      m->sealed = false;
    else
      fprintf (stderr, "%s: %s: unseal %s: %s\n", progname, CMD,
               m->control, err);
  }
  hook (m, "before-close", "--on-before-close", m->on_before_close,
        m->sealed ? "failed" : "cancelled");
  r3map_server_stop (&m->seeder);
  m->keep_private = m->sealed;
  if (m->sealed)
    fprintf (stderr, "%s: %s: failed with the source sealed: the "
             "destination's state file %s says which chunks it holds\n",
             progname, CMD, m->state);
  else
    fprintf (stderr, "%s: %s: cancelled: the source was not changed by "
             "the migration\n", progname, CMD);
}

static char *
file_in (struct migration *m, char *given, const char *name)
{
  return given ? given : g_build_filename (m->private, name, NULL);
}

static char *
unix_uri (const char *sock)
{
  g_autofree char *esc = g_uri_escape_string (sock, "/", FALSE);

  return g_strdup_printf ("nbd+unix:///?socket=%s", esc);
}

static int
run (struct migration *m, char **src, int nsrc, char **dst, int ndst)
{
  g_autoptr (GPtrArray) sargs = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) dargs = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *track = NULL, *pull = NULL, *splugin = NULL,
    *dplugin = NULL;
  char answer[256], err[256], pulled[32], size[32];
  enum r3map_follow_end end;
  uint64_t t_seal, downtime_ms, seq = 0;
  gint64 t_start, t_end;
  int i;

  if ((track = r3map_filter_path ("track", CMD)) == NULL ||
      (pull = r3map_filter_path ("pull", CMD)) == NULL ||
      (splugin = r3map_plugin_arg (src[0], CMD)) == NULL ||
      (dplugin = r3map_plugin_arg (dst[0], CMD)) == NULL ||
      (m->private = r3map_private_dir (CMD)) == NULL)
    return EXIT_FAILURE;
  m->source_unix = file_in (m, m->source_unix, "source.sock");
  m->dest_unix = file_in (m, m->dest_unix, "dest.sock");
  m->control = file_in (m, m->control, "source.ctl");
  m->state = file_in (m, m->state, "dest.state");
  m->status_file = file_in (m, m->status_file, "dest.status");
  m->seeder.pid_file = g_build_filename (m->private, "source.pid", NULL);
  m->leecher.pid_file = g_build_filename (m->private, "dest.pid", NULL);
  if (!r3map_unix_socket_free (m->source_unix, "--source-unix", CMD) ||
      !r3map_unix_socket_free (m->dest_unix, "--dest-unix", CMD))
    return EXIT_FAILURE;
  /* The status file of an earlier run would be read as this one's
   * until the filter replaces it. */
  if (unlink (m->status_file) == -1 && errno != ENOENT) {
    fprintf (stderr, "%s: %s: --status=%s: %s\n", progname, CMD,
             m->status_file, g_strerror (errno));
    return EXIT_FAILURE;
  }
  m->source_uri = unix_uri (m->source_unix);
  m->dest_uri = unix_uri (m->dest_unix);

  g_ptr_array_add (sargs, g_strdup ("-f"));
  g_ptr_array_add (sargs, g_strdup ("--exit-with-parent"));
  g_ptr_array_add (sargs, g_strdup ("-P"));
  g_ptr_array_add (sargs, g_strdup (m->seeder.pid_file));
  g_ptr_array_add (sargs, g_strdup ("-U"));
  g_ptr_array_add (sargs, g_strdup (m->source_unix));
  g_ptr_array_add (sargs, g_strdup_printf ("--filter=%s", track));
  g_ptr_array_add (sargs, g_strdup (splugin));
  for (i = 1; i < nsrc; ++i)
    g_ptr_array_add (sargs, g_strdup (src[i]));
  g_ptr_array_add (sargs, g_strdup_printf ("track-control=%s", m->control));
  if (m->chunk_size)
    g_ptr_array_add (sargs, g_strdup_printf ("track-chunk-size=%" PRIu64,
                                             m->chunk_size));

  g_ptr_array_add (dargs, g_strdup ("-f"));
  g_ptr_array_add (dargs, g_strdup ("--exit-with-parent"));
  g_ptr_array_add (dargs, g_strdup ("-P"));
  g_ptr_array_add (dargs, g_strdup (m->leecher.pid_file));
  g_ptr_array_add (dargs, g_strdup ("-U"));
  g_ptr_array_add (dargs, g_strdup (m->dest_unix));
  g_ptr_array_add (dargs, g_strdup_printf ("--filter=%s", pull));
  g_ptr_array_add (dargs, g_strdup (dplugin));
  for (i = 1; i < ndst; ++i)
    g_ptr_array_add (dargs, g_strdup (dst[i]));
  g_ptr_array_add (dargs, g_strdup_printf ("source=%s", m->source_uri));
  g_ptr_array_add (dargs, g_strdup ("wait-finalize=on"));
  g_ptr_array_add (dargs, g_strdup_printf ("state=%s", m->state));
  g_ptr_array_add (dargs, g_strdup_printf ("status=%s", m->status_file));
  if (m->chunk_size)
    g_ptr_array_add (dargs, g_strdup_printf ("chunk-size=%" PRIu64,
                                             m->chunk_size));

  m->env = g_get_environ ();
  r3map_env_set (&m->env, "R3MAP_SOURCE", m->source_uri);
  r3map_env_set (&m->env, "R3MAP_DEST", m->dest_uri);
  r3map_env_set (&m->env, "R3MAP_CONTROL", m->control);
  r3map_env_set (&m->env, "R3MAP_STATUS", m->status_file);
  m->follow.cmd = CMD;
  m->follow.status_file = m->status_file;
  m->follow.leecher = &m->leecher;
  m->follow.on_chunk_is_local = m->on_chunk_is_local;
  m->follow.env = m->env;

  r3map_catch_signals ();
  if (!r3map_server_start (&m->seeder, sargs, false, CMD))
    return EXIT_FAILURE;
  say (m, "source:      %s\n", m->source_uri);
  t_start = g_get_monotonic_time ();
  if (!r3map_server_start (&m->leecher, dargs, false, CMD)) {
    /* The source may be in use already: the same way out as later. */
    cancel (m);
    return EXIT_FAILURE;
  }
  say (m, "destination: %s\n", m->dest_uri);

  /* Pre-copy, while the source is in use. */
  end = r3map_follow (&m->follow, converged, m->timeout_ms);
  if (end != R3MAP_FOLLOW_DONE) {
    wait_failed (m, end, "pre-copy converged");
    cancel (m);
    return EXIT_FAILURE;
  }
  say (m, "converged:   after %" PRIu64 " pre-copy rounds\n",
       m->follow.c.leech_rounds);

  if (!hook (m, "before-sync", "--on-before-sync", m->on_before_sync, NULL) ||
      r3map_interrupted) {
    if (r3map_interrupted)
      fprintf (stderr, "%s: %s: interrupted before the seal\n", progname, CMD);
    cancel (m);
    return EXIT_FAILURE;
  }

  /* The seal: from here until the leecher releases its clients is the
   * downtime. */
  t_seal = realtime_ms ();
  if (!r3map_control (m->control, "seal", answer, sizeof answer,
                      err, sizeof err)) {
    fprintf (stderr, "%s: %s: seal %s: %s\n", progname, CMD, m->control, err);
    cancel (m);
    return EXIT_FAILURE;
  }
  m->sealed = true;
  sscanf (answer, "sealed seq=%" SCNu64, &seq);
  say (m, "sealed:      the source's last write is number %" PRIu64 "\n",
       seq);
  r3map_env_set_u64 (&m->env, "R3MAP_SEAL_SEQ", seq);
  m->follow.env = m->env;

  m->follow.hold_hook = true;
  end = r3map_follow (&m->follow, finalized, m->timeout_ms);
  m->follow.hold_hook = false;
  if (end != R3MAP_FOLLOW_DONE) {
    wait_failed (m, end, "the leecher finalized");
    cancel (m);
    return EXIT_FAILURE;
  }
  downtime_ms = m->follow.c.leech_finalized_ms > t_seal ?
    m->follow.c.leech_finalized_ms - t_seal : 0;
  r3map_env_set_u64 (&m->env, "R3MAP_DOWNTIME_MS", downtime_ms);
  m->follow.env = m->env;
  if (!m->quiet) {
    r3map_end_bar ();
    r3map_print_finalized (&m->follow.c);
  }
  hook (m, "after-sync", "--on-after-sync", m->on_after_sync, NULL);

  /* Post-copy. */
  end = r3map_follow (&m->follow, complete, m->timeout_ms);
  t_end = g_get_monotonic_time ();
  if (end != R3MAP_FOLLOW_DONE) {
    wait_failed (m, end, "every chunk was local");
    hook (m, "before-close", "--on-before-close", m->on_before_close,
          "failed");
    r3map_server_stop (&m->seeder);
    r3map_server_stop (&m->leecher);
    m->keep_private = true;
    fprintf (stderr, "%s: %s: failed after finalize: the destination's "
             "state file %s says which chunks it holds, the source's store "
             "has the rest\n", progname, CMD, m->state);
    return EXIT_FAILURE;
  }
  hook (m, "before-close", "--on-before-close", m->on_before_close,
        "migrated");
  r3map_server_stop (&m->seeder);
  r3map_server_stop (&m->leecher);

  r3map_end_bar ();
  human (m->follow.c.bytes_pulled, pulled, sizeof pulled);
  human (m->follow.c.size, size, sizeof size);
  printf ("downtime:    %" PRIu64 " ms (seal sent -> destination released)\n",
          downtime_ms);
  printf ("total time:  %" PRId64 " ms (destination start -> every chunk "
          "local)\n", (t_end - t_start) / 1000);
  printf ("bytes moved: %s for a %s disk\n", pulled, size);
  return m->hooks_ok && !m->follow.hook_failed ? EXIT_SUCCESS : EXIT_FAILURE;
}

int
cmd_migrate (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "source-unix",       required_argument, NULL, OPT_SOURCE_UNIX },
    { "dest-unix",         required_argument, NULL, OPT_DEST_UNIX },
    { "control",           required_argument, NULL, OPT_CONTROL },
    { "state",             required_argument, NULL, OPT_STATE },
    { "status",            required_argument, NULL, OPT_STATUS },
    { "chunk-size",        required_argument, NULL, OPT_CHUNK_SIZE },
    { "interval",          required_argument, NULL, OPT_INTERVAL },
    { "timeout",           required_argument, NULL, OPT_TIMEOUT },
    { "quiet",             no_argument,       NULL, 'q' },
    { "on-before-sync",    required_argument, NULL, OPT_ON_BEFORE_SYNC },
    { "on-after-sync",     required_argument, NULL, OPT_ON_AFTER_SYNC },
    { "on-before-close",   required_argument, NULL, OPT_ON_BEFORE_CLOSE },
    { "on-chunk-is-local", required_argument, NULL, OPT_ON_CHUNK_IS_LOCAL },
    { "help",              no_argument,       NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  struct migration m = {
    .seeder = { .what = "seeder", .alive_fd = -1 },
    .leecher = { .what = "leecher", .alive_fd = -1 },
    .follow = { .interval_ms = 500 },
    .hooks_ok = true,
  };
  char **slot;
  int opt, sep, status = EXIT_FAILURE;

  opterr = 0;
  while ((opt = getopt_long (argc, argv, "+:qh", long_options, NULL)) != -1) {
    slot = NULL;
    switch (opt) {
    case OPT_SOURCE_UNIX: slot = &m.source_unix; break;
    case OPT_DEST_UNIX:   slot = &m.dest_unix; break;
    case OPT_CONTROL:     slot = &m.control; break;
    case OPT_STATE:       slot = &m.state; break;
    case OPT_STATUS:      slot = &m.status_file; break;
    case OPT_ON_BEFORE_SYNC:    slot = &m.on_before_sync; break;
    case OPT_ON_AFTER_SYNC:     slot = &m.on_after_sync; break;
    case OPT_ON_BEFORE_CLOSE:   slot = &m.on_before_close; break;
    case OPT_ON_CHUNK_IS_LOCAL: slot = &m.on_chunk_is_local; break;
    case OPT_CHUNK_SIZE:
      if (!r3map_chunk_size_option (optarg, &m.chunk_size, CMD))
        goto out;
      break;
    case OPT_INTERVAL:
      if (!r3map_duration_option ("--interval", optarg,
                                  &m.follow.interval_ms, CMD))
        goto out;
      break;
    case OPT_TIMEOUT:
      if (!r3map_duration_option ("--timeout", optarg, &m.timeout_ms, CMD))
        goto out;
      break;
    case 'q':
      m.quiet = m.follow.quiet = true;
      break;
    case 'h':
      usage (stdout);
      status = EXIT_SUCCESS;
      goto out;
    default:
      r3map_option_error (CMD, argv, opt);
      goto out;
    }
    if (slot) {
      g_free (*slot);
      /* Paths are made absolute: nbdkit and the hooks see them. */
      *slot = opt >= OPT_ON_BEFORE_SYNC ? g_strdup (optarg)
        : g_canonicalize_filename (optarg, NULL);
    }
  }
  for (sep = optind; sep < argc && strcmp (argv[sep], "--") != 0; ++sep)
    ;
  if (sep == optind || sep >= argc - 1) {
    fprintf (stderr, "%s: %s: give the source's plugin and arguments, "
             "then --, then the destination's, for example: dir "
             "dir=/srv/a size=1G -- dir dir=/srv/b size=1G\n", progname, CMD);
    goto out;
  }
  status = run (&m, &argv[optind], sep - optind,
                &argv[sep + 1], argc - sep - 1);

 out:
  r3map_end_bar ();
  g_free (m.source_unix);
  g_free (m.dest_unix);
  g_free (m.control);
  g_free (m.state);
  g_free (m.status_file);
  g_free (m.on_before_sync);
  g_free (m.on_after_sync);
  g_free (m.on_before_close);
  g_free (m.on_chunk_is_local);
  g_free (m.source_uri);
  g_free (m.dest_uri);
  g_free (m.seeder.pid_file);
  g_free (m.leecher.pid_file);
  g_strfreev (m.env);
  if (m.keep_private)
    g_free (m.private);
  else
    r3map_remove_private_dir (m.private);
  return status;
}
