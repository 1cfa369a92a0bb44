/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The pull engine: see pull.h for what it does.  How it stays correct:
 *
 * Claims.  Only the thread that moves a chunk from missing to fetching
 * (or from dirty to pushing) with a compare-and-swap works on it; the
 * others wait on the chunk map.  A writer that needs several chunks
 * takes them in ascending order and only holds claims on chunks that
 * it overwrites whole, so two requests never wait on each other in a
 * cycle, whatever a client sends.
 *
 * Writes and pushes.  A writer writes the local store first and marks
 * the chunk dirty after, and a pusher reads the local store only after
 * claiming the chunk (dirty -> pushing).  A write that lands while its
 * chunk is being pushed therefore turns it back to dirty, the pusher's
 * final pushing -> local fails, and the chunk is pushed again.  A flush
 * takes the set of dirty and pushing chunks when it starts and returns
 * when each of them was pushed by a push that claimed it after the
 * flush started, and the remote was flushed after that push.
 *
 * Persistence.  A chunk is recorded local in the state file only after
 * the local store was flushed with its data in it (a checkpoint: every
 * few seconds and at every client flush), so a record never outlives
 * its data.  A write records its chunk dirty before it is acknowledged,
 * and a push clears the record only after the remote was flushed.  At
 * start, a chunk recorded dirty but not local was written and never
 * flushed: it is fetched again.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "chunkmap.h"
#include "parse.h"
#include "pull.h"

#define MISSING  R3MAP_PULL_MISSING
#define FETCHING R3MAP_PULL_FETCHING
#define LANDING  R3MAP_PULL_LANDING
#define OVERWRITING R3MAP_PULL_OVERWRITING
#define TAKEN    R3MAP_PULL_TAKEN
#define OVERWRITTEN R3MAP_PULL_OVERWRITTEN
#define LOCAL    R3MAP_PULL_LOCAL
#define DIRTY    R3MAP_PULL_DIRTY
#define PUSHING  R3MAP_PULL_PUSHING
#define REDIRTIED R3MAP_PULL_REDIRTIED

#define NONE UINT64_MAX

/* Runs of consecutive missing chunks are fetched in one request of up
 * to this many chunks and bytes: on a link with a long round trip time
 * the number of round trips is what matters. */
#define BATCH_CHUNKS 64
#define BATCH_BYTES (UINT64_C (4) << 20)

/* A miss queues this many following chunks at the front. */
#define MISS_READAHEAD 8

#define URGENT_MAX 4096

/* Remote connections beyond the workers', for the clients' on-demand
 * fetches: a client with many reads in flight on a cold disk is served
 * this many at a time (measured: 4 left a QD64 reader at half the
 * remote's own rate at 10 ms RTT). */
#define ON_DEMAND_SLOTS 16
#define STRIPES 64

/* Requests waiting on a chunk fetched by another thread look up every
 * this often whether the engine is stopping. */
#define WAIT_SLICE_MS 1000

struct slot {
  struct r3map_store *store;
  bool busy;
  atomic_bool written;          /* written since its last flush */
};

struct range {
  uint64_t start, end;          /* chunks */
};

struct r3map_pull {
  struct r3map_pull_params p;
  char *priority, *hints_file, *state_file, *status_file, *identity;

  uint64_t size, chunk_size, nchunks;
  unsigned shift;
  struct r3map_store *local;
  struct r3map_pull_remote remote;
  struct r3map_chunkmap *map;
  struct r3map_pull_state *state;
  struct r3map_pull_status *status;
  bool fresh;

  /* The remote pool. */
  pthread_mutex_t pool_lock;
  pthread_cond_t pool_cond;
  struct slot *slots;
  unsigned nslots;
  atomic_bool suspect;          /* a written connection was dropped */

  /* The pull order. */
  pthread_mutex_t q_lock;
  GArray *order;                /* struct range */
  guint order_i;
  uint64_t order_pos;
  uint64_t urgent[URGENT_MAX];
  unsigned urgent_head, urgent_len;

  /* Pushed chunks whose push the remote has not yet flushed. */
  pthread_mutex_t push_lock;
  GArray *pushed;               /* uint64_t */
  pthread_mutex_t flush_lock;   /* one remote flush at a time */
  pthread_mutex_t stripes[STRIPES];  /* dirty bit vs. chunk state */

  pthread_mutex_t ckpt_lock;     /* one checkpoint at a time */
  _Atomic uint64_t persisted_local;

  /* Chunks that r3map_pull_invalidate found being fetched: the fetch
   * may have read them before they changed, so it must not make them
   * local.  A bit per chunk, allocated when the engine is told to
   * expect changes (only a leecher has one: change_bits); a bit changes
   * under its chunk's stripe lock, together with the chunk's move out
   * of the fetch (see in_fetch). */
  _Atomic (_Atomic uint64_t *) stale;

  /* Chunks that r3map_pull_invalidate made missing since the running
   * checkpoint looked at them: that checkpoint's flush may predate their
   * next fetch, so it must not record them local.  Allocated with
   * stale, a bit changes under its chunk's stripe lock. */
  _Atomic (_Atomic uint64_t *) moved;

  /* One writer of the status page at a time (its readers check a
   * sequence counter, which two writers would garble). */
  pthread_mutex_t status_lock;

  /* Threads, and what wakes them. */
  pthread_mutex_t wake_lock;
  pthread_cond_t wake;          /* stop, new work, kick */
  atomic_bool stopping;
  atomic_bool expect_changes;   /* a leecher: keep the pull workers */
  atomic_bool hold;             /* the pull workers wait (r3map_pull_hold) */
  _Atomic uint64_t pull_after;  /* and until this now_ms (pull_delay_ms) */
  struct r3map_pull_counters leech;     /* leech_* and phase, under q_lock */
  unsigned push_kicks;          /* under wake_lock */
  unsigned wakes;               /* wake_all calls, under wake_lock */
  pthread_t *pullers, *pushers, keeper;
  unsigned npullers, npushers;
  bool keeper_started;

  /* Background backoff while the remote fails. */
  _Atomic uint64_t backoff_ms;
  _Atomic uint64_t backoff_until;

  /* Counters. */
  _Atomic uint64_t bytes_pulled, bytes_pushed;
  _Atomic uint64_t fetches_on_demand, fetch_errors, push_errors;
  uint64_t started_ms;
  _Atomic uint64_t pull_rate, push_rate;        /* set by the housekeeper */
  _Atomic uint64_t complete_ms;                 /* see r3map_pull_counters */
};

/* ---- Time and waiting ------------------------------------------------ */

