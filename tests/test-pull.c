/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Unit tests of the pull engine (lib/pull.c) without nbdkit: the local
 * store is a temporary file, the remote a buffer behind a store that
 * counts what it is asked and fails when told to. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "pull.h"

#define CHUNK 4096
#define NCHUNKS 64
#define SIZE (CHUNK * NCHUNKS - 100)    /* a short last chunk */

/* The remote: a buffer, shared by all the stores opened on it. */
static struct remote {
  pthread_mutex_t lock;
  char data[SIZE];
  atomic_uint reads, writes, flushes, opens;
  atomic_uint chunk_reads[NCHUNKS];
  atomic_bool failing;
  atomic_uint first_read_chunk;     /* +1, 0 = none yet */
  /* A gate: the next read of chunk gate_chunk - 1 copies its data,
   * then waits until the gate opens (a fetch in flight). */
  atomic_uint gate_chunk;           /* +1, 0 = none */
  atomic_bool gate_held;            /* a read is waiting at the gate */
  pthread_cond_t gate_cond;
} remote;

static int
r_pread (void *h, void *buf, uint32_t count, uint64_t off)
{
  uint64_t c;

  if (atomic_load (&remote.failing)) {
    errno = ECONNRESET;
    return -1;
  }
  atomic_fetch_add (&remote.reads, 1);
  for (c = off / CHUNK; c <= (off + count - 1) / CHUNK; ++c)
    atomic_fetch_add (&remote.chunk_reads[c], 1);
  if (atomic_load (&remote.first_read_chunk) == 0)
    atomic_store (&remote.first_read_chunk, off / CHUNK + 1);
  pthread_mutex_lock (&remote.lock);
  memcpy (buf, remote.data + off, count);
  c = atomic_load (&remote.gate_chunk);
  if (c > 0 && off / CHUNK <= c - 1 && c - 1 <= (off + count - 1) / CHUNK) {
    atomic_store (&remote.gate_held, true);
    while (atomic_load (&remote.gate_chunk) == c)
      pthread_cond_wait (&remote.gate_cond, &remote.lock);
    atomic_store (&remote.gate_held, false);
  }
  pthread_mutex_unlock (&remote.lock);
  return 0;
}

static void
gate_open (void)
{
  pthread_mutex_lock (&remote.lock);
  atomic_store (&remote.gate_chunk, 0);
  pthread_cond_broadcast (&remote.gate_cond);
  pthread_mutex_unlock (&remote.lock);
}

/* Change chunk C at the remote (a write at the source). */
static void
remote_change (uint64_t c)
{
  pthread_mutex_lock (&remote.lock);
  memset (remote.data + c * CHUNK, 0xa5, MIN (CHUNK, SIZE - c * CHUNK));
  pthread_mutex_unlock (&remote.lock);
}

static int
r_pwrite (void *h, const void *buf, uint32_t count, uint64_t off, bool fua)
{
  if (atomic_load (&remote.failing)) {
    errno = ECONNRESET;
    return -1;
  }
  atomic_fetch_add (&remote.writes, 1);
  pthread_mutex_lock (&remote.lock);
  memcpy (remote.data + off, buf, count);
  pthread_mutex_unlock (&remote.lock);
  return 0;
}

static int
r_flush (void *h)
{
  if (atomic_load (&remote.failing)) {
    errno = ECONNRESET;
    return -1;
  }
  atomic_fetch_add (&remote.flushes, 1);
  return 0;
}

static const struct r3map_store_ops remote_ops = {
  .name = "test-remote",
  .pread = r_pread,
  .pwrite = r_pwrite,
  .flush = r_flush,
};

static struct r3map_store *
remote_open (void *opaque)
{
  atomic_fetch_add (&remote.opens, 1);
  return r3map_store_new (&remote_ops, NULL, SIZE);
}

static const struct r3map_pull_remote remote_desc = {
  .open = remote_open,
  .multi_conn = true,
};

static void
remote_reset (void)
{
  unsigned i;

  for (i = 0; i < SIZE; ++i)
    remote.data[i] = (char) (i * 13 + i / 4096);
  atomic_store (&remote.reads, 0);
  atomic_store (&remote.writes, 0);
  atomic_store (&remote.flushes, 0);
  atomic_store (&remote.failing, false);
  atomic_store (&remote.first_read_chunk, 0);
  atomic_store (&remote.gate_chunk, 0);
  atomic_store (&remote.gate_held, false);
  for (i = 0; i < NCHUNKS; ++i)
    atomic_store (&remote.chunk_reads[i], 0);
}

/* A fixture: a local file, a state file name, default parameters. */
struct fx {
  char *dir;
  char *local_path, *state_path;
  struct r3map_store *local;
  struct r3map_pull_params p;
};

