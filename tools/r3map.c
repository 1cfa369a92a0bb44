/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The r3map command.  Subcommands:
 *
 *   r3map status [--follow] [--interval=TIME] FILE
 *       FILE is the status file of a running filter (status=) or a
 *       state file (state=).  It is read without locks and without
 *       disturbing the filter.
 *   r3map seal [--unseal] CONTROL...       (seal.c)
 *   r3map finalize [--timeout=TIME] STATUS (finalize.c)
 *   r3map seed [OPTIONS] PLUGIN [ARGS...]   (seed.c)
 *   r3map leech [OPTIONS] SOURCE-URI PLUGIN [ARGS...]   (leech.c)
 *   r3map migrate [OPTIONS] PLUGIN [ARGS...] -- PLUGIN [ARGS...]
 *                                          (migrate.c)
 *   r3map mount --file|--device ...        (mount.c)
 */

#include <config.h>

#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "parse.h"
#include "pull-state.h"
#include "r3map.h"

const char *progname = "r3map";

void
usage (FILE *fp)
{
  fprintf (fp,
           "usage: %s status [--follow] [--interval=TIME] [--json] FILE\n"
           "       %s seal [--unseal] CONTROL...\n"
           "       %s finalize [--timeout=TIME] STATUS-FILE\n"
           "       %s seed [-U SOCK | -p PORT [--ip=ADDR]] [--tls=MODE]\n"
           "            [--tls-psk=FILE | --tls-certificates=DIR]\n"
           "            [--control=SOCK] [-P PIDFILE] [--chunk-size=SIZE]\n"
           "            [-f [--on-before-close=CMD]] PLUGIN [ARGS...]\n"
           "       %s leech [-U SOCK | -p PORT [--ip=ADDR]] [--tls...]\n"
           "            [--state=FILE] [--status=FILE] [-P PIDFILE]\n"
           "            [--chunk-size=SIZE] [--interval=TIME] [-q]\n"
           "            [-d | [--on-after-sync=CMD] [--on-chunk-is-local=CMD]]\n"
           "            SOURCE-URI PLUGIN [ARGS...]\n"
           "       %s migrate [--source-unix=SOCK] [--dest-unix=SOCK]\n"
           "            [--control=SOCK] [--state=FILE] [--status=FILE]\n"
           "            [--chunk-size=SIZE] [--interval=TIME] [--timeout=TIME]\n"
           "            [-q] [--on-before-sync=CMD] [--on-after-sync=CMD]\n"
           "            [--on-before-close=CMD] [--on-chunk-is-local=CMD]\n"
           "            SOURCE-PLUGIN [ARGS...] -- DEST-PLUGIN [ARGS...]\n"
           "       %s mount --file [-r] [--run=CMD] URI PATH\n"
           "       %s mount --device [-r] [--run=CMD] URI\n"
           "       %s --help | --version\n"
           "\n"
           "status    print the counters of a running r3map-pull filter\n"
           "          (its status= file) or what a state= file records\n"
           "seal      seal (or unseal) r3map-track seeders through their\n"
           "          control sockets (track-control=), all at once\n"
           "finalize  wait until an r3map-pull leecher has finalized\n"
           "seed      serve a disk as the source of a migration (nbdkit\n"
           "          with the r3map-track filter) and print its URI\n"
           "leech     pull a disk from a seeder into a local store (nbdkit\n"
           "          with the r3map-pull filter), following its progress\n"
           "migrate   migrate a disk between two stores on this machine:\n"
           "          seed, leech, seal, finalize, with hooks\n"
           "mount     an export as a file (FUSE) or a block device until a\n"
           "          signal; with '-- SERVER ARGS' it runs the server too\n"
           "\n"
           "PLUGIN is dir, s3 or redis for r3map's plugins, or any nbdkit\n"
           "plugin.  See r3map(1).\n",
           progname, progname, progname, progname, progname, progname,
           progname, progname, progname);
}

/* Bytes for people: 1.5 GiB, 445 MiB, 12 KiB, 100 B. */
void
human (uint64_t n, char *buf, size_t len)
{
  static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  double v = n;
  unsigned u = 0;

  while (v >= 1024 && u < G_N_ELEMENTS (units) - 1) {
    v /= 1024;
    u++;
  }
  if (u == 0 || v >= 100)
    snprintf (buf, len, "%.0f %s", v, units[u]);
  else
    snprintf (buf, len, "%.1f %s", v, units[u]);
}

