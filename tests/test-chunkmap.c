/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Unit tests of lib/chunkmap.c. */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#include "chunkmap.h"

static void
test_basic (void)
{
  struct r3map_chunkmap *m = r3map_chunkmap_new (100);

  g_assert_nonnull (m);
  g_assert_cmpuint (r3map_chunkmap_size (m), ==, 100);
  g_assert_cmpuint (r3map_chunkmap_get (m, 0), ==, 0);
  g_assert_cmpuint (r3map_chunkmap_get (m, 99), ==, 0);
  g_assert_cmpuint (r3map_chunkmap_count (m, 0), ==, 100);

  g_assert_cmpint (r3map_chunkmap_set (m, 7, 3), ==, 0);
  g_assert_cmpuint (r3map_chunkmap_get (m, 7), ==, 3);
  g_assert_cmpint (r3map_chunkmap_set (m, 7, 2), ==, 3);
  g_assert_cmpuint (r3map_chunkmap_count (m, 0), ==, 99);
  g_assert_cmpuint (r3map_chunkmap_count (m, 2), ==, 1);
  g_assert_cmpuint (r3map_chunkmap_count (m, 3), ==, 0);

  /* Out of range or bad state: refused, nothing changed. */
  g_assert_cmpint (r3map_chunkmap_set (m, 100, 1), ==, -1);
  g_assert_cmpint (errno, ==, EINVAL);
  g_assert_cmpint (r3map_chunkmap_set (m, 1, R3MAP_CHUNK_STATES), ==, -1);
  g_assert_cmpuint (r3map_chunkmap_count (m, 0), ==, 99);

  r3map_chunkmap_free (m);
}

static void
test_new_invalid (void)
{
  g_assert_null (r3map_chunkmap_new (0));
  g_assert_cmpint (errno, ==, EINVAL);
  g_assert_null (r3map_chunkmap_new (UINT64_MAX));
  g_assert_cmpint (errno, ==, EINVAL);
}

static void
test_cas (void)
{
  struct r3map_chunkmap *m = r3map_chunkmap_new (10);

  g_assert_cmpint (r3map_chunkmap_cas (m, 4, 1, 2), ==, 0);
  g_assert_cmpuint (r3map_chunkmap_get (m, 4), ==, 0);
  g_assert_cmpint (r3map_chunkmap_cas (m, 4, 0, 2), ==, 1);
  g_assert_cmpint (r3map_chunkmap_cas (m, 4, 0, 2), ==, 0);
  g_assert_cmpuint (r3map_chunkmap_get (m, 4), ==, 2);
  g_assert_cmpuint (r3map_chunkmap_count (m, 2), ==, 1);
  g_assert_cmpuint (r3map_chunkmap_count (m, 0), ==, 9);
  r3map_chunkmap_free (m);
}

/* A 16 TiB disk at 64 KiB chunks: the map must not cost memory in
 * proportion to the disk until it is touched. */
static void
test_huge_sparse (void)
{
  uint64_t n = (UINT64_C (16) << 40) >> 16;
  struct r3map_chunkmap *m = r3map_chunkmap_new (n);

  g_assert_nonnull (m);
  g_assert_cmpuint (r3map_chunkmap_allocated (m), ==, 0);
  g_assert_cmpuint (r3map_chunkmap_get (m, n - 1), ==, 0);
  g_assert_cmpint (r3map_chunkmap_set (m, n - 1, 1), ==, 0);
  g_assert_cmpint (r3map_chunkmap_set (m, 0, 1), ==, 0);
  g_assert_cmpint (r3map_chunkmap_set (m, n / 2, 1), ==, 0);
  /* Three pages touched: at most three pages allocated. */
  g_assert_cmpuint (r3map_chunkmap_allocated (m), <=, 3 * 65536);
  g_assert_cmpuint (r3map_chunkmap_count (m, 1), ==, 3);
  g_assert_cmpuint (r3map_chunkmap_count (m, 0), ==, n - 3);

  /* find skips untouched pages. */
  g_assert_cmpuint (r3map_chunkmap_find (m, 0, 1), ==, 0);
  g_assert_cmpuint (r3map_chunkmap_find (m, 1, 1), ==, n / 2);
  g_assert_cmpuint (r3map_chunkmap_find (m, n / 2 + 1, 1), ==, n - 1);
  g_assert_cmpuint (r3map_chunkmap_find (m, n, 1), ==, n);
  g_assert_cmpuint (r3map_chunkmap_find (m, 0, 0), ==, 1);
  g_assert_cmpuint (r3map_chunkmap_find (m, 0, 5), ==, n);

  /* Setting state 0 on an untouched page allocates nothing. */
  g_assert_cmpint (r3map_chunkmap_set (m, n / 4, 0), ==, 0);
  g_assert_cmpuint (r3map_chunkmap_allocated (m), <=, 3 * 65536);
  r3map_chunkmap_free (m);
}