static void
fx_setup (struct fx *fx, gconstpointer data)
{
  int fd;

  remote_reset ();
  fx->dir = g_dir_make_tmp ("test-pull.XXXXXX", NULL);
  g_assert_nonnull (fx->dir);
  fx->local_path = g_build_filename (fx->dir, "local", NULL);
  fx->state_path = g_build_filename (fx->dir, "state", NULL);
  fd = open (fx->local_path, O_RDWR | O_CREAT, 0600);
  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (ftruncate (fd, SIZE), ==, 0);
  fx->local = r3map_store_new_fd (fd, true);
  g_assert_nonnull (fx->local);
  memset (&fx->p, 0, sizeof fx->p);
  fx->p.chunk_size = CHUNK;
  fx->p.pull_workers = 0;
  fx->p.push_workers = 2;
  fx->p.push_interval_ms = 50;
  fx->p.retries = 2;
  fx->p.retry_delay_ms = 5;
  fx->p.backoff_max_ms = 20;
  fx->p.checkpoint_ms = 50;
  fx->p.identity = "test";
}

static void
fx_teardown (struct fx *fx, gconstpointer data)
{
  r3map_store_close (fx->local);
  g_unlink (fx->local_path);
  g_unlink (fx->state_path);
  g_rmdir (fx->dir);
  g_free (fx->local_path);
  g_free (fx->state_path);
  g_free (fx->dir);
}

