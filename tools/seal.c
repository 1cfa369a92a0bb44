/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map seal [--unseal] CONTROL...
 *
 * Seals the r3map-track seeders whose control sockets are given, all
 * at once (one thread each), so that the disks of one VM are sealed
 * together: each answers once the writes it had in flight are done.
 * Prints one line per socket: "CONTROL: sealed seq=N".  Exits 0 only if
 * every one answered.
 */

#include <config.h>

#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <glib.h>

#include "r3map.h"

struct one {
  const char *path;
  const char *command;
  pthread_t thread;
  char answer[256];
  char error[256];
};

static void *
ask (void *arg)
{
  struct one *o = arg;

  r3map_control (o->path, o->command, o->answer, sizeof o->answer,
                 o->error, sizeof o->error);
  return NULL;
}

int
cmd_seal (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "unseal", no_argument, NULL, 'u' },
    { "help",   no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  const char *command = "seal";
  g_autofree struct one *all = NULL;
  int opt, i, n, status = EXIT_SUCCESS;

  while ((opt = getopt_long (argc, argv, "uh", long_options, NULL)) != -1) {
    switch (opt) {
    case 'u':
      command = "unseal";
      break;
    case 'h':
      usage (stdout);
      return EXIT_SUCCESS;
    default:
      usage (stderr);
      return 2;
    }
  }
  n = argc - optind;
  if (n < 1) {
    fprintf (stderr, "%s: seal: give the control socket of each disk "
             "(the seeder's track-control=)\n", progname);
    return 2;
  }
  all = g_new0 (struct one, n);
  for (i = 0; i < n; ++i) {
    all[i].path = argv[optind + i];
    all[i].command = command;
    if (pthread_create (&all[i].thread, NULL, ask, &all[i]) != 0) {
      fprintf (stderr, "%s: seal: cannot start a thread\n", progname);
      return EXIT_FAILURE;
    }
  }
  for (i = 0; i < n; ++i) {
    pthread_join (all[i].thread, NULL);
    if (all[i].error[0]) {
      fprintf (stderr, "%s: %s %s: %s\n", progname, command, all[i].path,
               all[i].error);
      status = EXIT_FAILURE;
    }
    else
      printf ("%s: %s\n", all[i].path, all[i].answer);
  }
  return status;
}