static unsigned
percent (const struct r3map_pull_counters *c)
{
  return c->chunks_total ? c->chunks_local * 100 / c->chunks_total : 0;
}

static void
print_counters (const struct r3map_pull_counters *c)
{
  char local[32], size[32], pulled[32], pushed[32], prate[32], urate[32];
  uint64_t local_bytes = MIN (c->chunks_local * c->chunk_size, c->size);
  bool alive = r3map_process_alive (c->pid);

  human (local_bytes, local, sizeof local);
  human (c->size, size, sizeof size);
  human (c->bytes_pulled, pulled, sizeof pulled);
  human (c->bytes_pushed, pushed, sizeof pushed);
  human (c->pull_rate, prate, sizeof prate);
  human (c->push_rate, urate, sizeof urate);
  printf ("phase:     %s%s\n",
          r3map_pull_phase_name (c->phase),
          !alive && c->phase != R3MAP_PHASE_STOPPED ? " (not running)" : "");
  printf ("local:     %s of %s, %" PRIu64 " of %" PRIu64 " chunks (%u%%)\n",
          local, size, c->chunks_local, c->chunks_total, percent (c));
  if (c->complete_ms >= c->started_ms && c->complete_ms)
    printf ("complete:  %.3f s after the start: every chunk local and "
            "final\n", (c->complete_ms - c->started_ms) / 1000.0);
  printf ("dirty:     %" PRIu64 " chunks\n", c->chunks_dirty);
  printf ("pulled:    %s (%s/s)\n", pulled, prate);
  printf ("pushed:    %s (%s/s)\n", pushed, urate);
  printf ("on demand: %" PRIu64 " fetches\n", c->fetches_on_demand);
  printf ("errors:    %" PRIu64 " fetch, %" PRIu64 " push\n",
          c->fetch_errors, c->push_errors);
  if (c->leech_seq || c->leech_rounds || c->leech_finalized_ms) {
    printf ("leecher:   %" PRIu64 " pre-copy rounds, source write %" PRIu64
            "\n", c->leech_rounds, c->leech_seq);
    if (c->leech_finalized_ms)
      printf ("finalized: %" PRIu64 " chunks changed at the seal, clients "
              "released %.3f ms after the sealed view answered\n",
              c->leech_final_chunks, c->leech_finalize_us / 1000.0);
    else
      printf ("finalized: not yet (clients wait)\n");
  }
  printf ("pid:       %" PRIu64 "\n", c->pid);
}

/* One JSON object, every counter, for scripts. */
static void
print_json (const struct r3map_pull_counters *c)
{
  printf ("{\"phase\": \"%s\", \"running\": %s, \"pid\": %" PRIu64 ", "
          "\"size\": %" PRIu64 ", \"chunk_size\": %" PRIu64 ", "
          "\"chunks_total\": %" PRIu64 ", \"chunks_local\": %" PRIu64 ", "
          "\"chunks_dirty\": %" PRIu64 ", \"bytes_pulled\": %" PRIu64 ", "
          "\"bytes_pushed\": %" PRIu64 ", \"pull_rate\": %" PRIu64 ", "
          "\"push_rate\": %" PRIu64 ", \"fetches_on_demand\": %" PRIu64 ", "
          "\"fetch_errors\": %" PRIu64 ", \"push_errors\": %" PRIu64 ", "
          "\"started_ms\": %" PRIu64 ", \"updated_ms\": %" PRIu64 ", "
          "\"leech_rounds\": %" PRIu64 ", \"leech_seq\": %" PRIu64 ", "
          "\"leech_finalized_ms\": %" PRIu64 ", "
          "\"leech_final_chunks\": %" PRIu64 ", "
          "\"leech_finalize_us\": %" PRIu64 ", "
          "\"complete_ms\": %" PRIu64 "}\n",
          r3map_pull_phase_name (c->phase),
          r3map_process_alive (c->pid) ? "true" : "false", c->pid,
          c->size, c->chunk_size, c->chunks_total, c->chunks_local,
          c->chunks_dirty, c->bytes_pulled, c->bytes_pushed, c->pull_rate,
          c->push_rate, c->fetches_on_demand, c->fetch_errors,
          c->push_errors, c->started_ms, c->updated_ms, c->leech_rounds,
          c->leech_seq, c->leech_finalized_ms, c->leech_final_chunks,
          c->leech_finalize_us, c->complete_ms);
}