static uint64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t
realtime_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
deadline (struct timespec *ts, uint64_t ms)
{
  clock_gettime (CLOCK_MONOTONIC, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
}

/* Sleep MS milliseconds, or less if the engine stops. */
static void
nap (struct r3map_pull *pull, uint64_t ms)
{
  struct timespec ts;

  deadline (&ts, ms);
  pthread_mutex_lock (&pull->wake_lock);
  while (!atomic_load (&pull->stopping) &&
         pthread_cond_timedwait (&pull->wake, &pull->wake_lock, &ts) == 0)
    ;
  pthread_mutex_unlock (&pull->wake_lock);
}

static void
wake_all (struct r3map_pull *pull)
{
  pthread_mutex_lock (&pull->wake_lock);
  pull->wakes++;
  pthread_cond_broadcast (&pull->wake);
  pthread_mutex_unlock (&pull->wake_lock);
}

static unsigned
wakes (struct r3map_pull *pull)
{
  unsigned w;

  pthread_mutex_lock (&pull->wake_lock);
  w = pull->wakes;
  pthread_mutex_unlock (&pull->wake_lock);
  return w;
}

/* Wait for new work: until wake_all is called after wakes() returned
 * SEEN, or MS milliseconds, or the engine stops.  (nap sleeps through
 * wake_all: right for retry delays, not for an idle pull worker, which
 * would otherwise start on chunks made missing, e.g. a leecher's final
 * set, up to MS late.) */
static void
idle (struct r3map_pull *pull, uint64_t ms, unsigned seen)
{
  struct timespec ts;

  deadline (&ts, ms);
  pthread_mutex_lock (&pull->wake_lock);
  while (!atomic_load (&pull->stopping) && pull->wakes == seen &&
         pthread_cond_timedwait (&pull->wake, &pull->wake_lock, &ts) == 0)
    ;
  pthread_mutex_unlock (&pull->wake_lock);
}

static uint64_t
retry_delay (struct r3map_pull *pull, unsigned attempt)
{
  uint64_t d = pull->p.retry_delay_ms;

  while (attempt-- > 0 && d < pull->p.backoff_max_ms)
    d *= 2;
  return MIN (d, pull->p.backoff_max_ms);
}

static void
backoff_fail (struct r3map_pull *pull)
{
  uint64_t cur = atomic_load (&pull->backoff_ms);

  cur = cur == 0 ? pull->p.retry_delay_ms : MIN (cur * 2, pull->p.backoff_max_ms);
  if (cur == 0)
    cur = 1;
  atomic_store (&pull->backoff_ms, cur);
  atomic_store (&pull->backoff_until, now_ms () + cur);
}

static void
backoff_reset (struct r3map_pull *pull)
{
  if (atomic_exchange (&pull->backoff_ms, 0) != 0) {
    atomic_store (&pull->backoff_until, 0);
    wake_all (pull);
  }
}

static bool
backing_off (struct r3map_pull *pull)
{
  return atomic_load (&pull->backoff_until) > now_ms ();
}

/* ---- Chunks ----------------------------------------------------------- */

static uint64_t
chunk_offset (struct r3map_pull *pull, uint64_t chunk)
{
  return chunk << pull->shift;
}

/* Bytes of chunks [CHUNK, CHUNK+N): the last chunk may be short. */
static uint32_t
run_len (struct r3map_pull *pull, uint64_t chunk, uint64_t n)
{
  uint64_t off = chunk_offset (pull, chunk);

  return MIN (n << pull->shift, pull->size - off);
}

static unsigned
get_state (struct r3map_pull *pull, uint64_t chunk)
{
  return r3map_chunkmap_get (pull->map, chunk);
}

static uint64_t
count (struct r3map_pull *pull, unsigned state)
{
  return r3map_chunkmap_count (pull->map, state);
}

static uint64_t
count_dirty (struct r3map_pull *pull)
{
  return count (pull, DIRTY) + count (pull, PUSHING) + count (pull, REDIRTIED);
}

static uint64_t
count_local (struct r3map_pull *pull)
{
  return count (pull, LOCAL) + count_dirty (pull);
}

static pthread_mutex_t *
stripe (struct r3map_pull *pull, uint64_t chunk)
{
  return &pull->stripes[chunk % STRIPES];
}

/* Set CHUNK's bit in BITS (the stale or moved bits; NULL: none), or
 * clear it and say whether it was set.  The caller holds the chunk's
 * stripe lock. */
static void
bit_set (_Atomic uint64_t *bits, uint64_t chunk)
{
  if (bits)
    atomic_fetch_or (&bits[chunk >> 6], UINT64_C (1) << (chunk & 63));
}

static bool
bit_test (_Atomic uint64_t *bits, uint64_t chunk)
{
  return bits && (atomic_load (&bits[chunk >> 6]) >> (chunk & 63)) & 1;
}

static bool
bit_take (_Atomic uint64_t *bits, uint64_t chunk)
{
  uint64_t bit = UINT64_C (1) << (chunk & 63);

  return bits && (atomic_fetch_and (&bits[chunk >> 6], ~bit) & bit) != 0;
}

static bool
stale_take (struct r3map_pull *pull, uint64_t chunk)
{
  return bit_take (atomic_load (&pull->stale), chunk);
}

/* CHUNK is in a fetch's hands, or may go back to them: a fetch in
 * flight read (or is reading) it, and what it read may land. */
static bool
in_fetch (unsigned state)
{
  return state == FETCHING || state == LANDING || state == TAKEN ||
    state == OVERWRITTEN;
}

/* A client overwrote CHUNK whole, from state FROM (overwriting or
 * overwritten): it becomes local, and dirty with push.  What the
 * remote holds of it no longer matters.  Returns as
 * r3map_chunkmap_cas.  Under the chunk's stripe lock. */
static int
settle (struct r3map_pull *pull, uint64_t chunk, unsigned from)
{
  int r = r3map_chunkmap_cas (pull->map, chunk, from,
                              pull->p.push ? DIRTY : LOCAL);

  if (r == 1) {
    stale_take (pull, chunk);
    if (pull->p.push && pull->state)
      r3map_pull_state_set_dirty (pull->state, chunk);
  }
  return r;
}

/* A fetch of chunks [CHUNK, CHUNK+N), claimed (fetching) by the caller,
 * ended; OK: the data of those it landed is in the local store.  Each
 * becomes local, unless the fetch failed or the chunk was marked stale
 * while it was in flight: then it is missing again, to be fetched
 * anew.  A chunk that a client took over is the client's: it settles
 * it when its write ends, or the fetch does if that write has ended.
 * Under the stripe lock, so that r3map_pull_invalidate sees a chunk
 * either still in the fetch (and marks it) or already out of it. */
static void
fetched (struct r3map_pull *pull, uint64_t chunk, uint64_t n, bool ok)
{
  uint64_t i;

  for (i = 0; i < n; ++i) {
    uint64_t c = chunk + i;
    int r = 0;

    pthread_mutex_lock (stripe (pull, c));
    while (r == 0) {
      unsigned s = get_state (pull, c);
      bool stale = bit_test (atomic_load (&pull->stale), c);

      switch (s) {
      case FETCHING:            /* not landed: failed, or taken and given back */
      case LANDING:
        r = r3map_chunkmap_cas (pull->map, c, s,
                                ok && s == LANDING && !stale ? LOCAL : MISSING);
        if (r == 1)
          stale_take (pull, c);
        break;
      case TAKEN:               /* the client settles it */
        r = r3map_chunkmap_cas (pull->map, c, TAKEN, OVERWRITING);
        break;
      case OVERWRITTEN:
        r = settle (pull, c, OVERWRITTEN);
        break;
      default:                  /* not reached: the fetch owned it */
        r = 1;
      }
    }
    pthread_mutex_unlock (stripe (pull, c));
  }
}

/* ---- The remote pool -------------------------------------------------- */

/* Take a slot of the pool: slot WANT, or any if WANT is -1.  Unless
 * CONNECT is false, the slot is connected if it is not. */
static struct slot *
pool_acquire (struct r3map_pull *pull, int want, bool connect)
{
  struct slot *s = NULL;
  unsigned i;

  pthread_mutex_lock (&pull->pool_lock);
  for (;;) {
    if (want >= 0) {
      if (!pull->slots[want].busy)
        s = &pull->slots[want];
    }
    else {
      /* Prefer a slot that is connected. */
      for (i = 0; i < pull->nslots; ++i)
        if (!pull->slots[i].busy &&
            (s == NULL || (s->store == NULL && pull->slots[i].store)))
          s = &pull->slots[i];
    }
    if (s)
      break;
    pthread_cond_wait (&pull->pool_cond, &pull->pool_lock);
  }
  s->busy = true;
  pthread_mutex_unlock (&pull->pool_lock);

  if (s->store == NULL && connect) {
    s->store = pull->remote.open (pull->remote.opaque);
    atomic_store (&s->written, false);
    if (s->store == NULL) {
      pthread_mutex_lock (&pull->pool_lock);
      s->busy = false;
      pthread_cond_signal (&pull->pool_cond);
      pthread_mutex_unlock (&pull->pool_lock);
      return NULL;
    }
  }
  return s;
}

/* A slot whose request failed is closed: the next user opens a new
 * connection.  If it carried writes not yet flushed, those writes are
 * in doubt. */
static void
pool_release (struct r3map_pull *pull, struct slot *s, bool failed)
{
  struct r3map_store *dead = NULL;

  if (failed) {
    if (atomic_exchange (&s->written, false))
      atomic_store (&pull->suspect, true);
    dead = s->store;
    s->store = NULL;
  }
  pthread_mutex_lock (&pull->pool_lock);
  s->busy = false;
  pthread_cond_signal (&pull->pool_cond);
  pthread_mutex_unlock (&pull->pool_lock);
  r3map_store_close (dead);
}

static int
remote_pread (struct r3map_pull *pull, void *buf, uint32_t count,
              uint64_t offset)
{
  struct slot *s = pool_acquire (pull, -1, true);
  int r;

  if (s == NULL)
    return -1;
  r = r3map_store_pread (s->store, buf, count, offset);
  pool_release (pull, s, r == -1);
  return r;
}

static int
remote_pwrite (struct r3map_pull *pull, const void *buf, uint32_t count,
               uint64_t offset)
{
  struct slot *s = pool_acquire (pull, -1, true);
  int r;

  if (s == NULL)
    return -1;
  r = r3map_store_pwrite (s->store, buf, count, offset, false);
  if (r == 0)
    atomic_store (&s->written, true);
  pool_release (pull, s, r == -1);
  return r;
}

/* Flush the remote so that every write made through the pool so far
 * is durable. */
static int
remote_flush (struct r3map_pull *pull)
{
  struct slot *s;
  unsigned i;
  int r;

  if (pull->remote.multi_conn) {
    s = pool_acquire (pull, -1, true);
    if (s == NULL)
      return -1;
    r = r3map_store_flush (s->store);
    pool_release (pull, s, r == -1);
    if (r == 0) {
      /* Every write completed so far is covered; the ones in flight
       * on busy slots are not. */
      pthread_mutex_lock (&pull->pool_lock);
      for (i = 0; i < pull->nslots; ++i)
        if (!pull->slots[i].busy)
          atomic_store (&pull->slots[i].written, false);
      pthread_mutex_unlock (&pull->pool_lock);
    }
    return r;
  }
  for (i = 0; i < pull->nslots; ++i) {
    if (!atomic_load (&pull->slots[i].written))
      continue;
    s = pool_acquire (pull, i, false);
    if (s->store == NULL || !atomic_load (&s->written)) {
      pool_release (pull, s, false);    /* Dropped meanwhile. */
      continue;
    }
    r = r3map_store_flush (s->store);
    if (r == 0)
      atomic_store (&s->written, false);
    pool_release (pull, s, r == -1);
    if (r == -1)
      return -1;
  }
  return 0;
}

/* Once every chunk is local and nothing is pushed, the remote is not
 * needed any more: let it go. */
static void
pool_close_idle (struct r3map_pull *pull)
{
  unsigned i;

  for (i = 0; i < pull->nslots; ++i) {
    struct slot *s = pool_acquire (pull, i, false);
    pool_release (pull, s, s->store != NULL);
  }
}

/* ---- Fetching --------------------------------------------------------- */

/* Copy chunks [CHUNK, CHUNK+N), all claimed by the caller, from the
 * remote to the local store.  A remote failure is EIO; a local one
 * keeps its errno. */
static int
fetch (struct r3map_pull *pull, uint64_t chunk, uint64_t n, char *buf)
{
  uint32_t len = run_len (pull, chunk, n);
  uint64_t off = chunk_offset (pull, chunk);
  uint64_t i, j;

  if (remote_pread (pull, buf, len, off) == -1) {
    atomic_fetch_add (&pull->fetch_errors, 1);
    errno = EIO;
    return -1;
  }
  atomic_fetch_add (&pull->bytes_pulled, len);

  /* While the remote was read, clients may have taken chunks of the
   * run over to write them whole: what was read of those must not land
   * over their data.  The others land, in runs; their writers wait
   * from here until fetched (). */
  for (i = 0; i < n; ++i)
    r3map_chunkmap_cas (pull->map, chunk + i, FETCHING, LANDING);
  for (i = 0; i < n; i = j) {
    j = i + 1;
    if (get_state (pull, chunk + i) != LANDING)
      continue;
    while (j < n && get_state (pull, chunk + j) == LANDING)
      j++;
    if (r3map_store_pwrite (pull->local, buf + (i << pull->shift),
                            run_len (pull, chunk + i, j - i),
                            chunk_offset (pull, chunk + i), false) == -1) {
      int err = errno;

      /* Fetching, as before the read: the caller may read again. */
      for (i = 0; i < n; ++i)
        r3map_chunkmap_cas (pull->map, chunk + i, LANDING, FETCHING);
      errno = err;
      return -1;
    }
  }
  return 0;
}

static void
queue_urgent (struct r3map_pull *pull, uint64_t chunk)
{
  unsigned tail;

  pthread_mutex_lock (&pull->q_lock);
  if (pull->urgent_len == URGENT_MAX) {        /* Forget the oldest. */
    pull->urgent_head = (pull->urgent_head + 1) % URGENT_MAX;
    pull->urgent_len--;
  }
  tail = (pull->urgent_head + pull->urgent_len) % URGENT_MAX;
  pull->urgent[tail] = chunk;
  pull->urgent_len++;
  pthread_mutex_unlock (&pull->q_lock);
}

/* The next missing chunk in pull order, or NONE. */
static uint64_t
next_chunk (struct r3map_pull *pull)
{
  uint64_t c = NONE;

  pthread_mutex_lock (&pull->q_lock);
  while (pull->urgent_len > 0) {
    uint64_t u = pull->urgent[pull->urgent_head];
    pull->urgent_head = (pull->urgent_head + 1) % URGENT_MAX;
    pull->urgent_len--;
    if (get_state (pull, u) == MISSING) {
      c = u;
      goto out;
    }
  }
  while (pull->order_i < pull->order->len) {
    struct range *r = &g_array_index (pull->order, struct range,
                                      pull->order_i);
    uint64_t from = MAX (pull->order_pos, r->start);

    c = from < r->end ? r3map_chunkmap_find (pull->map, from, MISSING) : NONE;
    if (c < r->end) {
      pull->order_pos = c + 1;
      goto out;
    }
    pull->order_i++;
    pull->order_pos = 0;
  }
  /* The whole order was walked; chunks that a failed fetch put back
   * are found by looking again from the start. */
  c = r3map_chunkmap_find (pull->map, 0, MISSING);
  if (c >= pull->nchunks)
    c = NONE;
 out:
  pthread_mutex_unlock (&pull->q_lock);
  return c;
}

static uint64_t
batch_chunks (struct r3map_pull *pull)
{
  return MAX (MIN (BATCH_CHUNKS, BATCH_BYTES >> pull->shift), 1);
}

static bool
complete (struct r3map_pull *pull)
{
  return count_local (pull) == pull->nchunks;
}

/* Write the status file now. */
static void
publish_status (struct r3map_pull *pull)
{
  struct r3map_pull_counters c;

  pthread_mutex_lock (&pull->status_lock);
  r3map_pull_counters (pull, &c);
  r3map_pull_status_publish (pull->status, &c);
  pthread_mutex_unlock (&pull->status_lock);
}

static void *
pull_worker (void *arg)
{
  struct r3map_pull *pull = arg;
  uint64_t max_run = batch_chunks (pull);
  char *buf = g_malloc (max_run << pull->shift);

  /* Named for top -H and perf.  The nice value is Linux's, per thread:
   * the background pull then yields the CPU to what serves the
   * clients (nbdkit's request threads, which fetch misses on demand,
   * and on a shared host the guests themselves).  Raising one's own
   * nice value needs no privilege, and a thread can always name
   * itself: neither can fail here. */
  pthread_setname_np (pthread_self (), "r3map-pull");
  if (pull->p.pull_nice > 0)
    setpriority (PRIO_PROCESS, (id_t) gettid (), pull->p.pull_nice);

  while (!atomic_load (&pull->stopping)) {
    uint64_t c, n, after, now;
    unsigned seen;
    int r;

    if (backing_off (pull)) {
      uint64_t until = atomic_load (&pull->backoff_until);
      now = now_ms ();
      if (until > now)
        nap (pull, until - now);
      continue;
    }
    seen = wakes (pull);
    if (atomic_load (&pull->hold)) {
      idle (pull, 100, seen);
      continue;
    }
    after = atomic_load (&pull->pull_after);
    now = now_ms ();
    if (after > now) {
      idle (pull, MIN (after - now, 100), seen);
      continue;
    }
    c = next_chunk (pull);
    if (c == NONE) {
      if (complete (pull) && !atomic_load (&pull->expect_changes))
        break;
      /* Others are fetching what is left, or (a leecher) nothing is
       * missing until the next changed set. */
      idle (pull, 100, seen);
      continue;
    }
    r = r3map_chunkmap_cas (pull->map, c, MISSING, FETCHING);
    if (r != 1) {
      if (r == -1)
        nap (pull, 100);
      continue;
    }
    /* Claim the missing chunks that follow, up to a batch. */
    for (n = 1; n < max_run && c + n < pull->nchunks; ++n)
      if (r3map_chunkmap_cas (pull->map, c + n, MISSING, FETCHING) != 1)
        break;
    if (fetch (pull, c, n, buf) == 0) {
      fetched (pull, c, n, true);
      backoff_reset (pull);
      /* The last chunk is local: say so at once, not at the
       * housekeeper's next tick (a leecher's source waits for it). */
      if (complete (pull))
        publish_status (pull);
    }
    else {
      fetched (pull, c, n, false);
      queue_urgent (pull, c);
      backoff_fail (pull);
    }
  }
  g_free (buf);
  return NULL;
}

/* Make chunks FIRST to LAST local, fetching what is missing: runs of
 * missing chunks in one request each.  The caller holds no claim on
 * them. */
static int
ensure_local_range (struct r3map_pull *pull, uint64_t first, uint64_t last)
{
  uint64_t c = first, n, i, max_run = batch_chunks (pull);
  unsigned failures = 0, attempt;
  int r;

  while (c <= last) {
    unsigned s = get_state (pull, c);

    if (s >= LOCAL) {
      c++;
      continue;
    }
    if (atomic_load (&pull->stopping)) {
      errno = ESHUTDOWN;
      return -1;
    }
    if (s != MISSING) {         /* in a fetch, or being overwritten */
      r = r3map_chunkmap_wait_while (pull->map, c, s, WAIT_SLICE_MS);
      if (r == MISSING && ++failures > pull->p.retries) {
        errno = EIO;            /* Others tried for us, and failed. */
        return -1;
      }
      continue;
    }
    r = r3map_chunkmap_cas (pull->map, c, MISSING, FETCHING);
    if (r == -1)
      return -1;
    if (r == 0)
      continue;

    /* Ours, with the missing chunks that follow it in the request. */
    for (n = 1; n < max_run && c + n <= last; ++n)
      if (r3map_chunkmap_cas (pull->map, c + n, MISSING, FETCHING) != 1)
        break;
    atomic_fetch_add (&pull->fetches_on_demand, 1);
    /* Have the workers fetch what follows. */
    for (i = 0; i < MISS_READAHEAD && c + n + i < pull->nchunks; ++i)
      queue_urgent (pull, c + n + i);
    wake_all (pull);
    {
      g_autofree char *buf = g_try_malloc (n << pull->shift);
      int err = ENOMEM;
      bool ok = false;

      for (attempt = 0; buf != NULL; ++attempt) {
        if (fetch (pull, c, n, buf) == 0) {
          ok = true;
          break;
        }
        err = errno;
        if (err != EIO || attempt >= pull->p.retries ||
            atomic_load (&pull->stopping))
          break;
        nap (pull, retry_delay (pull, attempt));
      }
      fetched (pull, c, n, ok);
      if (!ok) {
        errno = err;
        return -1;
      }
      backoff_reset (pull);
      if (complete (pull))
        publish_status (pull);  /* the last chunk came on demand */
      /* Not past C: a chunk made stale in flight is missing again, and
       * the loop fetches it anew. */
    }
  }
  return 0;
}

static int
ensure_local (struct r3map_pull *pull, uint64_t chunk)
{
  return ensure_local_range (pull, chunk, chunk);
}

/* ---- Pushing ---------------------------------------------------------- */

/* Copy CHUNK, claimed (pushing) by the caller, to the remote. */
static int
push_chunk (struct r3map_pull *pull, uint64_t chunk, char *buf)
{
  uint32_t len = run_len (pull, chunk, 1);
  uint64_t off = chunk_offset (pull, chunk);

  if (r3map_store_pread (pull->local, buf, len, off) == -1 ||
      remote_pwrite (pull, buf, len, off) == -1) {
    atomic_fetch_add (&pull->push_errors, 1);
    r3map_chunkmap_set (pull->map, chunk, DIRTY);
    errno = EIO;
    return -1;
  }
  atomic_fetch_add (&pull->bytes_pushed, len);
  /* Recorded before the chunk leaves the pushing state: see
   * flush_pushed. */
  pthread_mutex_lock (&pull->push_lock);
  g_array_append_val (pull->pushed, chunk);
  pthread_mutex_unlock (&pull->push_lock);
  if (r3map_chunkmap_cas (pull->map, chunk, PUSHING, LOCAL) != 1)
    r3map_chunkmap_set (pull->map, chunk, DIRTY);       /* redirtied */
  return 0;
}

/* Flush the remote, then forget the dirty records of the chunks whose
 * pushes it covered.  Serialized, so that a caller that finds its
 * chunks' records already taken by another caller waits for that
 * caller's flush to be done. */
static int
flush_pushed (struct r3map_pull *pull)
{
  g_autoptr (GArray) done = NULL;
  guint i;
  int r;

  pthread_mutex_lock (&pull->flush_lock);
  pthread_mutex_lock (&pull->push_lock);
  done = pull->pushed;
  pull->pushed = g_array_new (FALSE, FALSE, sizeof (uint64_t));
  pthread_mutex_unlock (&pull->push_lock);

  r = remote_flush (pull);
  if (r == 0 && atomic_exchange (&pull->suspect, false)) {
    /* A connection that carried some of these pushes died before it
     * was flushed: push them again. */
    for (i = 0; i < done->len; ++i) {
      uint64_t c = g_array_index (done, uint64_t, i);
      r3map_chunkmap_cas (pull->map, c, LOCAL, DIRTY);
    }
    errno = EIO;
    r = -1;
  }
  else if (r == 0 && pull->state) {
    for (i = 0; i < done->len; ++i) {
      uint64_t c = g_array_index (done, uint64_t, i);
      pthread_mutex_lock (stripe (pull, c));
      if (get_state (pull, c) == LOCAL)
        r3map_pull_state_clear_dirty (pull->state, c);
      pthread_mutex_unlock (stripe (pull, c));
    }
  }
  else if (r == -1) {
    /* Not known to be durable: keep them for the next flush. */
    pthread_mutex_lock (&pull->push_lock);
    g_array_append_vals (pull->pushed, done->data, done->len);
    pthread_mutex_unlock (&pull->push_lock);
    errno = EIO;
  }
  pthread_mutex_unlock (&pull->flush_lock);
  return r;
}

/* Return when CHUNK, dirty or pushing when a flush started, has been
 * pushed by a push that claimed it after that. */
static int
push_covered (struct r3map_pull *pull, uint64_t chunk, char *buf)
{
  unsigned failures = 0;

  for (;;) {
    unsigned s = get_state (pull, chunk);

    if (s == PUSHING || s == REDIRTIED) {
      r3map_chunkmap_wait_while (pull->map, chunk, s, WAIT_SLICE_MS);
      continue;
    }
    if (s != DIRTY)
      return 0;                 /* Pushed by someone else. */
    if (r3map_chunkmap_cas (pull->map, chunk, DIRTY, PUSHING) != 1)
      continue;
    if (push_chunk (pull, chunk, buf) == 0)
      return 0;
    if (failures++ >= pull->p.retries || atomic_load (&pull->stopping)) {
      errno = EIO;
      return -1;
    }
    nap (pull, retry_delay (pull, failures - 1));
  }
}

static void *
push_worker (void *arg)
{
  struct r3map_pull *pull = arg;
  char *buf = g_malloc (pull->chunk_size);
  unsigned seen = 0;

  for (;;) {
    struct timespec ts;
    uint64_t c, pushed = 0;

    deadline (&ts, pull->p.push_interval_ms);
    pthread_mutex_lock (&pull->wake_lock);
    while (!atomic_load (&pull->stopping) && pull->push_kicks == seen &&
           pthread_cond_timedwait (&pull->wake, &pull->wake_lock, &ts) == 0)
      ;
    seen = pull->push_kicks;
    pthread_mutex_unlock (&pull->wake_lock);
    if (atomic_load (&pull->stopping))
      break;
    if (backing_off (pull))
      continue;

    for (c = r3map_chunkmap_find (pull->map, 0, DIRTY); c < pull->nchunks;
         c = r3map_chunkmap_find (pull->map, c + 1, DIRTY)) {
      if (atomic_load (&pull->stopping))
        break;
      if (r3map_chunkmap_cas (pull->map, c, DIRTY, PUSHING) != 1)
        continue;
      if (push_chunk (pull, c, buf) == -1) {
        backoff_fail (pull);
        break;
      }
      backoff_reset (pull);
      pushed++;
    }
    if (pushed > 0)
      flush_pushed (pull);
  }
  g_free (buf);
  return NULL;
}

/* ---- Checkpoints ------------------------------------------------------ */

/* Record in the state file the chunks that became local: first make
 * their data durable in the local store.  With SYNC, the state file is
 * written to disk too.
 *
 * A chunk is recorded only if it stayed local from before the flush
 * until it is recorded: r3map_pull_invalidate may make it missing
 * meanwhile, and its next fetch may land after the flush.  Invalidate
 * marks it "moved" for that (both under the chunk's stripe lock), so
 * that it does not have to wait for a checkpoint's flush, which can
 * take long and would be a leecher's downtime at finalize. */
static int
checkpoint (struct r3map_pull *pull, bool sync)
{
  g_autoptr (GArray) fresh = NULL;
  _Atomic uint64_t *moved;
  uint64_t c;
  guint i;
  int r = 0;

  if (pull->state == NULL)
    return sync ? r3map_store_flush (pull->local) : 0;

  pthread_mutex_lock (&pull->ckpt_lock);
  /* Published under ckpt_lock (change_bits): fixed while we hold it. */
  moved = atomic_load (&pull->moved);
  fresh = g_array_new (FALSE, FALSE, sizeof (uint64_t));
  if (count_local (pull) != atomic_load (&pull->persisted_local)) {
    for (c = 0; c < pull->nchunks; ++c) {
      bool local;

      if (get_state (pull, c) < LOCAL ||
          r3map_pull_state_local (pull->state, c))
        continue;
      /* From now on an invalidate of C shows in its bit. */
      pthread_mutex_lock (stripe (pull, c));
      bit_take (moved, c);
      local = get_state (pull, c) >= LOCAL;
      pthread_mutex_unlock (stripe (pull, c));
      if (local)
        g_array_append_val (fresh, c);
    }
  }
  if (fresh->len > 0 || sync)
    r = r3map_store_flush (pull->local);
  if (r == 0) {
    for (i = 0; i < fresh->len; ++i) {
      c = g_array_index (fresh, uint64_t, i);
      pthread_mutex_lock (stripe (pull, c));
      if (!bit_take (moved, c) && get_state (pull, c) >= LOCAL &&
          !r3map_pull_state_local (pull->state, c)) {
        r3map_pull_state_set_local (pull->state, c);
        atomic_fetch_add (&pull->persisted_local, 1);
      }
      pthread_mutex_unlock (stripe (pull, c));
    }
    if (sync && r3map_pull_state_sync (pull->state) == -1)
      r = -1;
  }
  pthread_mutex_unlock (&pull->ckpt_lock);
  return r;
}

/* ---- Status ----------------------------------------------------------- */

static unsigned
phase (struct r3map_pull *pull)
{
  unsigned leech_phase;

  pthread_mutex_lock (&pull->q_lock);
  leech_phase = pull->leech.phase;
  pthread_mutex_unlock (&pull->q_lock);
  if (leech_phase)
    return leech_phase;
  if (complete (pull))
    return R3MAP_PHASE_COMPLETE;
  if (pull->p.pull_workers == 0)
    return R3MAP_PHASE_IDLE;
  if (backing_off (pull))
    return R3MAP_PHASE_BACKOFF;
  return R3MAP_PHASE_PULLING;
}

void
r3map_pull_counters (struct r3map_pull *pull, struct r3map_pull_counters *c)
{
  memset (c, 0, sizeof *c);
  c->pid = getpid ();
  c->phase = phase (pull);
  c->size = pull->size;
  c->chunk_size = pull->chunk_size;
  c->chunks_total = pull->nchunks;
  c->chunks_local = count_local (pull);
  c->chunks_dirty = count_dirty (pull);
  c->bytes_pulled = atomic_load (&pull->bytes_pulled);
  c->bytes_pushed = atomic_load (&pull->bytes_pushed);
  c->pull_rate = atomic_load (&pull->pull_rate);
  c->push_rate = atomic_load (&pull->push_rate);
  c->fetches_on_demand = atomic_load (&pull->fetches_on_demand);
  c->fetch_errors = atomic_load (&pull->fetch_errors);
  c->push_errors = atomic_load (&pull->push_errors);
  c->started_ms = pull->started_ms;
  c->updated_ms = realtime_ms ();
  pthread_mutex_lock (&pull->q_lock);
  c->leech_rounds = pull->leech.leech_rounds;
  c->leech_seq = pull->leech.leech_seq;
  c->leech_finalized_ms = pull->leech.leech_finalized_ms;
  c->leech_final_chunks = pull->leech.leech_final_chunks;
  c->leech_finalize_us = pull->leech.leech_finalize_us;
  pthread_mutex_unlock (&pull->q_lock);
  /* The first publish that sees the copy complete and final dates it:
   * whoever makes it so publishes at once (the worker or client that
   * fetched the last chunk, finalize), so the date is the event's, not
   * the housekeeper's next tick. */
  if (c->chunks_local == c->chunks_total &&
      !atomic_load (&pull->expect_changes)) {
    uint64_t zero = 0;

    atomic_compare_exchange_strong (&pull->complete_ms, &zero, c->updated_ms);
  }
  else
    atomic_store (&pull->complete_ms, 0);
  c->complete_ms = atomic_load (&pull->complete_ms);
}

void
r3map_pull_leech_publish (struct r3map_pull *pull,
                          const struct r3map_pull_counters *c)
{
  pthread_mutex_lock (&pull->q_lock);
  pull->leech = *c;
  pthread_mutex_unlock (&pull->q_lock);
  /* At once, not at the housekeeper's next tick: r3map finalize
   * watches for this. */
  publish_status (pull);
}

/* Publishes the counters, records new local chunks, and lets the
 * remote go when it is not needed any more. */
static void *
housekeeper (void *arg)
{
  struct r3map_pull *pull = arg;
  uint64_t last_ckpt = now_ms (), last_rate = now_ms ();
  uint64_t last_pulled = 0, last_pushed = 0;
  bool released = false;

  while (!atomic_load (&pull->stopping)) {
    uint64_t now = now_ms ();

    if (now - last_rate >= 200) {
      /* Rates over about the last second: a moving average of the
       * rates of each tick. */
      uint64_t pulled = atomic_load (&pull->bytes_pulled);
      uint64_t pushed = atomic_load (&pull->bytes_pushed);
      uint64_t dt = now - last_rate;

      atomic_store (&pull->pull_rate,
                    (atomic_load (&pull->pull_rate) * 3 +
                     (pulled - last_pulled) * 1000 / dt) / 4);
      atomic_store (&pull->push_rate,
                    (atomic_load (&pull->push_rate) * 3 +
                     (pushed - last_pushed) * 1000 / dt) / 4);
      last_pulled = pulled;
      last_pushed = pushed;
      last_rate = now;
    }
    if (now - last_ckpt >= pull->p.checkpoint_ms) {
      checkpoint (pull, false);
      last_ckpt = now;
    }
    /* A leecher's remote may change until finalize: it is let go only
     * once complete with no change expected, and again whenever it was
     * needed since. */
    if (!pull->p.push && complete (pull) &&
        !atomic_load (&pull->expect_changes)) {
      if (!released)
        pool_close_idle (pull);
      released = true;
    }
    else
      released = false;
    publish_status (pull);
    nap (pull, 200);
  }
  return NULL;
}

/* ---- Priority ---------------------------------------------------------- */

static bool
range_error (GError **error, const char *prefix, const char *token,
             const char *why)
{
  g_set_error (error, R3MAP_ERROR, EINVAL, "%s: '%s': %s", prefix, token, why);
  return false;
}

static bool
size_of (const char *s, uint64_t *ret)
{
  g_autoptr (GError) ignored = NULL;

  return *s != '\0' && r3map_parse_size ("", s, ret, &ignored);
}

static bool
parse_ranges (const char *prefix, const char *text, uint64_t size,
              GArray *ranges, GError **error)
{
  static const char syntax[] =
    "not a range (A-B, A+N, A-, -N or A, sizes with K, M, G... suffixes)";
  g_auto (GStrv) tokens = g_strsplit (text, ",", -1);
  guint i;

  for (i = 0; tokens[i] != NULL; ++i) {
    char *tok = g_strstrip (tokens[i]);
    char *sep;
    uint64_t a, b, pair[2];

    if (*tok == '\0')
      continue;
    if (tok[0] == '-') {                        /* -N */
      if (!size_of (tok + 1, &b))
        return range_error (error, prefix, tok, syntax);
      a = b < size ? size - b : 0;
      b = size;
    }
    else if ((sep = strchr (tok, '+')) != NULL) {       /* A+N */
      *sep = '\0';
      if (!size_of (tok, &a) || !size_of (sep + 1, &b)) {
        *sep = '+';
        return range_error (error, prefix, tok, syntax);
      }
      b = a + b < a ? UINT64_MAX : a + b;
    }
    else if ((sep = strchr (tok, '-')) != NULL) {       /* A-B, A- */
      *sep = '\0';
      if (!size_of (tok, &a) ||
          (sep[1] != '\0' && !size_of (sep + 1, &b))) {
        *sep = '-';
        return range_error (error, prefix, tok, syntax);
      }
      if (sep[1] == '\0')
        b = size;
      else if (b <= a) {
        *sep = '-';
        return range_error (error, prefix, tok, "the end is not after the start");
      }
    }
    else {                                      /* A */
      if (!size_of (tok, &a))
        return range_error (error, prefix, tok, syntax);
      b = a + 1;
    }
    b = MIN (b, size);
    if (a >= b)
      continue;                 /* Beyond the end of this disk. */
    pair[0] = a;
    pair[1] = b;
    g_array_append_vals (ranges, pair, 2);
  }
  return true;
}

bool
r3map_pull_parse_ranges (const char *key, const char *value, uint64_t size,
                         GArray *ranges, GError **error)
{
  g_autofree char *prefix = g_strdup_printf ("%s=%s", key, value);

  return parse_ranges (prefix, value, size, ranges, error);
}

static bool
parse_hints (const char *path, uint64_t size, GArray *ranges, GError **error)
{
  g_autofree char *text = NULL;
  g_auto (GStrv) lines = NULL;
  GError *e = NULL;
  guint i;

  if (!g_file_get_contents (path, &text, NULL, &e)) {
    g_set_error (error, R3MAP_ERROR, EINVAL, "pull-hints=%s: %s", path,
                 e->message);
    g_error_free (e);
    return false;
  }
  lines = g_strsplit (text, "\n", -1);
  for (i = 0; lines[i] != NULL; ++i) {
    g_autofree char *prefix = NULL;
    char *hash = strchr (lines[i], '#');

    if (hash)
      *hash = '\0';
    prefix = g_strdup_printf ("pull-hints=%s: line %u", path, i + 1);
    if (!parse_ranges (prefix, lines[i], size, ranges, error))
      return false;
  }
  return true;
}

static void
add_order (struct r3map_pull *pull, GArray *bytes)
{
  guint i;

  for (i = 0; i + 1 < bytes->len; i += 2) {
    uint64_t a = g_array_index (bytes, uint64_t, i);
    uint64_t b = g_array_index (bytes, uint64_t, i + 1);
    struct range r = { a >> pull->shift, ((b - 1) >> pull->shift) + 1 };
    g_array_append_val (pull->order, r);
  }
}

/* ---- Life cycle -------------------------------------------------------- */

/* Chunks from the state file: local, dirty, or written and never
 * flushed (then fetched again). */
static int
load_state (struct r3map_pull *pull)
{
  uint64_t c, n = 0;

  for (c = 0; c < pull->nchunks; ++c) {
    bool local = r3map_pull_state_local (pull->state, c);
    bool dirty = r3map_pull_state_dirty (pull->state, c);

    if (local) {
      if (r3map_chunkmap_set (pull->map, c,
                              dirty && pull->p.push ? DIRTY : LOCAL) == -1)
        return -1;
      n++;
    }
    else if (dirty)
      r3map_pull_state_clear_dirty (pull->state, c);
  }
  atomic_store (&pull->persisted_local, n);
  return 0;
}

struct r3map_pull *
r3map_pull_new (const struct r3map_pull_params *params, uint64_t size,
                struct r3map_store *local,
                const struct r3map_pull_remote *remote,
                struct r3map_store *first, GError **error)
{
  struct r3map_pull *pull;
  g_autoptr (GArray) bytes = NULL;
  struct range all;
  unsigned i;

  if (params->chunk_size == 0 || !r3map_is_power_of_2 (params->chunk_size) ||
      params->chunk_size > UINT32_MAX / 2) {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "chunk-size=%" PRIu64 ": must be a power of 2", params->chunk_size);
    r3map_store_close (first);
    return NULL;
  }
  if (size == 0) {
    g_set_error (error, R3MAP_ERROR, EINVAL, "the remote disk is empty");
    r3map_store_close (first);
    return NULL;
  }
  if (local->size < size) {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "the local store has %" PRIu64 " bytes, less than the "
                 "remote's %" PRIu64, local->size, size);
    r3map_store_close (first);
    return NULL;
  }

  pull = g_new0 (struct r3map_pull, 1);
  pull->p = *params;
  pull->priority = g_strdup (params->priority);
  pull->hints_file = g_strdup (params->hints_file);
  pull->state_file = g_strdup (params->state_file);
  pull->status_file = g_strdup (params->status_file);
  pull->identity = g_strdup (params->identity ? params->identity : "");
  pull->p.priority = pull->priority;
  pull->p.hints_file = pull->hints_file;
  pull->p.state_file = pull->state_file;
  pull->p.status_file = pull->status_file;
  pull->p.identity = pull->identity;
  if (pull->p.backoff_max_ms == 0)
    pull->p.backoff_max_ms = 1;
  if (pull->p.checkpoint_ms == 0)
    pull->p.checkpoint_ms = 1000;
  if (pull->p.push_interval_ms == 0)
    pull->p.push_interval_ms = 1;

  pull->size = size;
  pull->chunk_size = params->chunk_size;
  pull->shift = __builtin_ctzll (params->chunk_size);
  pull->nchunks = (size - 1) / params->chunk_size + 1;
  pull->local = local;
  pull->remote = *remote;
  pull->fresh = true;

  pthread_mutex_init (&pull->pool_lock, NULL);
  pthread_cond_init (&pull->pool_cond, NULL);
  pthread_mutex_init (&pull->q_lock, NULL);
  pthread_mutex_init (&pull->push_lock, NULL);
  pthread_mutex_init (&pull->flush_lock, NULL);
  pthread_mutex_init (&pull->ckpt_lock, NULL);
  pthread_mutex_init (&pull->status_lock, NULL);
  pthread_mutex_init (&pull->wake_lock, NULL);
  {
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_cond_init (&pull->wake, &attr);
    pthread_condattr_destroy (&attr);
  }
  for (i = 0; i < STRIPES; ++i)
    pthread_mutex_init (&pull->stripes[i], NULL);
  pull->pushed = g_array_new (FALSE, FALSE, sizeof (uint64_t));
  pull->order = g_array_new (FALSE, FALSE, sizeof (struct range));

  pull->nslots = params->pull_workers +
    (params->push ? params->push_workers : 0) + ON_DEMAND_SLOTS;
  pull->slots = g_new0 (struct slot, pull->nslots);
  pull->slots[0].store = first;
  first = NULL;                 /* Ours now, whatever happens. */

  pull->map = r3map_chunkmap_new (pull->nchunks);
  if (pull->map == NULL) {
    g_set_error (error, R3MAP_ERROR, errno, "chunk map of %" PRIu64
                 " chunks: %s", pull->nchunks, g_strerror (errno));
    goto fail;
  }

  bytes = g_array_new (FALSE, FALSE, sizeof (uint64_t));
  if (pull->priority &&
      !r3map_pull_parse_ranges ("pull-priority", pull->priority, size,
                                bytes, error))
    goto fail;
  if (pull->hints_file && !parse_hints (pull->hints_file, size, bytes, error))
    goto fail;
  add_order (pull, bytes);
  all.start = 0;
  all.end = pull->nchunks;
  g_array_append_val (pull->order, all);

  if (pull->state_file) {
    bool created;

    pull->state = r3map_pull_state_open (pull->state_file, size,
                                         pull->chunk_size, pull->identity,
                                         &created, error);
    if (pull->state == NULL)
      goto fail;
    pull->fresh = created;
    if (load_state (pull) == -1) {
      g_set_error (error, R3MAP_ERROR, errno, "state=%s: %s",
                   pull->state_file, g_strerror (errno));
      goto fail;
    }
  }
  if (pull->status_file) {
    struct r3map_pull_counters c;

    pull->status = r3map_pull_status_create (pull->status_file, error);
    if (pull->status == NULL)
      goto fail;
    r3map_pull_counters (pull, &c);   /* never a page of zeros */
    r3map_pull_status_publish (pull->status, &c);
  }
  return pull;

 fail:
  r3map_pull_free (pull);
  return NULL;
}