/* The last page of a map whose size is not a multiple of the page. */
static void
test_partial_last_page (void)
{
  uint64_t n = 65536 + 3;
  struct r3map_chunkmap *m = r3map_chunkmap_new (n);

  g_assert_cmpint (r3map_chunkmap_set (m, n - 1, 4), ==, 0);
  g_assert_cmpuint (r3map_chunkmap_get (m, n - 1), ==, 4);
  g_assert_cmpuint (r3map_chunkmap_allocated (m), ==, 3);
  g_assert_cmpuint (r3map_chunkmap_find (m, 65536, 4), ==, n - 1);
  r3map_chunkmap_free (m);
}

struct waiter {
  struct r3map_chunkmap *m;
  uint64_t chunk;
  int result;
};

static void *
wait_thread (void *arg)
{
  struct waiter *w = arg;

  w->result = r3map_chunkmap_wait_while (w->m, w->chunk, 1, 10000);
  return NULL;
}

static void
test_wait (void)
{
  struct r3map_chunkmap *m = r3map_chunkmap_new (1000);
  struct waiter w[8];
  pthread_t t[8];
  int i;

  r3map_chunkmap_set (m, 5, 1);
  r3map_chunkmap_set (m, 5 + 64, 1);  /* Same wait bucket, other chunk. */
  for (i = 0; i < 8; ++i) {
    w[i] = (struct waiter) { .m = m, .chunk = 5, .result = -2 };
    pthread_create (&t[i], NULL, wait_thread, &w[i]);
  }
  usleep (50000);
  /* A change of another chunk in the same bucket wakes nobody for good. */
  r3map_chunkmap_set (m, 5 + 64, 2);
  usleep (20000);
  for (i = 0; i < 8; ++i)
    g_assert_cmpint (w[i].result, ==, -2);
  r3map_chunkmap_set (m, 5, 3);
  for (i = 0; i < 8; ++i) {
    pthread_join (t[i], NULL);
    g_assert_cmpint (w[i].result, ==, 3);
  }
  /* Not in the state: returns at once. */
  g_assert_cmpint (r3map_chunkmap_wait_while (m, 5, 1, -1), ==, 3);
  r3map_chunkmap_free (m);
}

static void
test_wait_timeout (void)
{
  struct r3map_chunkmap *m = r3map_chunkmap_new (10);
  struct timespec a, b;
  double ms;

  r3map_chunkmap_set (m, 1, 1);
  clock_gettime (CLOCK_MONOTONIC, &a);
  g_assert_cmpint (r3map_chunkmap_wait_while (m, 1, 1, 100), ==, -1);
  g_assert_cmpint (errno, ==, ETIMEDOUT);
  clock_gettime (CLOCK_MONOTONIC, &b);
  ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
  g_assert_cmpfloat (ms, >=, 99);
  g_assert_cmpfloat (ms, <, 5000);
  r3map_chunkmap_free (m);
}

/* Many threads race to claim the same chunks: each chunk is claimed
 * exactly once, and the counters stay exact. */
#define RACE_THREADS 4
#define RACE_CHUNKS 200000

static struct r3map_chunkmap *race_map;
static atomic_uint_fast64_t race_claims;

static void *
race_thread (void *arg)
{
  uint64_t i;

  for (i = 0; i < RACE_CHUNKS; ++i)
    if (r3map_chunkmap_cas (race_map, i, 0, 1) == 1) {
      atomic_fetch_add (&race_claims, 1);
      r3map_chunkmap_set (race_map, i, 2);
    }
  return NULL;
}

static void
test_race (void)
{
  pthread_t t[RACE_THREADS];
  int i;

  race_map = r3map_chunkmap_new (RACE_CHUNKS);
  for (i = 0; i < RACE_THREADS; ++i)
    pthread_create (&t[i], NULL, race_thread, NULL);
  for (i = 0; i < RACE_THREADS; ++i)
    pthread_join (t[i], NULL);
  g_assert_cmpuint (atomic_load (&race_claims), ==, RACE_CHUNKS);
  g_assert_cmpuint (r3map_chunkmap_count (race_map, 2), ==, RACE_CHUNKS);
  g_assert_cmpuint (r3map_chunkmap_count (race_map, 0), ==, 0);
  g_assert_cmpuint (r3map_chunkmap_count (race_map, 1), ==, 0);
  r3map_chunkmap_free (race_map);
}

int
main (int argc, char *argv[])
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/chunkmap/basic", test_basic);
  g_test_add_func ("/chunkmap/new-invalid", test_new_invalid);
  g_test_add_func ("/chunkmap/cas", test_cas);
  g_test_add_func ("/chunkmap/huge-sparse", test_huge_sparse);
  g_test_add_func ("/chunkmap/partial-last-page", test_partial_last_page);
  g_test_add_func ("/chunkmap/wait", test_wait);
  g_test_add_func ("/chunkmap/wait-timeout", test_wait_timeout);
  g_test_add_func ("/chunkmap/race", test_race);
  return g_test_run ();
}
