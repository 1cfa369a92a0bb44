/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map finalize [--timeout=TIME] STATUS-FILE
 *
 * Waits until the r3map-pull leecher publishing STATUS-FILE has
 * finalized: its source was sealed, the final changed set is marked
 * missing, and its clients are released.  The leecher finalizes by
 * itself as soon as its source is sealed; this command only waits for
 * it, reading the status file without disturbing the filter, so it can
 * be run any number of times (it returns at once when finalize is
 * done).  Exits 1 if the timeout passes, the leecher reports its
 * source lost, or the leecher is not running.
 */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <glib.h>

#include "parse.h"
#include "pull-state.h"
#include "r3map.h"

#define POLL_MS 2

static bool
alive (uint64_t pid)
{
  return pid > 0 && pid < INT32_MAX &&
    (kill ((pid_t) pid, 0) == 0 || errno == EPERM);
}

int
cmd_finalize (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "timeout", required_argument, NULL, 't' },
    { "help",    no_argument,       NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  uint64_t timeout_ms = 60000;
  gint64 end;
  GError *error = NULL;
  struct r3map_pull_counters c;
  int opt;

  while ((opt = getopt_long (argc, argv, "t:h", long_options, NULL)) != -1) {
    switch (opt) {
    case 't':
      if (!r3map_parse_duration ("--timeout", optarg, &timeout_ms, &error)) {
        fprintf (stderr, "%s: %s\n", progname, error->message);
        g_error_free (error);
        return 2;
      }
      break;
    case 'h':
      usage (stdout);
      return EXIT_SUCCESS;
    default:
      usage (stderr);
      return 2;
    }
  }
  if (optind != argc - 1) {
    fprintf (stderr, "%s: finalize: give the leecher's status file "
             "(its status=)\n", progname);
    return 2;
  }
  end = g_get_monotonic_time () + (gint64) timeout_ms * 1000;
  for (;;) {
    if (!r3map_pull_status_read (argv[optind], &c, &error)) {
      fprintf (stderr, "%s: %s\n", progname, error->message);
      g_error_free (error);
      return EXIT_FAILURE;
    }
    if (c.leech_finalized_ms) {
      printf ("finalized: %" PRIu64 " chunks changed at the seal, clients "
              "released %.3f ms after the sealed view answered, after %"
              PRIu64 " pre-copy rounds\n", c.leech_final_chunks,
              c.leech_finalize_us / 1000.0, c.leech_rounds);
      return EXIT_SUCCESS;
    }
    if (c.phase == R3MAP_PHASE_SOURCE_LOST) {
      fprintf (stderr, "%s: finalize: %s: the source was lost before "
               "finalize; the leecher refuses to serve its partial copy\n",
               progname, argv[optind]);
      return EXIT_FAILURE;
    }
    if (c.leech_seq == 0 && c.leech_rounds == 0 && c.phase != R3MAP_PHASE_PRECOPY &&
        c.phase != R3MAP_PHASE_SEAL_WAIT) {
      fprintf (stderr, "%s: finalize: %s: not a leecher (its source is not "
               "an r3map-track seeder)\n", progname, argv[optind]);
      return EXIT_FAILURE;
    }
    if (!alive (c.pid)) {
      fprintf (stderr, "%s: finalize: %s: the leecher (pid %" PRIu64 ") is "
               "not running\n", progname, argv[optind], c.pid);
      return EXIT_FAILURE;
    }
    if (g_get_monotonic_time () >= end) {
      fprintf (stderr, "%s: finalize: %s: not finalized within %" PRIu64
               " ms (is the source sealed?)\n", progname, argv[optind],
               timeout_ms);
      return EXIT_FAILURE;
    }
    g_usleep (POLL_MS * 1000);
  }
}
