/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The leecher: see leech.h.
 */

#include <config.h>

#include <errno.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "leech.h"
#include "parse.h"
#include "pull.h"
#include "pull-state.h"
#include "seeder.h"

/* Chunks handed to the engine at a time when everything is invalid. */
#define ALL_BATCH 65536

struct r3map_leech {
  struct r3map_leech_params p;
  char *source;
  struct r3map_pull *pull;
  uint64_t nchunks;

  pthread_t thread;
  bool started;

  pthread_mutex_t lock;
  pthread_cond_t cond;          /* finalized, lost, stopping, naps */
  atomic_bool stopping;
  bool finalized;
  bool lost;
  char why[512];

  /* Progress, owned by the thread (and by new). */
  char epoch[17];
  uint64_t seq;
  struct r3map_pull_counters pub;
};

static uint64_t
now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t
now_us (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t
realtime_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
publish (struct r3map_leech *l, unsigned phase)
{
  l->pub.phase = phase;
  l->pub.leech_seq = l->seq;
  r3map_pull_leech_publish (l->pull, &l->pub);
}

/* Record progress in the state file: the caller has already made the
 * chunks it covers missing. */
static bool
record (struct r3map_leech *l, bool finalized, GError **error)
{
  struct r3map_leech_record r = { .seq = l->seq, .finalized = finalized };

  memcpy (r.epoch, l->epoch, sizeof r.epoch);
  if (r3map_pull_leech_set (l->pull, &r) == -1) {
    g_set_error (error, R3MAP_ERROR, errno,
                 "cannot record the leecher's progress in the state file: %s",
                 g_strerror (errno));
    return false;
  }
  return true;
}

/* Nothing local can be trusted (a new seeder epoch): all of it again. */
static void
invalidate_all (struct r3map_leech *l)
{
  g_autofree uint64_t *batch = g_new (uint64_t, ALL_BATCH);
  uint64_t c = 0;

  while (c < l->nchunks) {
    size_t n = 0;
    while (n < ALL_BATCH && c < l->nchunks)
      batch[n++] = c++;
    r3map_pull_invalidate (l->pull, batch, n);
  }
}

struct r3map_leech *
r3map_leech_new (const struct r3map_leech_params *params,
                 struct r3map_pull *pull, GError **error)
{
  struct r3map_leech *l = g_new0 (struct r3map_leech, 1);
  struct r3map_leech_record rec;
  struct r3map_seeder_info info;
  bool have = r3map_pull_leech_get (pull, &rec);

  l->p = *params;
  l->source = g_strdup (params->source);
  l->p.source = l->source;
  l->pull = pull;
  l->nchunks = (r3map_pull_size (pull) + params->chunk_size - 1) /
    params->chunk_size;
  pthread_mutex_init (&l->lock, NULL);
  pthread_cond_init (&l->cond, NULL);

  if (have && rec.finalized) {
    /* Finalized before a restart: a plain managed mount from now on. */
    memcpy (l->epoch, rec.epoch, sizeof l->epoch);
    l->seq = rec.seq;
    l->finalized = true;
    l->pub.leech_finalized_ms = realtime_ms ();
    publish (l, 0);
    return l;
  }

  if (!r3map_seeder_info (l->source, &info, NULL, error))
    goto fail;
  if (info.chunk_size != params->chunk_size) {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "source=%s tracks chunks of %" PRIu64 " bytes, but the "
                 "chunk size here is %" PRIu64 ": they must be equal",
                 l->source, info.chunk_size, params->chunk_size);
    goto fail;
  }
  memcpy (l->epoch, info.epoch, sizeof l->epoch);
  if (have && strcmp (rec.epoch, info.epoch) == 0)
    /* Resume: the local chunks are good up to rec.seq. */
    l->seq = rec.seq;
  else {
    /* A first start, or a seeder that restarted since: note where it
     * is before the engine fetches anything. */
    if (!r3map_pull_fresh (pull))
      invalidate_all (l);
    l->seq = info.sealed ? info.final : info.seq;
    if (!record (l, false, error))
      goto fail;
  }
  r3map_pull_expect_changes (pull, true);
  if (!l->p.precopy)
    /* Nothing is copied before finalize: the migration's switch-over
     * shares no link or CPU with the disk's copy. */
    r3map_pull_hold (pull, true);
  publish (l, R3MAP_PHASE_PRECOPY);
  return l;

 fail:
  r3map_leech_free (l);
  return NULL;
}

static void
set_lost (struct r3map_leech *l, bool lost, const char *why)
{
  pthread_mutex_lock (&l->lock);
  if (lost && !l->lost)
    snprintf (l->why, sizeof l->why, "%s", why);
  l->lost = lost;
  pthread_cond_broadcast (&l->cond);
  pthread_mutex_unlock (&l->lock);
}