bool
r3map_pull_fresh (struct r3map_pull *pull)
{
  return pull->fresh;
}

uint64_t
r3map_pull_size (struct r3map_pull *pull)
{
  return pull->size;
}

unsigned
r3map_pull_chunk_state (struct r3map_pull *pull, uint64_t chunk)
{
  return get_state (pull, chunk);
}

bool
r3map_pull_start (struct r3map_pull *pull, GError **error)
{
  unsigned i;
  int err;

  pull->started_ms = realtime_ms ();
  atomic_store (&pull->pull_after, now_ms () + pull->p.pull_delay_ms);
  pull->pullers = g_new0 (pthread_t, MAX (pull->p.pull_workers, 1));
  pull->pushers = g_new0 (pthread_t, MAX (pull->p.push_workers, 1));

  err = pthread_create (&pull->keeper, NULL, housekeeper, pull);
  if (err)
    goto fail;
  pull->keeper_started = true;
  for (i = 0; i < pull->p.pull_workers; ++i) {
    err = pthread_create (&pull->pullers[i], NULL, pull_worker, pull);
    if (err)
      goto fail;
    pull->npullers++;
  }
  for (i = 0; pull->p.push && i < pull->p.push_workers; ++i) {
    err = pthread_create (&pull->pushers[i], NULL, push_worker, pull);
    if (err)
      goto fail;
    pull->npushers++;
  }
  return true;

 fail:
  g_set_error (error, R3MAP_ERROR, err, "cannot start a thread: %s",
               g_strerror (err));
  return false;
}

