/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Checking the values of options that seed, leech and migrate share,
 * before anything starts: a bad one is one line naming the option, and
 * nbdkit is never run with it.
 */

#include <config.h>

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include <glib.h>

#include "parse.h"
#include "r3map.h"

/* The rule of track-chunk-size= and chunk-size=, which must agree. */
bool
r3map_chunk_size_option (const char *arg, uint64_t *ret, const char *cmd)
{
  g_autoptr (GError) error = NULL;

  if (!r3map_parse_size ("--chunk-size", arg, ret, &error)) {
    fprintf (stderr, "%s: %s: %s\n", progname, cmd, error->message);
    return false;
  }
  if (!r3map_is_power_of_2 (*ret) || *ret < 4096 || *ret > 64 << 20) {
    fprintf (stderr, "%s: %s: --chunk-size=%s: must be a power of 2 from "
             "4K to 64M\n", progname, cmd, arg);
    return false;
  }
  return true;
}

bool
r3map_duration_option (const char *option, const char *arg,
                       uint64_t *ret_ms, const char *cmd)
{
  g_autoptr (GError) error = NULL;

  if (!r3map_parse_duration (option, arg, ret_ms, &error)) {
    fprintf (stderr, "%s: %s: %s\n", progname, cmd, error->message);
    return false;
  }
  return true;
}

/* getopt_long said '?' (unknown) or ':' (no value), with opterr = 0 so
 * that the line is ours. */
void
r3map_option_error (const char *cmd, char **argv, int opt)
{
  const char *arg = argv[optind - 1];

  if (opt == ':')
    fprintf (stderr, "%s: %s: %s needs a value\n", progname, cmd, arg);
  else if (optopt && arg[0] == '-' && arg[1] == '-')
    fprintf (stderr, "%s: %s: %s: the option takes no value\n",
             progname, cmd, arg);
  else if (optopt)
    fprintf (stderr, "%s: %s: unknown option -%c (see %s --help)\n",
             progname, cmd, optopt, progname);
  else
    fprintf (stderr, "%s: %s: unknown option %s (see %s --help)\n",
             progname, cmd, arg, progname);
}