static int
print_state_file (const char *path)
{
  struct r3map_pull_state_info info;
  GError *error = NULL;
  char size[32];

  if (!r3map_pull_state_inspect (path, &info, &error)) {
    fprintf (stderr, "%s: %s\n", progname, error->message);
    g_error_free (error);
    return EXIT_FAILURE;
  }
  human (info.size, size, sizeof size);
  printf ("state file: %s\n", path);
  printf ("disk:       %s (%" PRIu64 " bytes), chunk size %" PRIu64 "\n",
          size, info.size, info.chunk_size);
  printf ("identity:   %s\n", info.identity);
  printf ("local:      %" PRIu64 " of %" PRIu64 " chunks (%" PRIu64 "%%)\n",
          info.local, info.nchunks, info.local * 100 / info.nchunks);
  printf ("dirty:      %" PRIu64 " chunks\n", info.dirty);
  return EXIT_SUCCESS;
}

static bool
is_state_file (const char *path)
{
  char magic[16];
  FILE *fp = fopen (path, "rb");
  bool r;

  if (fp == NULL)
    return false;
  r = fread (magic, 1, sizeof magic, fp) == sizeof magic &&
    memcmp (magic, R3MAP_STATE_MAGIC, sizeof magic) == 0;
  fclose (fp);
  return r;
}

static int
cmd_status (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "follow",   no_argument,       NULL, 'f' },
    { "json",     no_argument,       NULL, 'j' },
    { "interval", required_argument, NULL, 'i' },
    { "help",     no_argument,       NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  struct r3map_pull_counters c;
  GError *error = NULL;
  bool follow = false, json = false, tty;
  uint64_t interval_ms = 500;
  const char *path;
  int opt;

  while ((opt = getopt_long (argc, argv, "fi:hj", long_options, NULL)) != -1) {
    switch (opt) {
    case 'f':
      follow = true;
      break;
    case 'j':
      json = true;
      break;
    case 'i':
      if (!r3map_parse_duration ("--interval", optarg, &interval_ms, &error)) {
        fprintf (stderr, "%s: %s\n", progname, error->message);
        g_error_free (error);
        return 2;
      }
      if (interval_ms == 0)
        interval_ms = 1;
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
    usage (stderr);
    return 2;
  }
  path = argv[optind];

  if (is_state_file (path))
    return print_state_file (path);

  if (!r3map_pull_status_read (path, &c, &error)) {
    fprintf (stderr, "%s: %s\n", progname, error->message);
    g_error_free (error);
    return EXIT_FAILURE;
  }
  if (json) {
    print_json (&c);
    return EXIT_SUCCESS;
  }
  if (!follow) {
    print_counters (&c);
    return EXIT_SUCCESS;
  }

  tty = isatty (STDOUT_FILENO);
  for (;;) {
    r3map_print_bar (&c, tty);
    if (r3map_pull_finished (&c))
      break;
    g_usleep (interval_ms * 1000);
    if (!r3map_pull_status_read (path, &c, &error)) {
      if (tty)
        putchar ('\n');
      fprintf (stderr, "%s: %s\n", progname, error->message);
      g_error_free (error);
      return EXIT_FAILURE;
    }
  }
  if (tty)
    putchar ('\n');
  return c.phase == R3MAP_PHASE_COMPLETE ? EXIT_SUCCESS : EXIT_FAILURE;
}

int
main (int argc, char *argv[])
{
  if (argc >= 2 && strcmp (argv[1], "status") == 0)
    return cmd_status (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "seal") == 0)
    return cmd_seal (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "finalize") == 0)
    return cmd_finalize (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "seed") == 0)
    return cmd_seed (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "leech") == 0)
    return cmd_leech (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "migrate") == 0)
    return cmd_migrate (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "mount") == 0)
    return cmd_mount (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "--version") == 0) {
    printf ("r3map %s\n", PACKAGE_VERSION);
    return EXIT_SUCCESS;
  }
  if (argc >= 2 && strcmp (argv[1], "--help") == 0) {
    usage (stdout);
    return EXIT_SUCCESS;
  }
  if (argc >= 2)
    fprintf (stderr, "%s: unknown command '%s'\n", progname, argv[1]);
  usage (stderr);
  return 2;
}