static void
stop_threads (struct r3map_pull *pull)
{
  unsigned i;

  atomic_store (&pull->stopping, true);
  wake_all (pull);
  for (i = 0; i < pull->npullers; ++i)
    pthread_join (pull->pullers[i], NULL);
  for (i = 0; i < pull->npushers; ++i)
    pthread_join (pull->pushers[i], NULL);
  if (pull->keeper_started)
    pthread_join (pull->keeper, NULL);
  pull->npullers = pull->npushers = 0;
  pull->keeper_started = false;
}

void
r3map_pull_free (struct r3map_pull *pull)
{
  struct r3map_pull_counters c;
  unsigned i;

  if (pull == NULL)
    return;
  /* Push what is dirty while the workers still help. */
  if (pull->map && pull->p.push && pull->keeper_started)
    r3map_pull_flush (pull);
  stop_threads (pull);
  if (pull->map) {
    checkpoint (pull, true);
    r3map_pull_counters (pull, &c);
    c.phase = R3MAP_PHASE_STOPPED;
    r3map_pull_status_publish (pull->status, &c);
  }
  r3map_pull_status_close (pull->status);
  r3map_pull_state_close (pull->state);
  for (i = 0; i < pull->nslots; ++i)
    r3map_store_close (pull->slots[i].store);
  g_free (pull->slots);
  free ((void *) atomic_load (&pull->stale));
  free ((void *) atomic_load (&pull->moved));
  r3map_chunkmap_free (pull->map);
  g_array_free (pull->pushed, TRUE);
  g_array_free (pull->order, TRUE);
  g_free (pull->pullers);
  g_free (pull->pushers);
  for (i = 0; i < STRIPES; ++i)
    pthread_mutex_destroy (&pull->stripes[i]);
  pthread_mutex_destroy (&pull->pool_lock);
  pthread_cond_destroy (&pull->pool_cond);
  pthread_mutex_destroy (&pull->q_lock);
  pthread_mutex_destroy (&pull->push_lock);
  pthread_mutex_destroy (&pull->flush_lock);
  pthread_mutex_destroy (&pull->ckpt_lock);
  pthread_mutex_destroy (&pull->status_lock);
  pthread_mutex_destroy (&pull->wake_lock);
  pthread_cond_destroy (&pull->wake);
  g_free (pull->priority);
  g_free (pull->hints_file);
  g_free (pull->state_file);
  g_free (pull->status_file);
  g_free (pull->identity);
  g_free (pull);
}