static struct r3map_pull *
start (struct fx *fx)
{
  GError *error = NULL;
  struct r3map_pull *pull;

  pull = r3map_pull_new (&fx->p, SIZE, fx->local, &remote_desc, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (r3map_pull_start (pull, &error));
  g_assert_no_error (error);
  return pull;
}

static void
assert_reads_remote (struct r3map_pull *pull)
{
  g_autofree char *buf = g_malloc (SIZE);

  g_assert_cmpint (r3map_pull_pread (pull, buf, SIZE, 0), ==, 0);
  g_assert_true (memcmp (buf, remote.data, SIZE) == 0);
}

/* On-demand reads return the remote's data, fetching each chunk once
 * however many readers want it at the same time. */
struct reader { struct r3map_pull *pull; uint64_t off; };

static void *
read_thread (void *arg)
{
  struct reader *r = arg;
  char buf[100];

  g_assert_cmpint (r3map_pull_pread (r->pull, buf, sizeof buf, r->off), ==, 0);
  g_assert_true (memcmp (buf, remote.data + r->off, sizeof buf) == 0);
  return NULL;
}

static void
test_on_demand (struct fx *fx, gconstpointer data)
{
  struct r3map_pull *pull = start (fx);
  pthread_t t[16];
  struct reader r[16];
  unsigned i;

  for (i = 0; i < 16; ++i) {
    r[i].pull = pull;
    r[i].off = 5 * CHUNK + i * 200;
    g_assert_cmpint (pthread_create (&t[i], NULL, read_thread, &r[i]), ==, 0);
  }
  for (i = 0; i < 16; ++i)
    pthread_join (t[i], NULL);
  g_assert_cmpuint (atomic_load (&remote.chunk_reads[5]), ==, 1);
  g_assert_cmpuint (r3map_pull_chunk_state (pull, 5), ==, R3MAP_PULL_LOCAL);
  g_assert_cmpuint (r3map_pull_chunk_state (pull, 6), ==, R3MAP_PULL_MISSING);

  assert_reads_remote (pull);
  assert_reads_remote (pull);
  for (i = 0; i < NCHUNKS; ++i)
    g_assert_cmpuint (atomic_load (&remote.chunk_reads[i]), ==, 1);
  r3map_pull_free (pull);
}

/* The background pull fetches everything, the priority ranges first. */
static void
test_background (struct fx *fx, gconstpointer data)
{
  struct r3map_pull *pull;
  unsigned i;

  fx->p.pull_workers = 1;
  fx->p.priority = "-8K";       /* the last 8K: chunks 61 to 63 */
  pull = start (fx);
  g_assert_true (r3map_pull_wait_complete (pull, 10000));
  g_assert_cmpuint (atomic_load (&remote.first_read_chunk), ==, 61 + 1);
  for (i = 0; i < NCHUNKS; ++i)
    g_assert_cmpuint (atomic_load (&remote.chunk_reads[i]), ==, 1);
  assert_reads_remote (pull);
  for (i = 0; i < NCHUNKS; ++i)
    g_assert_cmpuint (atomic_load (&remote.chunk_reads[i]), ==, 1);
  r3map_pull_free (pull);
}

/* A chunk changed at the remote while a fetch of it is in flight: the
 * fetch may have read it before the change.  Invalidate returns at
 * once, without waiting for that fetch (it is the leecher's finalize,
 * so it is downtime), and the fetch does not make the chunk local with
 * the old data: the reader that asked for it gets the new data.  Both
 * through an on-demand fetch and through a pull worker. */
struct invalidator { struct r3map_pull *pull; uint64_t chunk, ret; atomic_bool done; };

static void *
invalidate_thread (void *arg)
{
  struct invalidator *v = arg;

  v->ret = r3map_pull_invalidate (v->pull, &v->chunk, 1);
  atomic_store (&v->done, true);
  return NULL;
}

static void
wait_gate_held (void)
{
  unsigned i;

  for (i = 0; i < 1000 && !atomic_load (&remote.gate_held); ++i)
    usleep (10000);
  g_assert_true (atomic_load (&remote.gate_held));
}

/* Invalidate CHUNK while its fetch waits at the gate: it must return
 * while the fetch is still held there, which it still is after. */
static void
invalidate_in_flight_held (struct r3map_pull *pull, uint64_t chunk)
{
  struct invalidator v = { .pull = pull, .chunk = chunk };
  pthread_t t;
  unsigned i;

  wait_gate_held ();
  remote_change (chunk);
  g_assert_cmpint (pthread_create (&t, NULL, invalidate_thread, &v), ==, 0);
  for (i = 0; i < 500 && !atomic_load (&v.done); ++i)
    usleep (10000);
  g_assert_true (atomic_load (&v.done));  /* did not wait for the fetch */
  g_assert_true (atomic_load (&remote.gate_held));
  pthread_join (t, NULL);
  g_assert_cmpuint (v.ret, ==, 1);
  g_assert_cmpuint (r3map_pull_chunk_state (pull, chunk), ==,
                    R3MAP_PULL_FETCHING);
}

static void
invalidate_in_flight (struct r3map_pull *pull, uint64_t chunk)
{
  invalidate_in_flight_held (pull, chunk);
  gate_open ();
}

struct big_reader { struct r3map_pull *pull; uint64_t chunk; char buf[CHUNK]; int r; };

static void *
chunk_read_thread (void *arg)
{
  struct big_reader *r = arg;

  r->r = r3map_pull_pread (r->pull, r->buf, CHUNK, r->chunk * CHUNK);
  return NULL;
}

static void
test_invalidate_in_flight (struct fx *fx, gconstpointer data)
{
  struct r3map_pull *pull;
  struct big_reader r = { .chunk = 7 };
  pthread_t t;
  char buf[CHUNK];

  /* On demand. */
  pull = start (fx);
  r.pull = pull;
  atomic_store (&remote.gate_chunk, 7 + 1);
  g_assert_cmpint (pthread_create (&t, NULL, chunk_read_thread, &r), ==, 0);
  invalidate_in_flight (pull, 7);
  pthread_join (t, NULL);
  g_assert_cmpint (r.r, ==, 0);
  g_assert_true (memcmp (r.buf, remote.data + 7 * CHUNK, CHUNK) == 0);
  g_assert_cmpuint (atomic_load (&remote.chunk_reads[7]), ==, 2);
  g_assert_cmpuint (r3map_pull_chunk_state (pull, 7), ==, R3MAP_PULL_LOCAL);
  r3map_pull_free (pull);

  /* By a pull worker: the first chunk of the walk. */
  remote_reset ();
  fx->p.pull_workers = 1;
  atomic_store (&remote.gate_chunk, 0 + 1);
  pull = start (fx);
  r3map_pull_expect_changes (pull, true);
  invalidate_in_flight (pull, 0);
  r3map_pull_expect_changes (pull, false);
  g_assert_true (r3map_pull_wait_complete (pull, 10000));
  g_assert_cmpuint (atomic_load (&remote.chunk_reads[0]), ==, 2);
  g_assert_cmpint (r3map_pull_pread (pull, buf, CHUNK, 0), ==, 0);
  g_assert_true (memcmp (buf, remote.data, CHUNK) == 0);
  g_assert_true (r3map_pull_first_pass_done (pull));
  assert_reads_remote (pull);
  r3map_pull_free (pull);
}

/* A checkpoint's flush of the local store can take long (it is an
 * fsync of everything pulled since the last one); a leecher's
 * invalidate, which is downtime at finalize, must not wait for it.  And
 * that checkpoint must not record as local a chunk invalidated and
 * fetched again while it flushed: the new data was written after its
 * flush began. */
static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool closed, held;
} lgate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false };

static int
gl_pread (void *h, void *buf, uint32_t count, uint64_t off)
{
  return r3map_store_pread (h, buf, count, off);
}

