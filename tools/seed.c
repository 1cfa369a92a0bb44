/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map seed [OPTIONS] PLUGIN [PLUGIN-ARGS...]
 *
 * Serves a disk as the source of a migration: runs
 *
 *   nbdkit -f --filter=r3map-track PLUGIN PLUGIN-ARGS... track-control=...
 *
 * listening where the options say, waits until it listens and prints
 * the URI that leechers use.  Then it returns and nbdkit goes on
 * serving, as nbdkit itself does; with --foreground it stays until it
 * gets a signal, runs --on-before-close and stops nbdkit.
 */

#include <config.h>

#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "r3map.h"

#define CMD "seed"

int
cmd_seed (int argc, char *argv[])
{
  static const struct option long_options[] = {
    R3MAP_LISTEN_OPTIONS,
    { "pid-file",        required_argument, NULL, OPT_PID_FILE },
    { "control",         required_argument, NULL, OPT_CONTROL },
    { "chunk-size",      required_argument, NULL, OPT_CHUNK_SIZE },
    { "foreground",      no_argument,       NULL, 'f' },
    { "on-before-close", required_argument, NULL, OPT_ON_BEFORE_CLOSE },
    { "help",            no_argument,       NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  struct r3map_listen listen = { 0 };
  struct r3map_server seeder = { .what = "seeder", .alive_fd = -1 };
  g_autoptr (GPtrArray) args = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *control = NULL, *on_before_close = NULL;
  g_autofree char *filter = NULL, *plugin = NULL, *uri = NULL;
  char *private = NULL;
  bool foreground = false;
  uint64_t chunk_size = 0;
  int opt, r, status = EXIT_FAILURE;

  opterr = 0;
  while ((opt = getopt_long (argc, argv, "+:" R3MAP_LISTEN_SHORT "P:fh",
                             long_options, NULL)) != -1) {
    if ((r = r3map_listen_option (&listen, opt, optarg, CMD)) != 0) {
      if (r == -1)
        goto out;
      continue;
    }
    switch (opt) {
    case OPT_PID_FILE:
      g_free (seeder.pid_file);
      seeder.pid_file = g_canonicalize_filename (optarg, NULL);
      break;
    case OPT_CONTROL:
      g_free (control);
      control = g_canonicalize_filename (optarg, NULL);
      break;
    case OPT_CHUNK_SIZE:
      if (!r3map_chunk_size_option (optarg, &chunk_size, CMD))
        goto out;
      break;
    case 'f':
      foreground = true;
      break;
    case OPT_ON_BEFORE_CLOSE:
      g_free (on_before_close);
      on_before_close = g_strdup (optarg);
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
  if (optind >= argc) {
    fprintf (stderr, "%s: %s: give the plugin that holds the disk and its "
             "arguments, for example: dir dir=/var/lib/r3map/vm1 size=20G\n",
             progname, CMD);
    goto out;
  }
  if (on_before_close && !foreground) {
    fprintf (stderr, "%s: %s: --on-before-close: runs before r3map stops "
             "the seeder, so only with --foreground\n", progname, CMD);
    goto out;
  }
  if (!r3map_listen_check (&listen, CMD) ||
      (uri = r3map_listen_uri (&listen, CMD)) == NULL ||
      (filter = r3map_filter_path ("track", CMD)) == NULL ||
      (plugin = r3map_plugin_arg (argv[optind], CMD)) == NULL)
    goto out;
  if (seeder.pid_file == NULL) {
    if ((private = r3map_private_dir (CMD)) == NULL)
      goto out;
    seeder.pid_file = g_build_filename (private, "seeder.pid", NULL);
  }

  g_ptr_array_add (args, g_strdup ("-f"));
  g_ptr_array_add (args, g_strdup ("-P"));
  g_ptr_array_add (args, g_strdup (seeder.pid_file));
  /* r3map stays, and owns it: it must not outlive us. */
  if (foreground)
    g_ptr_array_add (args, g_strdup ("--exit-with-parent"));
  r3map_listen_args (&listen, args);
  g_ptr_array_add (args, g_strdup_printf ("--filter=%s", filter));
  g_ptr_array_add (args, g_strdup (plugin));
  for (r = optind + 1; r < argc; ++r)
    g_ptr_array_add (args, g_strdup (argv[r]));
  if (control)
    g_ptr_array_add (args, g_strdup_printf ("track-control=%s", control));
  if (chunk_size)
    g_ptr_array_add (args, g_strdup_printf ("track-chunk-size=%" PRIu64,
                                            chunk_size));

  if (foreground)
    r3map_catch_signals ();
  if (!r3map_server_start (&seeder, args, !foreground, CMD))
    goto out;
  printf ("%s\n", uri);
  fflush (stdout);
  if (!foreground) {
    status = EXIT_SUCCESS;
    goto out;
  }

  if (r3map_server_wait (&seeder) == 0) {
    /* Stopped by someone else: nothing left to close. */
    r3map_server_report (&seeder, CMD, seeder.status, "");
    goto out;
  }
  status = EXIT_SUCCESS;
  if (on_before_close) {
    g_auto (GStrv) env = g_get_environ ();
    r3map_env_set (&env, "R3MAP_PHASE", "before-close");
    r3map_env_set (&env, "R3MAP_SOURCE", uri);
    if (control)
      r3map_env_set (&env, "R3MAP_CONTROL", control);
    if (!r3map_hook_run (CMD, "--on-before-close", on_before_close, env))
      status = EXIT_FAILURE;
  }
  r3map_server_stop (&seeder);

 out:
  r3map_server_release (&seeder);
  r3map_listen_clear (&listen);
  g_free (seeder.pid_file);
  r3map_remove_private_dir (private);
  return status;
}