bool
r3map_pull_wait_complete (struct r3map_pull *pull, int64_t timeout_ms)
{
  uint64_t end = now_ms () + (timeout_ms < 0 ? UINT64_MAX / 2 : (uint64_t) timeout_ms);

  while (!complete (pull)) {
    if (now_ms () >= end)
      return false;
    usleep (10000);
  }
  return true;
}

/* ---- What a leecher needs --------------------------------------------- */

/* Allocate the stale and moved bits, if not yet (with no memory they
 * stay NULL).  Called by the one thread that changes the remote's
 * chunks (the leecher's). */
static void
change_bits (struct r3map_pull *pull)
{
  _Atomic uint64_t *stale, *moved;

  if (atomic_load (&pull->stale) != NULL)
    return;
  stale = calloc ((pull->nchunks + 63) / 64, sizeof *stale);
  moved = calloc ((pull->nchunks + 63) / 64, sizeof *moved);
  if (stale == NULL || moved == NULL) {
    free ((void *) stale);
    free ((void *) moved);
    return;
  }
  /* A checkpoint running now looked at no moved bits: wait for it. */
  pthread_mutex_lock (&pull->ckpt_lock);
  atomic_store (&pull->stale, stale);
  atomic_store (&pull->moved, moved);
  pthread_mutex_unlock (&pull->ckpt_lock);
}