static int
gl_pwrite (void *h, const void *buf, uint32_t count, uint64_t off, bool fua)
{
  return r3map_store_pwrite (h, buf, count, off, fua);
}

static int
gl_flush (void *h)
{
  pthread_mutex_lock (&lgate.lock);
  while (lgate.closed) {
    lgate.held = true;
    pthread_cond_wait (&lgate.cond, &lgate.lock);
  }
  lgate.held = false;
  pthread_mutex_unlock (&lgate.lock);
  return r3map_store_flush (h);
}

static const struct r3map_store_ops gated_local_ops = {
  .name = "test-gated-local",
  .pread = gl_pread,
  .pwrite = gl_pwrite,
  .flush = gl_flush,
};

static void
lgate_set (bool closed)
{
  pthread_mutex_lock (&lgate.lock);
  lgate.closed = closed;
  pthread_cond_broadcast (&lgate.cond);
  pthread_mutex_unlock (&lgate.lock);
}

static bool
lgate_held (void)
{
  bool held;

  pthread_mutex_lock (&lgate.lock);
  held = lgate.held;
  pthread_mutex_unlock (&lgate.lock);
  return held;
}

static void *
flush_thread (void *arg)
{
  return GINT_TO_POINTER (r3map_pull_flush (arg));
}

static bool
recorded_local (struct fx *fx, uint64_t chunk)
{
  GError *error = NULL;
  bool created, local;
  struct r3map_pull_state *st =
    r3map_pull_state_open (fx->state_path, SIZE, CHUNK, "test", &created,
                           &error);

  g_assert_no_error (error);
  g_assert_false (created);
  local = r3map_pull_state_local (st, chunk);
  r3map_pull_state_close (st);
  return local;
}

static void
test_invalidate_checkpoint (struct fx *fx, gconstpointer data)
{
  struct r3map_store *gated = r3map_store_new (&gated_local_ops, fx->local, SIZE);
  struct r3map_store *plain = fx->local;
  struct invalidator v = { .chunk = 3 };
  struct r3map_pull *pull;
  pthread_t ft, it;
  void *ret;
  char buf[CHUNK];
  unsigned i;

  fx->p.state_file = fx->state_path;
  fx->p.checkpoint_ms = 3600000;       /* only the flush below */
  fx->local = gated;
  pull = start (fx);
  v.pull = pull;
  fx->local = plain;
  r3map_pull_expect_changes (pull, true);       /* as a leecher does */
  assert_reads_remote (pull);          /* every chunk local, unrecorded */

  /* A checkpoint whose flush is held. */
  lgate_set (true);
  g_assert_cmpint (pthread_create (&ft, NULL, flush_thread, pull), ==, 0);
  for (i = 0; i < 500 && !lgate_held (); ++i)
    usleep (10000);
  g_assert_true (lgate_held ());

  /* Chunk 3 changes at the remote: invalidate returns while the flush
   * is still held; then chunk 3 is fetched again, new data. */
  remote_change (3);
  g_assert_cmpint (pthread_create (&it, NULL, invalidate_thread, &v), ==, 0);
  for (i = 0; i < 500 && !atomic_load (&v.done); ++i)
    usleep (10000);
  g_assert_true (atomic_load (&v.done));
  g_assert_true (lgate_held ());
  pthread_join (it, NULL);
  g_assert_cmpuint (v.ret, ==, 1);
  g_assert_cmpint (r3map_pull_pread (pull, buf, CHUNK, 3 * CHUNK), ==, 0);
  g_assert_true (memcmp (buf, remote.data + 3 * CHUNK, CHUNK) == 0);

  /* The held checkpoint ends: it records the others, not chunk 3. */
  lgate_set (false);
  pthread_join (ft, &ret);
  g_assert_cmpint (GPOINTER_TO_INT (ret), ==, 0);
  g_assert_true (recorded_local (fx, 2));
  g_assert_false (recorded_local (fx, 3));

  /* The next one does (its flush came after the new data). */
  g_assert_cmpint (r3map_pull_flush (pull), ==, 0);
  g_assert_true (recorded_local (fx, 3));
  r3map_pull_free (pull);
  r3map_store_close (gated);
}

