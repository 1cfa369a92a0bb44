/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The r3map-track filter's state: see tracker.h.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

#include "tracker.h"

/* Chunks per page of numbers and of heat. */
#define PAGE_SHIFT 12
#define PAGE_CHUNKS (UINT64_C (1) << PAGE_SHIFT)

static unsigned shift;

/* lock guards the counter, the seal and the writes in flight; chunk
 * numbers are stored under it (and read without it: see tracker.h). */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t drained = PTHREAD_COND_INITIALIZER;
static pthread_cond_t sealed_cond = PTHREAD_COND_INITIALIZER;
static uint64_t seq;
static uint64_t inflight;
static bool sealed;
static uint64_t sealed_seq;
static uint64_t writes, refused;

/* Pages, allocated on first touch, in tables sized for the disk by
 * tracker_set_size before the first request. */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic (_Atomic uint64_t *) *seq_pages;
static _Atomic (_Atomic uint8_t *) *heat_pages;
static uint64_t npages;

/* The largest number stored in each page (0: none): a view skips the
 * pages with nothing newer than what it asks for, so answering it
 * costs the pages written, not the disk's size. */
static _Atomic uint64_t *page_max;

/* Set when a chunk could not be marked (no memory for its page, or an
 * offset past the tables): from then on every chunk reads as changed,
 * which is always safe for a leecher. */
static atomic_bool all_changed;

static char epoch[17];