void
r3map_pull_expect_changes (struct r3map_pull *pull, bool expect)
{
  if (expect)
    change_bits (pull);
  atomic_store (&pull->expect_changes, expect);
  wake_all (pull);
  /* Finalize of a copy already complete: it is independent now. */
  if (!expect && complete (pull))
    publish_status (pull);
}

uint64_t
r3map_pull_invalidate (struct r3map_pull *pull, const uint64_t *chunks,
                       size_t n)
{
  _Atomic uint64_t *stale = atomic_load (&pull->stale);
  _Atomic uint64_t *moved = atomic_load (&pull->moved);
  uint64_t done = 0;
  size_t i;

  if (stale == NULL) {
    change_bits (pull);
    stale = atomic_load (&pull->stale);
    moved = atomic_load (&pull->moved);
  }
  /* Without memory for the bits, fetches in flight and checkpoints are
   * waited for. */
  if (moved == NULL)
    pthread_mutex_lock (&pull->ckpt_lock);

  for (i = 0; i < n; ++i) {
    uint64_t c = chunks[i];

    if (c >= pull->nchunks)
      continue;
    if (stale == NULL)
      for (;;) {
        unsigned s = get_state (pull, c);

        if (!in_fetch (s) || atomic_load (&pull->stopping))
          break;
        r3map_chunkmap_wait_while (pull->map, c, s, WAIT_SLICE_MS);
      }
    pthread_mutex_lock (stripe (pull, c));
    for (;;) {
      unsigned s = get_state (pull, c);

      if (in_fetch (s) && stale) {
        /* A fetch in flight may have read the chunk before it changed:
         * it will make it missing when it ends (fetched), unless a
         * client's write replaced it whole (settle).  Waiting for
         * it instead made finalize, and so the downtime, as long as
         * the fetches in flight. */
        bit_set (stale, c);
        done++;
      }
      else if (s == LOCAL) {
        int r = r3map_chunkmap_cas (pull->map, c, LOCAL, MISSING);
        if (r == 0)
          continue;             /* written meanwhile: look again */
        if (r == 1) {
          done++;
          bit_set (moved, c);   /* for a checkpoint running now */
          if (pull->state && r3map_pull_state_local (pull->state, c)) {
            r3map_pull_state_clear_local (pull->state, c);
            atomic_fetch_sub (&pull->persisted_local, 1);
          }
        }
      }
      /* Missing: a fetch that starts after this point reads the new
       * data, which is what the caller's rule needs.  Dirty or being
       * overwritten: the client's own data, left alone. */
      break;
    }
    pthread_mutex_unlock (stripe (pull, c));
  }
  if (moved == NULL)
    pthread_mutex_unlock (&pull->ckpt_lock);

  /* The pull order is not started again: these chunks are fetched when
   * the walk through the disk comes back to them, so a chunk that keeps
   * changing during the first copy is fetched again once, after it. */
  wake_all (pull);
  return done;
}