/* A whole-chunk write does not fetch; a partial one fetches first. */
static void
test_writes (struct fx *fx, gconstpointer data)
{
  struct r3map_pull *pull = start (fx);
  char buf[3 * CHUNK], want[3 * CHUNK];

  memset (buf, 'w', CHUNK);
  g_assert_cmpint (r3map_pull_pwrite (pull, buf, CHUNK, 7 * CHUNK), ==, 0);
  g_assert_cmpuint (atomic_load (&remote.reads), ==, 0);
  g_assert_cmpint (r3map_pull_pread (pull, buf, CHUNK, 7 * CHUNK), ==, 0);
  g_assert_cmpuint (atomic_load (&remote.reads), ==, 0);
  g_assert_cmpint (buf[0], ==, 'w');
  g_assert_cmpint (buf[CHUNK - 1], ==, 'w');

  /* Straddling chunks 2, 3, 4: 2 and 4 partially. */
  memcpy (want, remote.data + 2 * CHUNK, sizeof want);
  memset (want + 10, 'x', 2 * CHUNK);
  g_assert_cmpint (r3map_pull_pwrite (pull, want + 10, 2 * CHUNK, 2 * CHUNK + 10), ==, 0);
  g_assert_cmpuint (atomic_load (&remote.chunk_reads[2]), ==, 1);
  g_assert_cmpuint (atomic_load (&remote.chunk_reads[3]), ==, 0);
  g_assert_cmpuint (atomic_load (&remote.chunk_reads[4]), ==, 1);
  g_assert_cmpint (r3map_pull_pread (pull, buf, sizeof buf, 2 * CHUNK), ==, 0);
  g_assert_true (memcmp (buf, want, sizeof buf) == 0);

  /* push is off: the remote is never written. */
  g_assert_cmpint (r3map_pull_flush (pull), ==, 0);
  g_assert_cmpuint (atomic_load (&remote.writes), ==, 0);
  r3map_pull_free (pull);
}

/* A whole-chunk write does not wait for a fetch of the chunk in
 * flight (it takes the chunk over, and the fetch drops what it read of
 * it), and a flush after it waits for that fetch: only then is the
 * chunk recorded dirty and pushed.  Through a pull worker's run, an
 * on-demand fetch, and one whose chunk changed at the remote meanwhile
 * (marked stale: the write still wins). */
struct writer { struct r3map_pull *pull; uint64_t chunk; char c; int r; atomic_bool done; };

static void *
write_thread (void *arg)
{
  struct writer *w = arg;
  char buf[CHUNK];

  memset (buf, w->c, CHUNK);
  w->r = r3map_pull_pwrite (w->pull, buf, CHUNK, w->chunk * CHUNK);
  atomic_store (&w->done, true);
  return NULL;
}

/* Write CHUNK whole with C while a fetch of it waits at the gate: the
 * write must return with the fetch still held. */
static void
write_in_flight (struct r3map_pull *pull, uint64_t chunk, char c)
{
  struct writer w = { .pull = pull, .chunk = chunk, .c = c };
  pthread_t t;
  unsigned i;

  wait_gate_held ();
  g_assert_cmpint (pthread_create (&t, NULL, write_thread, &w), ==, 0);
  for (i = 0; i < 500 && !atomic_load (&w.done); ++i)
    usleep (10000);
  g_assert_true (atomic_load (&w.done));   /* did not wait for the fetch */
  g_assert_true (atomic_load (&remote.gate_held));
  pthread_join (t, NULL);
  g_assert_cmpint (w.r, ==, 0);
  g_assert_cmpuint (r3map_pull_chunk_state (pull, chunk), ==,
                    R3MAP_PULL_OVERWRITTEN);
}

static void
assert_chunk_is (struct r3map_pull *pull, uint64_t chunk, char c)
{
  char buf[CHUNK];
  unsigned i;

  g_assert_cmpint (r3map_pull_pread (pull, buf, CHUNK, chunk * CHUNK), ==, 0);
  for (i = 0; i < CHUNK; ++i)
    g_assert_cmpint (buf[i], ==, c);
}

static atomic_bool flush_done;

static void *
flush_done_thread (void *arg)
{
  int r = r3map_pull_flush (arg);

  atomic_store (&flush_done, true);
  return GINT_TO_POINTER (r);
}