int
tracker_init (unsigned chunk_shift)
{
  uint8_t r[8];
  size_t i;

  shift = chunk_shift;
  if (getrandom (r, sizeof r, 0) != sizeof r) {
    /* Not secret: only has to differ between runs. */
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    snprintf (epoch, sizeof epoch, "%016" PRIx64,
              (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec);
    return 0;
  }
  for (i = 0; i < sizeof r; ++i)
    snprintf (&epoch[2 * i], 3, "%02x", r[i]);
  return 0;
}

void
tracker_free (void)
{
  uint64_t i;

  for (i = 0; i < npages; ++i) {
    free ((void *) atomic_load (&seq_pages[i]));
    free ((void *) atomic_load (&heat_pages[i]));
  }
  free ((void *) seq_pages);
  free ((void *) heat_pages);
  free ((void *) page_max);
  seq_pages = NULL;
  heat_pages = NULL;
  page_max = NULL;
  npages = 0;
}

const char *
tracker_epoch (void)
{
  return epoch;
}

int
tracker_set_size (uint64_t size)
{
  uint64_t nchunks = (size + (UINT64_C (1) << shift) - 1) >> shift;
  uint64_t n = (nchunks + PAGE_CHUNKS - 1) >> PAGE_SHIFT;
  int ret = 0;

  pthread_mutex_lock (&table_lock);
  if (seq_pages == NULL && n > 0) {
    seq_pages = calloc (n, sizeof *seq_pages);
    heat_pages = calloc (n, sizeof *heat_pages);
    page_max = calloc (n, sizeof *page_max);
    if (seq_pages == NULL || heat_pages == NULL || page_max == NULL) {
      free ((void *) seq_pages);
      free ((void *) heat_pages);
      free ((void *) page_max);
      seq_pages = NULL;
      heat_pages = NULL;
      page_max = NULL;
      errno = ENOMEM;
      ret = -1;
    }
    else
      npages = n;
  }
  else if (n > npages)
    /* The disk grew under us: what lies past the tables is untracked. */
    atomic_store (&all_changed, true);
  pthread_mutex_unlock (&table_lock);
  return ret;
}

/* The page holding CHUNK's number; allocated if ALLOC, else NULL when
 * never touched. */
static _Atomic uint64_t *
seq_page (uint64_t chunk, bool alloc)
{
  uint64_t p = chunk >> PAGE_SHIFT;
  _Atomic uint64_t *page;

  if (p >= npages)
    return NULL;
  page = atomic_load_explicit (&seq_pages[p], memory_order_acquire);
  if (page == NULL && alloc) {
    _Atomic uint64_t *fresh = calloc (PAGE_CHUNKS, sizeof *fresh), *expect = NULL;
    if (fresh == NULL)
      return NULL;
    if (atomic_compare_exchange_strong (&seq_pages[p], &expect, fresh))
      page = fresh;
    else {
      free ((void *) fresh);
      page = expect;
    }
  }
  return page;
}

static _Atomic uint8_t *
heat_page (uint64_t chunk, bool alloc)
{
  uint64_t p = chunk >> PAGE_SHIFT;
  _Atomic uint8_t *page;

  if (p >= npages)
    return NULL;
  page = atomic_load_explicit (&heat_pages[p], memory_order_acquire);
  if (page == NULL && alloc) {
    _Atomic uint8_t *fresh = calloc (PAGE_CHUNKS, 1), *expect = NULL;
    if (fresh == NULL)
      return NULL;
    if (atomic_compare_exchange_strong (&heat_pages[p], &expect, fresh))
      page = fresh;
    else {
      free ((void *) fresh);
      page = expect;
    }
  }
  return page;
}

int
tracker_write_begin (void)
{
  pthread_mutex_lock (&lock);
  if (sealed) {
    refused++;
    pthread_mutex_unlock (&lock);
    errno = EROFS;
    return -1;
  }
  inflight++;
  pthread_mutex_unlock (&lock);
  return 0;
}

void
tracker_write_end (uint64_t offset, uint64_t count, bool ok)
{
  uint64_t first, last, c, s;

  pthread_mutex_lock (&lock);
  if (ok && count > 0) {
    s = ++seq;
    writes++;
    first = offset >> shift;
    last = (offset + count - 1) >> shift;
    for (c = first; c <= last; ++c) {
      _Atomic uint64_t *page = seq_page (c, true);
      if (page == NULL) {
        atomic_store (&all_changed, true);
        break;
      }
      /* s is the largest number yet: plain stores under the lock. */
      atomic_store_explicit (&page[c & (PAGE_CHUNKS - 1)], s,
                             memory_order_relaxed);
      atomic_store_explicit (&page_max[c >> PAGE_SHIFT], s,
                             memory_order_relaxed);
    }
  }
  if (--inflight == 0)
    pthread_cond_broadcast (&drained);
  pthread_mutex_unlock (&lock);
}

void
tracker_read (uint64_t offset, uint64_t count)
{
  uint64_t c, first, last;

  if (count == 0)
    return;
  first = offset >> shift;
  last = (offset + count - 1) >> shift;
  for (c = first; c <= last; ++c) {
    _Atomic uint8_t *page = heat_page (c, true), *h;
    uint8_t old;

    if (page == NULL)
      return;                   /* heat is a hint: lose it quietly */
    h = &page[c & (PAGE_CHUNKS - 1)];
    old = atomic_load_explicit (h, memory_order_relaxed);
    while (old < 255 &&
           !atomic_compare_exchange_weak_explicit (h, &old, old + 1,
                                                   memory_order_relaxed,
                                                   memory_order_relaxed))
      ;
  }
}

void
tracker_status (struct tracker_status *st)
{
  pthread_mutex_lock (&lock);
  st->seq = seq;
  st->sealed = sealed;
  st->sealed_seq = sealed_seq;
  st->writes = writes;
  st->refused = refused;
  pthread_mutex_unlock (&lock);
}

uint64_t
tracker_next_changed (uint64_t from, uint64_t end, uint64_t since)
{
  uint64_t c = from;

  if (atomic_load (&all_changed))
    return from < end ? from : end;
  while (c < end) {
    uint64_t p = c >> PAGE_SHIFT;
    uint64_t page_end = MIN ((p + 1) << PAGE_SHIFT, end);
    _Atomic uint64_t *page;

    if (p >= npages)
      return end;
    page = atomic_load_explicit (&seq_pages[p], memory_order_acquire);
    if (page == NULL ||
        atomic_load_explicit (&page_max[p], memory_order_relaxed) <= since) {
      c = page_end;
      continue;
    }
    for (; c < page_end; ++c)
      if (atomic_load_explicit (&page[c & (PAGE_CHUNKS - 1)],
                                memory_order_relaxed) > since)
        return c;
  }
  return end;
}

unsigned
tracker_chunk_heat (uint64_t chunk)
{
  _Atomic uint8_t *page = heat_page (chunk, false);

  return page ? atomic_load_explicit (&page[chunk & (PAGE_CHUNKS - 1)],
                                      memory_order_relaxed) : 0;
}

uint64_t
tracker_seal (void)
{
  uint64_t s;

  pthread_mutex_lock (&lock);
  if (!sealed) {
    sealed = true;
    while (inflight > 0)
      pthread_cond_wait (&drained, &lock);
    sealed_seq = seq;
    pthread_cond_broadcast (&sealed_cond);
  }
  s = sealed_seq;
  pthread_mutex_unlock (&lock);
  return s;
}

void
tracker_unseal (void)
{
  pthread_mutex_lock (&lock);
  sealed = false;
  pthread_mutex_unlock (&lock);
}

bool
tracker_wait_sealed (int64_t timeout_ms)
{
  struct timespec ts;
  bool ret;

  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += timeout_ms / 1000;
  ts.tv_nsec += (timeout_ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock (&lock);
  /* Sealed and drained: sealed_cond is broadcast after the drain. */
  while (!(sealed && inflight == 0)) {
    if (pthread_cond_timedwait (&sealed_cond, &lock, &ts) == ETIMEDOUT)
      break;
  }
  ret = sealed && inflight == 0;
  pthread_mutex_unlock (&lock);
  return ret;
}