void
r3map_pull_hold (struct r3map_pull *pull, bool hold)
{
  if (hold)
    atomic_store (&pull->hold, true);
  else if (atomic_load (&pull->hold)) {
    /* Released: the delay counts from now (a leecher with precopy=off
     * releases the pull at finalize, while QEMU is still sending the
     * rest of the guest's memory), and is set before the workers can
     * see the release.  A pull never held keeps running. */
    atomic_store (&pull->pull_after, now_ms () + pull->p.pull_delay_ms);
    atomic_store (&pull->hold, false);
  }
  wake_all (pull);
}

bool
r3map_pull_first_pass_done (struct r3map_pull *pull)
{
  bool done;

  pthread_mutex_lock (&pull->q_lock);
  done = pull->order_i >= pull->order->len;
  pthread_mutex_unlock (&pull->q_lock);
  return done;
}

void
r3map_pull_prioritize (struct r3map_pull *pull, const uint64_t *chunks,
                       size_t n)
{
  size_t i;

  for (i = 0; i < n && i < URGENT_MAX; ++i)
    if (chunks[i] < pull->nchunks && get_state (pull, chunks[i]) == MISSING)
      queue_urgent (pull, chunks[i]);
  wake_all (pull);
}

bool
r3map_pull_leech_get (struct r3map_pull *pull, struct r3map_leech_record *r)
{
  if (pull->state == NULL) {
    memset (r, 0, sizeof *r);
    return false;
  }
  return r3map_pull_state_get_leech (pull->state, r);
}

int
r3map_pull_leech_set (struct r3map_pull *pull,
                      const struct r3map_leech_record *r)
{
  if (pull->state == NULL)
    return 0;
  /* Not under the checkpoint lock: a checkpoint can hold it for as long
   * as the local store takes to flush, and at finalize this record is
   * downtime.  The chunk bits it vouches for are right whenever it is
   * written: a checkpoint sets a bit only after its flush, and an
   * invalidate clears it before the leecher records its new number. */
  return r3map_pull_state_set_leech (pull->state, r);
}

/* ---- The data path ----------------------------------------------------- */

static bool
check_range (struct r3map_pull *pull, uint32_t count, uint64_t offset)
{
  if (offset > pull->size || count > pull->size - offset) {
    errno = ERANGE;
    return false;
  }
  return true;
}

int
r3map_pull_prefetch (struct r3map_pull *pull, uint32_t count, uint64_t offset)
{
  uint64_t first, last;

  if (!check_range (pull, count, offset))
    return -1;
  if (count == 0)
    return 0;
  first = offset >> pull->shift;
  last = (offset + count - 1) >> pull->shift;
  return ensure_local_range (pull, first, last);
}

