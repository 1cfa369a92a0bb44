/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Following a leecher that leech or migrate started: its status file
 * is read every few milliseconds, so that a step (converged, finalized,
 * complete) is seen at once, while the progress bar and the
 * --on-chunk-is-local hook are updated once per --interval.
 *
 * --on-chunk-is-local batches: a chunk becomes local every few
 * microseconds on a fast link, and a command per chunk would be the
 * bottleneck.  So the hook runs at most once per interval, when the
 * number of local chunks changed since it last ran, and once more at
 * the end of a step if it changed since: its last run sees every chunk
 * local.  A slow hook delays the next run (it is waited for), it never
 * queues runs.  A hook that fails is reported and not run again.  It
 * is held while migrate waits for finalize: nothing may delay the
 * after-sync hook, which resumes the application.
 */

#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include <glib.h>

#include "r3map.h"

#define POLL_MS 10
/* nbdkit is ready (its pid file is written) before the filter's engine
 * has made its status file: how long that may take, at most.  (The
 * caller removed any status file of an earlier run.) */
#define STATUS_FILE_WAIT_S 60

static void
chunk_hook (struct r3map_follow *f)
{
  g_auto (GStrv) env = NULL;

  if (f->on_chunk_is_local == NULL || f->hook_failed || f->hold_hook ||
      f->c.chunks_local == f->hook_local)
    return;
  env = g_strdupv (f->env);
  r3map_env_set (&env, "R3MAP_PHASE", "chunk-is-local");
  r3map_env_set_counters (&env, &f->c);
  f->hook_local = f->c.chunks_local;
  if (!r3map_hook_run (f->cmd, "--on-chunk-is-local", f->on_chunk_is_local,
                       env))
    f->hook_failed = true;      /* said; not run again */
}

static void
show (struct r3map_follow *f)
{
  if (!f->quiet)
    r3map_print_bar (&f->c, f->tty);
  chunk_hook (f);
  f->shown_us = g_get_monotonic_time ();
}

enum r3map_follow_end
r3map_follow (struct r3map_follow *f,
              bool (*until) (const struct r3map_pull_counters *c),
              uint64_t timeout_ms)
{
  gint64 end = timeout_ms ?
    g_get_monotonic_time () + (gint64) timeout_ms * 1000 : 0;

  f->tty = isatty (STDOUT_FILENO);
  for (;;) {
    g_autoptr (GError) error = NULL;
    gint64 now;
    bool done;

    if (!r3map_pull_status_read (f->status_file, &f->c, &error)) {
      /* Not there yet, or made but not yet written. */
      if (!f->seen && (error->code == ENOENT || error->code == EINVAL)) {
        if (!r3map_server_running (f->leecher))
          return R3MAP_FOLLOW_GONE;     /* it failed after it was ready */
        if (r3map_interrupted)
          return R3MAP_FOLLOW_INTERRUPTED;
        if (f->first_us == 0)
          f->first_us = g_get_monotonic_time ();
        if (g_get_monotonic_time () - f->first_us <
            STATUS_FILE_WAIT_S * G_USEC_PER_SEC) {
          g_usleep (POLL_MS * 1000);
          continue;
        }
      }
      r3map_end_bar ();
      fprintf (stderr, "%s: %s: %s\n", progname, f->cmd, error->message);
      return R3MAP_FOLLOW_ERROR;
    }
    f->seen = true;
    done = until (&f->c);
    now = g_get_monotonic_time ();
    if (done || now - f->shown_us >= (gint64) f->interval_ms * 1000)
      show (f);
    if (done)
      return R3MAP_FOLLOW_DONE;
    if (f->c.phase == R3MAP_PHASE_STOPPED ||
        !r3map_server_running (f->leecher)) {
      r3map_end_bar ();
      return R3MAP_FOLLOW_GONE;
    }
    if (r3map_interrupted) {
      r3map_end_bar ();
      return R3MAP_FOLLOW_INTERRUPTED;
    }
    if (end && now >= end) {
      r3map_end_bar ();
      return R3MAP_FOLLOW_TIMEOUT;
    }
    g_usleep (POLL_MS * 1000);
  }
}