static void
test_write_in_flight (struct fx *fx, gconstpointer data)
{
  struct r3map_pull *pull;
  struct big_reader r = { .chunk = 9 };
  pthread_t t, ft;
  void *ret;
  unsigned i;

  /* A pull worker's run (the whole disk in one request) is held while
   * chunk 3 of it is written: the run lands without chunk 3. */
  fx->p.pull_workers = 1;
  fx->p.push = true;
  fx->p.push_interval_ms = 60000;       /* only flushes push */
  atomic_store (&remote.gate_chunk, 0 + 1);
  pull = start (fx);
  write_in_flight (pull, 3, 'W');
  /* The flush waits for the fetch; then the remote holds the write. */
  g_assert_cmpint (pthread_create (&ft, NULL, flush_done_thread, pull), ==, 0);
  usleep (200000);
  g_assert_false (atomic_load (&flush_done));
  gate_open ();
  pthread_join (ft, &ret);
  g_assert_cmpint (GPOINTER_TO_INT (ret), ==, 0);
  for (i = 0; i < CHUNK; ++i)
    g_assert_cmpint (remote.data[3 * CHUNK + i], ==, 'W');
  g_assert_true (r3map_pull_wait_complete (pull, 10000));
  assert_chunk_is (pull, 3, 'W');
  assert_reads_remote (pull);
  g_assert_cmpuint (atomic_load (&remote.chunk_reads[3]), ==, 1);
  r3map_pull_free (pull);

  /* An on-demand fetch, its reader waiting with it; the chunk changed
   * at the remote and was invalidated (stale) before the write. */
  remote_reset ();
  fx->p.pull_workers = 0;
  fx->p.push = false;
  pull = start (fx);
  r3map_pull_expect_changes (pull, true);
  r.pull = pull;
  atomic_store (&remote.gate_chunk, 9 + 1);
  g_assert_cmpint (pthread_create (&t, NULL, chunk_read_thread, &r), ==, 0);
  invalidate_in_flight_held (pull, 9);
  write_in_flight (pull, 9, 'V');
  gate_open ();
  pthread_join (t, NULL);
  g_assert_cmpint (r.r, ==, 0);
  assert_chunk_is (pull, 9, 'V');
  g_assert_cmpuint (atomic_load (&remote.chunk_reads[9]), ==, 1);
  g_assert_cmpuint (r3map_pull_chunk_state (pull, 9), ==, R3MAP_PULL_LOCAL);

  /* Written again after the fetch: a plain write. */
  atomic_store (&remote.gate_chunk, 0);
  write_thread (&(struct writer) { .pull = pull, .chunk = 9, .c = 'U' });
  assert_chunk_is (pull, 9, 'U');
  r3map_pull_expect_changes (pull, false);
  r3map_pull_free (pull);
}

/* With push, a flush returns when the remote holds the writes. */
static void
test_push (struct fx *fx, gconstpointer data)
{
  struct r3map_pull *pull;
  g_autofree char *want = NULL;
  char buf[5000];

  fx->p.push = true;
  fx->p.push_interval_ms = 60000;       /* only flushes push */
  pull = start (fx);
  want = g_memdup2 (remote.data, SIZE);
  memset (buf, 'p', sizeof buf);
  memcpy (want + 3 * CHUNK - 7, buf, sizeof buf);
  g_assert_cmpint (r3map_pull_pwrite (pull, buf, sizeof buf, 3 * CHUNK - 7), ==, 0);
  memcpy (want + SIZE - 10, buf, 10);
  g_assert_cmpint (r3map_pull_pwrite (pull, buf, 10, SIZE - 10), ==, 0);
  g_assert_cmpuint (atomic_load (&remote.writes), ==, 0);
  g_assert_cmpint (r3map_pull_flush (pull), ==, 0);
  g_assert_cmpuint (atomic_load (&remote.flushes), >=, 1);
  g_assert_true (memcmp (remote.data, want, SIZE) == 0);
  assert_reads_remote (pull);

  /* A failing remote makes the flush fail, and the write is kept. */
  atomic_store (&remote.failing, true);
  memset (buf, 'q', 10);
  memcpy (want, buf, 10);
  g_assert_cmpint (r3map_pull_pwrite (pull, buf, 10, 0), ==, 0);
  g_assert_cmpint (r3map_pull_flush (pull), ==, -1);
  g_assert_cmpint (errno, ==, EIO);
  atomic_store (&remote.failing, false);
  g_assert_cmpint (r3map_pull_flush (pull), ==, 0);
  g_assert_true (memcmp (remote.data, want, SIZE) == 0);
  r3map_pull_free (pull);
}

/* The state file: a restart refetches nothing that was local and
 * pushes what a previous run left dirty; another disk's is refused. */