int
r3map_pull_pread (struct r3map_pull *pull, void *buf, uint32_t count,
                  uint64_t offset)
{
  if (r3map_pull_prefetch (pull, count, offset) == -1)
    return -1;
  if (count == 0)
    return 0;
  return r3map_store_pread (pull->local, buf, count, offset);
}

/* After the local store took a write to CHUNK.  CLAIMED: the writer
 * held it (overwriting or taken) because it overwrote it whole. */
static int
written (struct r3map_pull *pull, uint64_t chunk, bool claimed)
{
  if (claimed) {
    int r = 0;

    /* Taken from a fetch still in flight: it settles the chunk when
     * it ends (fetched), unless it just gave the chunk back. */
    pthread_mutex_lock (stripe (pull, chunk));
    while (r == 0) {
      unsigned s = get_state (pull, chunk);

      if (s == TAKEN)
        r = r3map_chunkmap_cas (pull->map, chunk, TAKEN, OVERWRITTEN);
      else if (s == OVERWRITING)
        r = settle (pull, chunk, OVERWRITING);
      else
        r = 1;                  /* not reached: the writer owns it */
    }
    pthread_mutex_unlock (stripe (pull, chunk));
    return r == -1 ? -1 : 0;
  }
  if (!pull->p.push)
    return 0;
  for (;;) {
    unsigned s = get_state (pull, chunk);
    unsigned to = s == PUSHING ? REDIRTIED : DIRTY;
    int r;

    if (s == DIRTY || s == REDIRTIED)
      break;
    r = r3map_chunkmap_cas (pull->map, chunk, s, to);
    if (r == -1)
      return -1;
    if (r == 1)
      break;
  }
  if (pull->state) {
    pthread_mutex_lock (stripe (pull, chunk));
    r3map_pull_state_set_dirty (pull->state, chunk);
    pthread_mutex_unlock (stripe (pull, chunk));
  }
  return 0;
}

/* A client's write of the whole CHUNK, claimed by it, failed: the
 * local store may hold part of it.  Without a fetch in flight the
 * chunk is missing again; taken from one, it goes back to it, which
 * lands what it read (if it has not passed that point yet) or makes it
 * missing (fetched). */
static void
overwrite_failed (struct r3map_pull *pull, uint64_t chunk)
{
  int r = 0;

  pthread_mutex_lock (stripe (pull, chunk));
  while (r == 0) {
    unsigned s = get_state (pull, chunk);

    if (s == TAKEN)
      r = r3map_chunkmap_cas (pull->map, chunk, TAKEN, FETCHING);
    else if (s == OVERWRITING) {
      r = r3map_chunkmap_cas (pull->map, chunk, OVERWRITING, MISSING);
      if (r == 1)
        stale_take (pull, chunk);
    }
    else
      r = 1;                    /* not reached: the writer owns it */
  }
  pthread_mutex_unlock (stripe (pull, chunk));
}

int
r3map_pull_pwrite (struct r3map_pull *pull, const void *buf, uint32_t count,
                   uint64_t offset)
{
  uint64_t first, last, c, end = offset + count;
  g_autofree bool *claimed = NULL;
  int r = 0, err = 0;

  if (!check_range (pull, count, offset))
    return -1;
  if (count == 0)
    return 0;
  first = offset >> pull->shift;
  last = (end - 1) >> pull->shift;
  claimed = g_new0 (bool, last - first + 1);

  /* In ascending order: claim the chunks overwritten whole, fetch the
   * others.  A chunk overwritten whole is not waited for while a fetch
   * of it reads the remote (a run can take a while): the write takes
   * it over, and the fetch drops what it read of it. */
  for (c = first; c <= last && r == 0; ++c) {
    uint64_t cstart = chunk_offset (pull, c);
    uint64_t cend = MIN (cstart + pull->chunk_size, pull->size);

    if (offset > cstart || end < cend) {
      r = ensure_local (pull, c);
      continue;
    }
    for (;;) {
      unsigned s = get_state (pull, c);
      int got;

      if (s >= LOCAL)
        break;
      if (s == LANDING || s == OVERWRITING || s == TAKEN) {
        r3map_chunkmap_wait_while (pull->map, c, s, WAIT_SLICE_MS);
        if (atomic_load (&pull->stopping)) {
          errno = ESHUTDOWN;
          r = -1;
          break;
        }
        continue;
      }
      /* Missing: ours to overwrite.  Fetching, or overwritten while a
       * fetch is in flight: taken from the fetch. */
      got = r3map_chunkmap_cas (pull->map, c, s,
                                s == MISSING ? OVERWRITING : TAKEN);
      if (got == -1) {
        r = -1;
        break;
      }
      if (got == 1) {
        claimed[c - first] = true;
        break;
      }
    }
  }
  if (r == 0)
    r = r3map_store_pwrite (pull->local, buf, count, offset, false);
  if (r == -1)
    err = errno;

  /* Release the claims; record what was written.  After a failure the
   * local store may hold part of the write: chunks that were local
   * stay so (and are pushed as they are), claimed ones are fetched
   * again. */
  for (c = first; c <= last; ++c) {
    if (r == -1) {
      if (claimed[c - first])
        overwrite_failed (pull, c);
      else if (get_state (pull, c) >= LOCAL)
        written (pull, c, false);
    }
    else if (written (pull, c, claimed[c - first]) == -1) {
      err = errno;
      r = -1;
    }
  }
  if (r == -1)
    errno = err;
  return r;
}

/* A chunk being overwritten whole, or written so while a fetch of it
 * was in flight, is recorded neither local nor dirty until that write
 * and that fetch end (written, fetched); the local store may hold the
 * last acknowledged write of it, or a newer one half done.  A flush
 * waits for those there when it starts. */
static bool
overwrite_pending (unsigned state)
{
  return state == OVERWRITING || state == TAKEN || state == OVERWRITTEN;
}

static int
wait_overwritten (struct r3map_pull *pull)
{
  g_autoptr (GArray) todo = NULL;
  static const unsigned states[] = { OVERWRITING, TAKEN, OVERWRITTEN };
  uint64_t c;
  guint i;

  if (count (pull, OVERWRITING) + count (pull, TAKEN) +
      count (pull, OVERWRITTEN) == 0)
    return 0;
  todo = g_array_new (FALSE, FALSE, sizeof (uint64_t));
  for (i = 0; i < G_N_ELEMENTS (states); ++i)
    for (c = r3map_chunkmap_find (pull->map, 0, states[i]); c < pull->nchunks;
         c = r3map_chunkmap_find (pull->map, c + 1, states[i]))
      g_array_append_val (todo, c);
  for (i = 0; i < todo->len; ++i) {
    c = g_array_index (todo, uint64_t, i);
    for (;;) {
      unsigned s = get_state (pull, c);

      if (!overwrite_pending (s))
        break;
      if (atomic_load (&pull->stopping)) {
        errno = ESHUTDOWN;
        return -1;
      }
      r3map_chunkmap_wait_while (pull->map, c, s, WAIT_SLICE_MS);
    }
  }
  return 0;
}

int
r3map_pull_flush (struct r3map_pull *pull)
{
  g_autoptr (GArray) todo = NULL;
  g_autofree char *buf = NULL;
  uint64_t c;
  guint i;

  if (wait_overwritten (pull) == -1 || checkpoint (pull, true) == -1)
    return -1;
  if (!pull->p.push)
    return 0;

  /* What is dirty now must reach the remote before we return. */
  todo = g_array_new (FALSE, FALSE, sizeof (uint64_t));
  for (c = r3map_chunkmap_find (pull->map, 0, DIRTY); c < pull->nchunks;
       c = r3map_chunkmap_find (pull->map, c + 1, DIRTY))
    g_array_append_val (todo, c);
  for (c = r3map_chunkmap_find (pull->map, 0, PUSHING); c < pull->nchunks;
       c = r3map_chunkmap_find (pull->map, c + 1, PUSHING))
    g_array_append_val (todo, c);
  for (c = r3map_chunkmap_find (pull->map, 0, REDIRTIED); c < pull->nchunks;
       c = r3map_chunkmap_find (pull->map, c + 1, REDIRTIED))
    g_array_append_val (todo, c);
  if (todo->len == 0)
    goto flush;                 /* Still flush: a push may be unflushed. */

  /* Let the push workers help. */
  pthread_mutex_lock (&pull->wake_lock);
  pull->push_kicks++;
  pthread_cond_broadcast (&pull->wake);
  pthread_mutex_unlock (&pull->wake_lock);

  buf = g_try_malloc (pull->chunk_size);
  if (buf == NULL) {
    errno = ENOMEM;
    return -1;
  }
  for (i = 0; i < todo->len; ++i)
    if (push_covered (pull, g_array_index (todo, uint64_t, i), buf) == -1)
      return -1;
 flush:
  return flush_pushed (pull);
}