/* TS = MS from now, for pthread_cond_timedwait on l->cond. */
static void
deadline (struct timespec *ts, uint64_t ms)
{
  clock_gettime (CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
}

/* Sleep MS, or less if stopping.  True if stopping. */
static bool
nap (struct r3map_leech *l, uint64_t ms)
{
  struct timespec ts;
  bool stopping;

  deadline (&ts, ms);
  pthread_mutex_lock (&l->lock);
  if (!l->stopping)
    pthread_cond_timedwait (&l->cond, &l->lock, &ts);
  stopping = l->stopping;
  pthread_mutex_unlock (&l->lock);
  return stopping;
}

/* A round comes no sooner than this after the one before, so that a
 * source that writes a chunk now and then is not asked for its changes
 * in a loop. */
#define MIN_ROUND_MS 20

/* Sleep until the next pre-copy round: MS at most.  During the first
 * pass, less when the pass ends meanwhile, since the round right after
 * it is the first that tells how fast the source's writes come back,
 * and a small disk copied in less than a round should not wait a round
 * for it.  After the pass, as soon as what the round before made
 * missing is local again (and MIN_ROUND_MS have gone by): waiting
 * longer only lets the source write more for the next round to copy
 * again, and a round that copies less lets the one after it find less
 * (the way QEMU iterates over guest RAM).  True if stopping. */
static bool
nap_round (struct r3map_leech *l, uint64_t ms)
{
  bool was_done = r3map_pull_first_pass_done (l->pull);
  uint64_t start = now_us (), end = start + ms * 1000;

  for (;;) {
    uint64_t now = now_us (), left_ms;

    if (now >= end)
      return false;
    left_ms = (end - now + 999) / 1000;
    if (nap (l, MIN (left_ms, 10)))
      return true;
    if (!was_done) {
      if (r3map_pull_first_pass_done (l->pull))
        return false;
    }
    else if (now_us () - start >= MIN_ROUND_MS * 1000 &&
             r3map_pull_wait_complete (l->pull, 0))
      return false;
  }
}

static int
cmp_heat (const void *a, const void *b, void *heat)
{
  const guint8 *h = heat;
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

  return (int) h[y] - (int) h[x];
}

/* After release: the chunks the source read most, first. */
static void
prioritize_hot (struct r3map_leech *l)
{
  g_autoptr (GError) error = NULL;
  GByteArray *heat = r3map_seeder_heat (l->source, &l->stopping, &error);
  g_autoptr (GArray) hot = NULL;
  uint64_t c;

  if (heat == NULL)
    return;                     /* a hint: without it, plain order */
  hot = g_array_new (FALSE, FALSE, sizeof (uint64_t));
  for (c = 0; c < heat->len && c < l->nchunks; ++c)
    if (heat->data[c] > 0)
      g_array_append_val (hot, c);
  g_array_sort_with_data (hot, cmp_heat, heat->data);
  r3map_pull_prioritize (l->pull, (uint64_t *) hot->data, hot->len);
  g_byte_array_unref (heat);
}

/* The source is sealed and CHUNKS is its final changed set since
 * l->seq: make them missing, record, release the clients. */
static void
finalize (struct r3map_leech *l, const struct r3map_seeder_info *info,
          GArray *chunks, uint64_t t0_us)
{
  g_autoptr (GError) error = NULL;

  r3map_pull_invalidate (l->pull, (uint64_t *) chunks->data, chunks->len);
  l->seq = info->final;
  if (!record (l, true, &error))
    /* The copy is right; only a restart would pre-copy again. */
    g_clear_error (&error);
  pthread_mutex_lock (&l->lock);
  l->finalized = true;
  l->lost = false;
  pthread_cond_broadcast (&l->cond);
  pthread_mutex_unlock (&l->lock);

  r3map_pull_hold (l->pull, false);
  l->pub.leech_final_chunks = chunks->len;
  l->pub.leech_finalize_us = now_us () - t0_us;
  l->pub.leech_finalized_ms = realtime_ms ();
  publish (l, 0);
  prioritize_hot (l);
  /* Every chunk fetched from now on is final: when all are local the
   * engine lets the source go. */
  r3map_pull_expect_changes (l->pull, false);
}

static void *
leech_thread (void *arg)
{
  struct r3map_leech *l = arg;
  unsigned small = 0;
  uint64_t last_after_pass = UINT64_MAX;
  bool converged = false;
  uint64_t first_failure = 0;

  while (!l->stopping) {
    g_autoptr (GArray) chunks = g_array_new (FALSE, FALSE, sizeof (guint64));
    g_autoptr (GError) error = NULL;
    struct r3map_seeder_info info;
    uint64_t t0, again;
    bool pass_done;

    if (converged) {
      /* Blocks on the seeder until it is sealed (or its wait ends). */
      if (r3map_seeder_changed (l->source, l->seq, true, l->p.chunk_size,
                                &info, chunks, &l->stopping, &error)) {
        t0 = now_us ();
        if (strcmp (info.epoch, l->epoch) != 0)
          goto new_epoch;
        finalize (l, &info, chunks, t0);
        return NULL;
      }
      /* Not sealed yet, or the source is gone: a round tells which. */
      g_clear_error (&error);
      g_array_set_size (chunks, 0);
    }

    if (!r3map_seeder_changed (l->source, l->seq, false, l->p.chunk_size,
                               &info, chunks, &l->stopping, &error)) {
      uint64_t now = now_ms ();
      if (first_failure == 0)
        first_failure = now;
      if (now - first_failure >= l->p.source_timeout_ms) {
        g_autofree char *why =
          g_strdup_printf ("source=%s lost before finalize for %" PRIu64
                           " ms (%s): refusing to serve a partial copy",
                           l->source, now - first_failure, error->message);
        set_lost (l, true, why);
        publish (l, R3MAP_PHASE_SOURCE_LOST);
      }
      nap (l, MIN (l->p.interval_ms, 1000));
      continue;
    }
    t0 = now_us ();
    if (first_failure) {
      first_failure = 0;
      set_lost (l, false, NULL);
    }
    if (strcmp (info.epoch, l->epoch) != 0)
      goto new_epoch;
    if (info.sealed) {
      /* Sealed already: this set is final too. */
      finalize (l, &info, chunks, t0);
      return NULL;
    }
    again = r3map_pull_invalidate (l->pull, (uint64_t *) chunks->data,
                                   chunks->len);
    l->seq = info.seq;
    if (!record (l, false, &error))
      g_clear_error (&error);   /* a restart will redo more rounds */
    l->pub.leech_rounds++;
    /* A round is small when the source wrote little, or, once the
     * first pass is over, when it left little to copy again (a chunk
     * written before the first pass reached it costs nothing; but
     * during the pass few chunks are local, so what is left to copy
     * again says nothing yet). */
    pass_done = r3map_pull_first_pass_done (l->pull);
    small = chunks->len <= l->p.threshold ||
      (pass_done && again <= l->p.threshold) ? small + 1 : 0;
    if (!converged &&
        (small >= l->p.converge_rounds ||
         l->pub.leech_rounds >= l->p.max_rounds ||
         /* The writes outpace the rounds: once the first pass is over,
          * a round that has no less to copy again than the one before
          * only moves more bytes.  What is left is the final set's. */
         (pass_done && last_after_pass != UINT64_MAX &&
          again >= last_after_pass)))
      converged = true;
    if (pass_done)
      last_after_pass = again;
    publish (l, converged ? R3MAP_PHASE_SEAL_WAIT : R3MAP_PHASE_PRECOPY);
    if (!converged)
      nap_round (l, l->p.interval_ms);
    continue;

  new_epoch:
    /* The seeder restarted: its numbers start again, and nothing
     * fetched so far can be trusted. */
    invalidate_all (l);
    memcpy (l->epoch, info.epoch, sizeof l->epoch);
    l->seq = info.sealed ? info.final : info.seq;
    if (!record (l, false, &error))
      g_clear_error (&error);
    small = 0;
    last_after_pass = UINT64_MAX;
    converged = false;
    l->pub.leech_rounds = 0;
    publish (l, R3MAP_PHASE_PRECOPY);
  }
  return NULL;
}

bool
r3map_leech_start (struct r3map_leech *l, GError **error)
{
  int err;

  if (l->finalized)
    return true;
  err = pthread_create (&l->thread, NULL, leech_thread, l);
  if (err != 0) {
    g_set_error (error, R3MAP_ERROR, err, "cannot start the leecher: %s",
                 g_strerror (err));
    return false;
  }
  l->started = true;
  return true;
}

void
r3map_leech_free (struct r3map_leech *l)
{
  if (l == NULL)
    return;
  pthread_mutex_lock (&l->lock);
  l->stopping = true;
  pthread_cond_broadcast (&l->cond);
  pthread_mutex_unlock (&l->lock);
  if (l->started)
    pthread_join (l->thread, NULL);
  pthread_mutex_destroy (&l->lock);
  pthread_cond_destroy (&l->cond);
  g_free (l->source);
  g_free (l);
}

int
r3map_leech_wait (struct r3map_leech *l, int64_t timeout_ms)
{
  struct timespec ts;
  int ret, err = 0;

  if (timeout_ms >= 0)
    deadline (&ts, timeout_ms);
  pthread_mutex_lock (&l->lock);
  while (!l->finalized && !l->lost && !l->stopping && err == 0)
    err = timeout_ms < 0 ? pthread_cond_wait (&l->cond, &l->lock) :
      pthread_cond_timedwait (&l->cond, &l->lock, &ts);
  ret = l->finalized ? 0 : -1;
  if (ret == -1)
    err = l->lost ? EIO : l->stopping ? ESHUTDOWN : ETIMEDOUT;
  pthread_mutex_unlock (&l->lock);
  if (ret == -1)
    errno = err;
  return ret;
}

bool
r3map_leech_finalized (struct r3map_leech *l)
{
  bool f;

  pthread_mutex_lock (&l->lock);
  f = l->finalized;
  pthread_mutex_unlock (&l->lock);
  return f;
}

void
r3map_leech_why (struct r3map_leech *l, char *buf, size_t len)
{
  pthread_mutex_lock (&l->lock);
  snprintf (buf, len, "%s", l->why[0] ? l->why : "stopping");
  pthread_mutex_unlock (&l->lock);
}
