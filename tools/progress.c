/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The progress bar of an r3map-pull filter's status file, the same for
 * `r3map status --follow', `r3map leech' and `r3map migrate':
 *
 *   Pulling  87% [=========================>    ] (445/512 MiB, 510 MiB/s)
 *
 * On a terminal the bar is redrawn in place; otherwise each reading is
 * a line of its own, so that a log shows the progress over time.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#include <glib.h>

#include "r3map.h"

/* On a terminal: a bar is drawn and the cursor is still on its line. */
static bool bar_open;

void
r3map_end_bar (void)
{
  if (bar_open) {
    putchar ('\n');
    fflush (stdout);
    bar_open = false;
  }
}

bool
r3map_process_alive (uint64_t pid)
{
  return pid > 0 && pid < INT32_MAX &&
    (kill ((pid_t) pid, 0) == 0 || errno == EPERM);
}

/* The pull is over, one way or another: complete, stopped, or its
 * process gone. */
bool
r3map_pull_finished (const struct r3map_pull_counters *c)
{
  return c->phase == R3MAP_PHASE_COMPLETE || c->phase == R3MAP_PHASE_STOPPED ||
    !r3map_process_alive (c->pid);
}

void
r3map_print_bar (const struct r3map_pull_counters *c, bool tty)
{
  const unsigned width = 30;
  unsigned pct = c->chunks_total ? c->chunks_local * 100 / c->chunks_total : 0;
  unsigned fill = pct * width / 100, i;
  uint64_t local_mib = MIN (c->chunks_local * c->chunk_size, c->size) >> 20;
  const char *what;

  switch (c->phase) {
  case R3MAP_PHASE_COMPLETE: what = "Pulled "; break;
  case R3MAP_PHASE_BACKOFF:  what = "Waiting"; break;
  case R3MAP_PHASE_STOPPED:  what = "Stopped"; break;
  case R3MAP_PHASE_PRECOPY:  what = "Pre-copy"; break;
  case R3MAP_PHASE_SEAL_WAIT: what = "Converged"; break;
  case R3MAP_PHASE_SOURCE_LOST: what = "Source lost"; break;
  default:                   what = "Pulling"; break;
  }
  printf ("%s%s %3u%% [", tty ? "\r" : "", what, pct);
  for (i = 0; i < width; ++i)
    putchar (i < fill ? '=' : i == fill ? '>' : ' ');
  printf ("] (%" PRIu64 "/%" PRIu64 " MiB, %" PRIu64 " MiB/s",
          local_mib, c->size >> 20, c->pull_rate >> 20);
  if (c->chunks_dirty)
    printf (", %" PRIu64 " dirty", c->chunks_dirty);
  printf (")%s", tty ? "\033[K" : "\n");
  fflush (stdout);
  bar_open = tty;
}
