/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0. */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "chunkmap.h"

/* One byte of state per chunk, in pages of PAGE_CHUNKS chunks. */
#define PAGE_SHIFT 16
#define PAGE_CHUNKS (UINT64_C (1) << PAGE_SHIFT)
#define PAGE_MASK (PAGE_CHUNKS - 1)

/* 2^36 chunks keeps the page table under 8 MiB: 256 TiB at 4 KiB
 * chunks, far more at the default 64 KiB. */
#define MAX_CHUNKS (UINT64_C (1) << 36)

/* Waiters sleep on one of a few buckets chosen by chunk number.  A
 * bucket is shared by unrelated chunks, so a waiter re-checks its own
 * chunk after every wake-up; a setter takes the bucket lock only when
 * somebody waits in it, so the data path never touches a lock. */
#define WAIT_BUCKETS 64

struct wait_bucket {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  atomic_uint waiters;
};

struct r3map_chunkmap {
  uint64_t nchunks;
  uint64_t npages;
  _Atomic (_Atomic uint8_t *) *pages;
  _Atomic uint64_t counts[R3MAP_CHUNK_STATES];
  _Atomic uint64_t allocated;
  struct wait_bucket buckets[WAIT_BUCKETS];
};

struct r3map_chunkmap *
r3map_chunkmap_new (uint64_t nchunks)
{
  struct r3map_chunkmap *map;
  pthread_condattr_t attr;
  unsigned i;

  if (nchunks == 0 || nchunks > MAX_CHUNKS) {
    errno = EINVAL;
    return NULL;
  }

  map = calloc (1, sizeof *map);
  if (map == NULL)
    return NULL;
  map->nchunks = nchunks;
  map->npages = (nchunks + PAGE_CHUNKS - 1) >> PAGE_SHIFT;
  map->pages = calloc (map->npages, sizeof *map->pages);
  if (map->pages == NULL) {
    free (map);
    errno = ENOMEM;
    return NULL;
  }
  atomic_init (&map->counts[0], nchunks);

  /* Deadlines are measured on the monotonic clock so that a change of
   * the wall clock neither shortens nor stretches a wait. */
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  for (i = 0; i < WAIT_BUCKETS; ++i) {
    pthread_mutex_init (&map->buckets[i].lock, NULL);
    pthread_cond_init (&map->buckets[i].cond, &attr);
  }
  pthread_condattr_destroy (&attr);
  return map;
}

void
r3map_chunkmap_free (struct r3map_chunkmap *map)
{
  uint64_t p;
  unsigned i;

  if (map == NULL)
    return;
  for (p = 0; p < map->npages; ++p)
    free ((void *) atomic_load (&map->pages[p]));
  free (map->pages);
  for (i = 0; i < WAIT_BUCKETS; ++i) {
    pthread_mutex_destroy (&map->buckets[i].lock);
    pthread_cond_destroy (&map->buckets[i].cond);
  }
  free (map);
}

uint64_t
r3map_chunkmap_size (const struct r3map_chunkmap *map)
{
  return map->nchunks;
}

/* The page holding CHUNK, or NULL if it was never touched. */
static _Atomic uint8_t *
page_of (const struct r3map_chunkmap *map, uint64_t chunk)
{
  return atomic_load (&((struct r3map_chunkmap *) map)->pages[chunk >> PAGE_SHIFT]);
}

/* The page holding CHUNK, allocated if needed.  Two threads may race
 * to allocate the same page: one wins the compare-and-swap, the other
 * frees its copy and uses the winner's. */