static void
test_state (struct fx *fx, gconstpointer data)
{
  struct r3map_pull *pull;
  struct r3map_pull_params p2;
  GError *error = NULL;
  char buf[CHUNK];
  unsigned i;

  fx->p.state_file = fx->state_path;
  pull = start (fx);
  g_assert_true (r3map_pull_fresh (pull));
  for (i = 0; i < NCHUNKS; i += 2)
    g_assert_cmpint (r3map_pull_pread (pull, buf, 1, (uint64_t) i * CHUNK), ==, 0);
  memset (buf, 'z', CHUNK);
  g_assert_cmpint (r3map_pull_pwrite (pull, buf, CHUNK, 1 * CHUNK), ==, 0);
  g_assert_cmpint (r3map_pull_flush (pull), ==, 0);
  r3map_pull_free (pull);

  atomic_store (&remote.reads, 0);
  fx->p.pull_workers = 2;
  pull = start (fx);
  g_assert_false (r3map_pull_fresh (pull));
  g_assert_cmpuint (r3map_pull_chunk_state (pull, 1), ==, R3MAP_PULL_LOCAL);
  g_assert_true (r3map_pull_wait_complete (pull, 10000));
  for (i = 0; i < NCHUNKS; ++i)
    g_assert_cmpuint (atomic_load (&remote.chunk_reads[i]), ==,
                      i == 1 ? 0 : 1);
  g_assert_cmpint (r3map_pull_pread (pull, buf, CHUNK, CHUNK), ==, 0);
  g_assert_cmpint (buf[0], ==, 'z');
  r3map_pull_free (pull);

  /* Another disk's state file. */
  p2 = fx->p;
  pull = r3map_pull_new (&p2, SIZE - CHUNK, fx->local, &remote_desc, NULL, &error);
  g_assert_null (pull);
  g_assert_nonnull (strstr (error->message, "a disk of"));
  g_assert_true (g_str_has_prefix (error->message, "state="));
  g_clear_error (&error);
  p2.chunk_size = CHUNK * 2;
  pull = r3map_pull_new (&p2, SIZE, fx->local, &remote_desc, NULL, &error);
  g_assert_null (pull);
  g_assert_nonnull (strstr (error->message, "chunk-size"));
  g_clear_error (&error);
  p2.chunk_size = CHUNK;
  p2.identity = "another";
  pull = r3map_pull_new (&p2, SIZE, fx->local, &remote_desc, NULL, &error);
  g_assert_null (pull);
  g_assert_nonnull (strstr (error->message, "'another'"));
  g_clear_error (&error);

  /* Not a state file at all. */
  g_assert_true (g_file_set_contents (fx->state_path, "hello", -1, NULL));
  pull = r3map_pull_new (&fx->p, SIZE, fx->local, &remote_desc, NULL, &error);
  g_assert_null (pull);
  g_assert_nonnull (strstr (error->message, "not an r3map-pull state file"));
  g_clear_error (&error);
}

/* Dirty chunks recorded by a run that did not push them are pushed by
 * the next one. */
static void
test_state_dirty (struct fx *fx, gconstpointer data)
{
  struct r3map_pull *pull;
  char buf[CHUNK];

  fx->p.state_file = fx->state_path;
  pull = start (fx);                    /* push off: kept dirty-free */
  memset (buf, 'd', CHUNK);
  g_assert_cmpint (r3map_pull_pwrite (pull, buf, CHUNK, 9 * CHUNK), ==, 0);
  g_assert_cmpint (r3map_pull_flush (pull), ==, 0);
  r3map_pull_free (pull);
  g_assert_cmpint (remote.data[9 * CHUNK], !=, 'd');

  fx->p.push = true;
  pull = start (fx);                    /* it was not recorded dirty */
  g_assert_cmpuint (r3map_pull_chunk_state (pull, 9), ==, R3MAP_PULL_LOCAL);
  g_assert_cmpint (r3map_pull_pwrite (pull, buf, CHUNK, 10 * CHUNK), ==, 0);
  atomic_store (&remote.failing, true);
  r3map_pull_free (pull);               /* cannot push: stays dirty */
  atomic_store (&remote.failing, false);
  g_assert_cmpint (remote.data[10 * CHUNK], !=, 'd');

  pull = start (fx);
  g_assert_cmpuint (r3map_pull_chunk_state (pull, 10), ==, R3MAP_PULL_DIRTY);
  g_assert_cmpint (r3map_pull_flush (pull), ==, 0);
  g_assert_cmpint (remote.data[10 * CHUNK], ==, 'd');
  r3map_pull_free (pull);
}

/* A failing remote: reads fail with EIO after the retries; the
 * background pull waits and finishes once the remote is back. */
static void
test_faults (struct fx *fx, gconstpointer data)
{
  struct r3map_pull *pull;
  struct r3map_pull_counters c;
  char buf[10];

  fx->p.retries = 3;
  pull = start (fx);
  atomic_store (&remote.failing, true);
  g_assert_cmpint (r3map_pull_pread (pull, buf, sizeof buf, 0), ==, -1);
  g_assert_cmpint (errno, ==, EIO);
  r3map_pull_counters (pull, &c);
  g_assert_cmpuint (c.fetch_errors, ==, 4);
  g_assert_cmpuint (r3map_pull_chunk_state (pull, 0), ==, R3MAP_PULL_MISSING);
  atomic_store (&remote.failing, false);
  g_assert_cmpint (r3map_pull_pread (pull, buf, sizeof buf, 0), ==, 0);
  g_assert_true (memcmp (buf, remote.data, sizeof buf) == 0);
  r3map_pull_free (pull);

  fx->p.pull_workers = 3;
  atomic_store (&remote.failing, true);
  pull = start (fx);
  usleep (100000);
  r3map_pull_counters (pull, &c);
  g_assert_cmpuint (c.chunks_local, ==, 0);
  g_assert_cmpuint (c.phase, ==, R3MAP_PHASE_BACKOFF);
  atomic_store (&remote.failing, false);
  g_assert_true (r3map_pull_wait_complete (pull, 10000));
  assert_reads_remote (pull);
  r3map_pull_free (pull);
}

