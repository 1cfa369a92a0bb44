/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map leech [OPTIONS] SOURCE-URI PLUGIN [PLUGIN-ARGS...]
 *
 * The destination of a migration: runs
 *
 *   nbdkit -f --filter=r3map-pull PLUGIN PLUGIN-ARGS... source=SOURCE-URI
 *          state=... status=...
 *
 * waits until it listens, prints the URI its clients use, and follows
 * its status file with the progress bar of `r3map status --follow'
 * until every chunk is local (running --on-after-sync when it
 * finalizes and --on-chunk-is-local as chunks arrive); then returns,
 * and nbdkit goes on serving.  With --detach it returns at once.
 */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "parse.h"
#include "r3map.h"

#define CMD "leech"

static bool
complete (const struct r3map_pull_counters *c)
{
  return c->phase == R3MAP_PHASE_COMPLETE;
}

static bool
complete_or_finalized (const struct r3map_pull_counters *c)
{
  return complete (c) || c->leech_finalized_ms != 0;
}

void
r3map_print_finalized (const struct r3map_pull_counters *c)
{
  printf ("finalized: %" PRIu64 " chunks changed at the seal, clients "
          "released %.3f ms after the sealed view answered, after %"
          PRIu64 " pre-copy rounds\n", c->leech_final_chunks,
          c->leech_finalize_us / 1000.0, c->leech_rounds);
  fflush (stdout);
}

/* The final changed set, for --on-after-sync. */
void
r3map_env_set_final (gchar ***env, const struct r3map_pull_counters *c)
{
  r3map_env_set_u64 (env, "R3MAP_DIRTY_CHUNKS", c->leech_final_chunks);
  r3map_env_set_u64 (env, "R3MAP_DIRTY_BYTES",
                     MIN (c->leech_final_chunks * c->chunk_size, c->size));
  r3map_env_set_u64 (env, "R3MAP_PRECOPY_ROUNDS", c->leech_rounds);
}

int
cmd_leech (int argc, char *argv[])
{
  static const struct option long_options[] = {
    R3MAP_LISTEN_OPTIONS,
    { "pid-file",          required_argument, NULL, OPT_PID_FILE },
    { "state",             required_argument, NULL, OPT_STATE },
    { "status",            required_argument, NULL, OPT_STATUS },
    { "chunk-size",        required_argument, NULL, OPT_CHUNK_SIZE },
    { "detach",            no_argument,       NULL, 'd' },
    { "interval",          required_argument, NULL, OPT_INTERVAL },
    { "quiet",             no_argument,       NULL, 'q' },
    { "on-after-sync",     required_argument, NULL, OPT_ON_AFTER_SYNC },
    { "on-chunk-is-local", required_argument, NULL, OPT_ON_CHUNK_IS_LOCAL },
    { "help",              no_argument,       NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  struct r3map_listen listen = { 0 };
  struct r3map_server leecher = { .what = "leecher", .alive_fd = -1 };
  struct r3map_follow follow = { .cmd = CMD, .leecher = &leecher,
                                 .interval_ms = 500 };
  struct r3map_nbd_uri parsed = { 0 };
  g_autoptr (GPtrArray) args = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GError) error = NULL;
  g_autofree char *state = NULL, *status_file = NULL;
  g_autofree char *on_after_sync = NULL, *on_chunk_is_local = NULL;
  g_autofree char *filter = NULL, *plugin = NULL, *uri = NULL;
  g_auto (GStrv) env = NULL;
  const char *source;
  char *private = NULL;
  bool detach = false, synced = false, hooks_ok = true;
  uint64_t chunk_size = 0;
  gint64 t_start;
  int opt, r, status = EXIT_FAILURE;

  opterr = 0;
  while ((opt = getopt_long (argc, argv, "+:" R3MAP_LISTEN_SHORT "P:dqh",
                             long_options, NULL)) != -1) {
    if ((r = r3map_listen_option (&listen, opt, optarg, CMD)) != 0) {
      if (r == -1)
        goto out;
      continue;
    }
    switch (opt) {
    case OPT_PID_FILE:
      g_free (leecher.pid_file);
      leecher.pid_file = g_canonicalize_filename (optarg, NULL);
      break;
    case OPT_STATE:
      g_free (state);
      state = g_canonicalize_filename (optarg, NULL);
      break;
    case OPT_STATUS:
      g_free (status_file);
      status_file = g_canonicalize_filename (optarg, NULL);
      break;
    case OPT_CHUNK_SIZE:
      if (!r3map_chunk_size_option (optarg, &chunk_size, CMD))
        goto out;
      break;
    case 'd':
      detach = true;
      break;
    case OPT_INTERVAL:
      if (!r3map_duration_option ("--interval", optarg, &follow.interval_ms,
                                  CMD))
        goto out;
      break;
    case 'q':
      follow.quiet = true;
      break;
    case OPT_ON_AFTER_SYNC:
      g_free (on_after_sync);
      on_after_sync = g_strdup (optarg);
      break;
    case OPT_ON_CHUNK_IS_LOCAL:
      g_free (on_chunk_is_local);
      on_chunk_is_local = g_strdup (optarg);
      break;
    case 'h':
      usage (stdout);
      status = EXIT_SUCCESS;
      goto out;
    default:
      r3map_option_error (CMD, argv, opt);
      goto out;
    }
  }
  if (argc - optind < 2) {
    fprintf (stderr, "%s: %s: give the source's URI, then the plugin that "
             "holds the local copy and its arguments, for example: "
             "nbd://src:10809/ dir dir=/var/lib/r3map/vm1 size=20G\n",
             progname, CMD);
    goto out;
  }
  source = argv[optind];
  if (!r3map_parse_nbd_uri ("SOURCE-URI", source, &parsed, &error)) {
    fprintf (stderr, "%s: %s: %s\n", progname, CMD, error->message);
    goto out;
  }
  r3map_nbd_uri_clear (&parsed);
  if (detach && (on_after_sync || on_chunk_is_local)) {
    fprintf (stderr, "%s: %s: --detach: the hooks run while r3map follows "
             "the pull, so not with --detach\n", progname, CMD);
    goto out;
  }
  if (!r3map_listen_check (&listen, CMD) ||
      (uri = r3map_listen_uri (&listen, CMD)) == NULL ||
      (filter = r3map_filter_path ("pull", CMD)) == NULL ||
      (plugin = r3map_plugin_arg (argv[optind + 1], CMD)) == NULL)
    goto out;
  if (leecher.pid_file == NULL || (status_file == NULL && !detach)) {
    if ((private = r3map_private_dir (CMD)) == NULL)
      goto out;
    if (leecher.pid_file == NULL)
      leecher.pid_file = g_build_filename (private, "leecher.pid", NULL);
    if (status_file == NULL && !detach)
      status_file = g_build_filename (private, "leecher.status", NULL);
  }

  g_ptr_array_add (args, g_strdup ("-f"));
  g_ptr_array_add (args, g_strdup ("-P"));
  g_ptr_array_add (args, g_strdup (leecher.pid_file));
  r3map_listen_args (&listen, args);
  g_ptr_array_add (args, g_strdup_printf ("--filter=%s", filter));
  g_ptr_array_add (args, g_strdup (plugin));
  for (r = optind + 2; r < argc; ++r)
    g_ptr_array_add (args, g_strdup (argv[r]));
  g_ptr_array_add (args, g_strdup_printf ("source=%s", source));
  if (state)
    g_ptr_array_add (args, g_strdup_printf ("state=%s", state));
  if (status_file)
    g_ptr_array_add (args, g_strdup_printf ("status=%s", status_file));
  if (chunk_size)
    g_ptr_array_add (args, g_strdup_printf ("chunk-size=%" PRIu64,
                                            chunk_size));

  /* The one of an earlier run would be read as this one's until the
   * filter replaces it. */
  if (status_file && unlink (status_file) == -1 && errno != ENOENT) {
    fprintf (stderr, "%s: %s: --status=%s: %s\n", progname, CMD,
             status_file, g_strerror (errno));
    goto out;
  }
  r3map_catch_signals ();
  t_start = g_get_monotonic_time ();
  if (!r3map_server_start (&leecher, args, true, CMD))
    goto out;
  printf ("%s\n", uri);
  fflush (stdout);
  if (detach) {
    status = EXIT_SUCCESS;
    goto out;
  }

  env = g_get_environ ();
  r3map_env_set (&env, "R3MAP_SOURCE", source);
  r3map_env_set (&env, "R3MAP_DEST", uri);
  r3map_env_set (&env, "R3MAP_STATUS", status_file);
  follow.status_file = status_file;
  follow.on_chunk_is_local = on_chunk_is_local;
  follow.env = env;
  for (;;) {
    enum r3map_follow_end end =
      r3map_follow (&follow, synced ? complete : complete_or_finalized, 0);

    if (end == R3MAP_FOLLOW_GONE) {
      fprintf (stderr, "%s: %s: the leecher stopped before every chunk was "
               "local\n", progname, CMD);
      goto out;
    }
    if (end == R3MAP_FOLLOW_INTERRUPTED) {
      fprintf (stderr, "%s: %s: interrupted: the leecher (nbdkit pid %d) "
               "goes on\n", progname, CMD, (int) leecher.pid);
      goto out;
    }
    if (end != R3MAP_FOLLOW_DONE)
      goto out;
    if (!synced && follow.c.leech_finalized_ms) {
      synced = true;
      r3map_end_bar ();
      r3map_print_finalized (&follow.c);
      if (on_after_sync) {
        g_auto (GStrv) henv = g_strdupv (env);
        r3map_env_set (&henv, "R3MAP_PHASE", "after-sync");
        r3map_env_set_counters (&henv, &follow.c);
        r3map_env_set_final (&henv, &follow.c);
        if (!r3map_hook_run (CMD, "--on-after-sync", on_after_sync, henv))
          hooks_ok = false;
      }
    }
    if (complete (&follow.c))
      break;
  }
  {
    char pulled[32], size[32];

    r3map_end_bar ();
    human (follow.c.bytes_pulled, pulled, sizeof pulled);
    human (follow.c.size, size, sizeof size);
    printf ("pulled: %s for a %s disk in %" PRId64 " ms\n", pulled, size,
            (g_get_monotonic_time () - t_start) / 1000);
  }
  status = hooks_ok && !follow.hook_failed ? EXIT_SUCCESS : EXIT_FAILURE;

 out:
  r3map_end_bar ();
  r3map_listen_clear (&listen);
  g_free (leecher.pid_file);
  r3map_remove_private_dir (private);
  return status;
}