static _Atomic uint8_t *
page_of_alloc (struct r3map_chunkmap *map, uint64_t chunk)
{
  _Atomic uint8_t *page, *expected = NULL;
  uint64_t p = chunk >> PAGE_SHIFT;
  uint64_t n = PAGE_CHUNKS;

  page = atomic_load (&map->pages[p]);
  if (page != NULL)
    return page;

  if (p == map->npages - 1 && (map->nchunks & PAGE_MASK) != 0)
    n = map->nchunks & PAGE_MASK;
  page = calloc (n, 1);
  if (page == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  if (!atomic_compare_exchange_strong (&map->pages[p], &expected, page)) {
    free ((void *) page);
    return expected;
  }
  atomic_fetch_add (&map->allocated, n);
  return page;
}

unsigned
r3map_chunkmap_get (const struct r3map_chunkmap *map, uint64_t chunk)
{
  _Atomic uint8_t *page = page_of (map, chunk);

  return page == NULL ? 0 : atomic_load (&page[chunk & PAGE_MASK]);
}

static struct wait_bucket *
bucket_of (struct r3map_chunkmap *map, uint64_t chunk)
{
  return &map->buckets[chunk % WAIT_BUCKETS];
}

/* Called after every change of state.  The state was stored (sequentially
 * consistent) before the waiter count is loaded, and a waiter counts
 * itself before it re-reads the state: so either we see the waiter or
 * it sees the new state.  No wake-up is lost. */
static void
changed (struct r3map_chunkmap *map, uint64_t chunk,
         unsigned from, unsigned to)
{
  struct wait_bucket *b = bucket_of (map, chunk);

  atomic_fetch_sub (&map->counts[from], 1);
  atomic_fetch_add (&map->counts[to], 1);
  if (atomic_load (&b->waiters) > 0) {
    pthread_mutex_lock (&b->lock);
    pthread_cond_broadcast (&b->cond);
    pthread_mutex_unlock (&b->lock);
  }
}

int
r3map_chunkmap_set (struct r3map_chunkmap *map, uint64_t chunk,
                    unsigned state)
{
  _Atomic uint8_t *page;
  unsigned old;

  if (chunk >= map->nchunks || state >= R3MAP_CHUNK_STATES) {
    errno = EINVAL;
    return -1;
  }
  if (state == 0 && page_of (map, chunk) == NULL)
    return 0;                   /* Untouched pages are all state 0. */
  page = page_of_alloc (map, chunk);
  if (page == NULL)
    return -1;
  old = atomic_exchange (&page[chunk & PAGE_MASK], (uint8_t) state);
  if (old != state)
    changed (map, chunk, old, state);
  return old;
}

int
r3map_chunkmap_cas (struct r3map_chunkmap *map, uint64_t chunk,
                    unsigned from, unsigned to)
{
  _Atomic uint8_t *page;
  uint8_t expected = from;

  if (chunk >= map->nchunks || from >= R3MAP_CHUNK_STATES ||
      to >= R3MAP_CHUNK_STATES) {
    errno = EINVAL;
    return -1;
  }
  if (page_of (map, chunk) == NULL && from != 0)
    return 0;
  page = page_of_alloc (map, chunk);
  if (page == NULL)
    return -1;
  if (!atomic_compare_exchange_strong (&page[chunk & PAGE_MASK],
                                       &expected, (uint8_t) to))
    return 0;
  if (from != to)
    changed (map, chunk, from, to);
  return 1;
}

int
r3map_chunkmap_wait_while (struct r3map_chunkmap *map, uint64_t chunk,
                           unsigned state, int64_t timeout_ms)
{
  struct wait_bucket *b;
  struct timespec deadline;
  unsigned now;
  int r = 0;

  if (chunk >= map->nchunks) {
    errno = EINVAL;
    return -1;
  }
  now = r3map_chunkmap_get (map, chunk);
  if (now != state)
    return now;

  if (timeout_ms >= 0) {
    clock_gettime (CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
      deadline.tv_sec++;
      deadline.tv_nsec -= 1000000000;
    }
  }

  b = bucket_of (map, chunk);
  pthread_mutex_lock (&b->lock);
  atomic_fetch_add (&b->waiters, 1);
  while ((now = r3map_chunkmap_get (map, chunk)) == state && r != ETIMEDOUT) {
    if (timeout_ms >= 0)
      r = pthread_cond_timedwait (&b->cond, &b->lock, &deadline);
    else
      pthread_cond_wait (&b->cond, &b->lock);
  }
  atomic_fetch_sub (&b->waiters, 1);
  pthread_mutex_unlock (&b->lock);

  if (now == state) {
    errno = ETIMEDOUT;
    return -1;
  }
  return now;
}

uint64_t
r3map_chunkmap_count (const struct r3map_chunkmap *map, unsigned state)
{
  if (state >= R3MAP_CHUNK_STATES)
    return 0;
  return atomic_load (&((struct r3map_chunkmap *) map)->counts[state]);
}

uint64_t
r3map_chunkmap_find (const struct r3map_chunkmap *map, uint64_t from,
                     unsigned state)
{
  while (from < map->nchunks) {
    _Atomic uint8_t *page = page_of (map, from);
    uint64_t end = (from | PAGE_MASK) + 1;

    if (end > map->nchunks)
      end = map->nchunks;
    if (page == NULL) {
      if (state == 0)
        return from;
      from = end;               /* The whole page is in state 0. */
      continue;
    }
    for (; from < end; ++from)
      if (atomic_load_explicit (&page[from & PAGE_MASK],
                                memory_order_relaxed) == state)
        return from;
  }
  return map->nchunks;
}

uint64_t
r3map_chunkmap_allocated (const struct r3map_chunkmap *map)
{
  return atomic_load (&((struct r3map_chunkmap *) map)->allocated);
}