/* The status file: what another process reads. */
static void
test_status (struct fx *fx, gconstpointer data)
{
  g_autofree char *path = g_build_filename (fx->dir, "status", NULL);
  struct r3map_pull_counters c;
  struct r3map_pull *pull;
  GError *error = NULL;

  fx->p.pull_workers = 2;
  fx->p.status_file = path;
  pull = start (fx);
  g_assert_true (r3map_pull_wait_complete (pull, 10000));
  usleep (500000);
  g_assert_true (r3map_pull_status_read (path, &c, &error));
  g_assert_cmpuint (c.phase, ==, R3MAP_PHASE_COMPLETE);
  g_assert_cmpuint (c.chunks_local, ==, NCHUNKS);
  g_assert_cmpuint (c.chunks_total, ==, NCHUNKS);
  g_assert_cmpuint (c.bytes_pulled, ==, SIZE);
  g_assert_cmpuint (c.pid, ==, getpid ());
  r3map_pull_free (pull);
  g_assert_true (r3map_pull_status_read (path, &c, &error));
  g_assert_cmpuint (c.phase, ==, R3MAP_PHASE_STOPPED);
  g_unlink (path);
}

static void
test_ranges (void)
{
  g_autoptr (GArray) r = g_array_new (FALSE, FALSE, sizeof (uint64_t));
  GError *error = NULL;
  const uint64_t M = 1 << 20, G = 1 << 30;

  g_assert_true (r3map_pull_parse_ranges ("pull-priority", "0-64M,-16M, 1G+256M,2G-,512K,9G-",
                                          4 * G, r, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (r->len, ==, 10);
  g_assert_cmpuint (g_array_index (r, uint64_t, 0), ==, 0);
  g_assert_cmpuint (g_array_index (r, uint64_t, 1), ==, 64 * M);
  g_assert_cmpuint (g_array_index (r, uint64_t, 2), ==, 4 * G - 16 * M);
  g_assert_cmpuint (g_array_index (r, uint64_t, 3), ==, 4 * G);
  g_assert_cmpuint (g_array_index (r, uint64_t, 4), ==, G);
  g_assert_cmpuint (g_array_index (r, uint64_t, 5), ==, G + 256 * M);
  g_assert_cmpuint (g_array_index (r, uint64_t, 6), ==, 2 * G);
  g_assert_cmpuint (g_array_index (r, uint64_t, 7), ==, 4 * G);
  g_assert_cmpuint (g_array_index (r, uint64_t, 8), ==, 512 * 1024);
  g_assert_cmpuint (g_array_index (r, uint64_t, 9), ==, 512 * 1024 + 1);

  g_assert_false (r3map_pull_parse_ranges ("pull-priority", "0-64Q", G, r, &error));
  g_assert_cmpstr (error->message, ==,
                   "pull-priority=0-64Q: '0-64Q': not a range (A-B, A+N, A-, -N "
                   "or A, sizes with K, M, G... suffixes)");
  g_clear_error (&error);
  g_assert_false (r3map_pull_parse_ranges ("pull-priority", "64M-1M", G, r, &error));
  g_assert_nonnull (strstr (error->message, "the end is not after the start"));
  g_clear_error (&error);
  g_assert_false (r3map_pull_parse_ranges ("pull-priority", "x", G, r, &error));
  g_clear_error (&error);
}

int
main (int argc, char *argv[])
{
  g_test_init (&argc, &argv, NULL);
  pthread_mutex_init (&remote.lock, NULL);
  pthread_cond_init (&remote.gate_cond, NULL);
#define T(name, fn) \
  g_test_add ("/pull/" name, struct fx, NULL, fx_setup, fn, fx_teardown)
  T ("on-demand", test_on_demand);
  T ("background", test_background);
  T ("writes", test_writes);
  T ("push", test_push);
  T ("state", test_state);
  T ("state-dirty", test_state_dirty);
  T ("faults", test_faults);
  T ("status", test_status);
  T ("invalidate-in-flight", test_invalidate_in_flight);
  T ("invalidate-checkpoint", test_invalidate_checkpoint);
  T ("write-in-flight", test_write_in_flight);
  g_test_add_func ("/pull/ranges", test_ranges);
  return g_test_run ();
}
