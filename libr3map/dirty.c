/* libr3map: an NBD export as memory.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Which pages were written, and writing them back (r3map_sync).
 *
 * Every page is copied into the region write-protected (userfaultfd's
 * write-protect mode, Linux 5.7), so the first write to it after a
 * copy or a sync is a fault that the fault thread sees: it marks the
 * page dirty and lifts the protection, and the write goes on.  A page
 * whose first touch is a write is copied in writable and dirty at
 * once.  So the cost is one fault per page per sync interval, paid by
 * the first write only, and a sync reads nothing but the dirty pages.
 *
 * r3map_sync takes the dirty pages and protects them again in one
 * step under the lock (a write after that step faults and makes the
 * page dirty again, so no write is missed), then sends them with the
 * lock released, then flushes.  A page written while it is being sent
 * may go out half old and half new, but it is dirty again and the
 * next sync sends it whole.
 */

#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Writes in flight at once during a sync. */
#define MAX_WRITES 16

/* Runs of dirty pages taken per pass, so that a sync of a huge region
 * needs no huge array. */
#define MAX_RUNS 256

struct run {
  uint64_t first, count;        /* pages */
};

/* Called by the fault thread on a write-protect fault. */
void
r3map_dirty_fault (struct r3map_mapping *m, uint64_t page)
{
  pthread_mutex_lock (&m->lock);
  bit_set (m->dirty, page);
  if (r3map_uffd_protect (m->uffd, m->addr + page * m->page_size,
                          m->page_size, false) == -1)
    fprintf (stderr, "libr3map: UFFDIO_WRITEPROTECT: %s\n", strerror (errno));
  pthread_mutex_unlock (&m->lock);
}

/* Take up to MAX_RUNS runs of dirty pages from [*next, end), clear and
 * write-protect them.  *next moves past what was taken. */
static int
take_runs (struct r3map_mapping *m, uint64_t *next, uint64_t end,
           struct run *runs, unsigned *nruns)
{
  uint64_t p = *next;
  int r = 0;

  *nruns = 0;
  pthread_mutex_lock (&m->lock);
  while (p < end && *nruns < MAX_RUNS) {
    uint64_t first, i;

    /* Skip clean pages a word at a time. */
    if (p % 64 == 0 && m->dirty[p / 64] == 0) {
      p += 64;
      continue;
    }
    if (!bit_test (m->dirty, p)) {
      p++;
      continue;
    }
    for (first = p; p < end && bit_test (m->dirty, p); p++)
      ;
    for (i = first; i < p; i++)
      bit_clear (m->dirty, i);
    if (r3map_uffd_protect (m->uffd, m->addr + first * m->page_size,
                            (p - first) * m->page_size, true) == -1) {
      r3map_set_error (errno, "UFFDIO_WRITEPROTECT: %s", strerror (errno));
      for (i = first; i < p; i++)
        bit_set (m->dirty, i);
      r = -1;
      break;
    }
    runs[(*nruns)++] = (struct run) { first, p - first };
  }
  pthread_mutex_unlock (&m->lock);
  *next = p < end ? p : end;
  return r;
}

/* Put runs back: their write failed, they stay dirty. */
static void
give_back (struct r3map_mapping *m, const struct run *runs, unsigned nruns)
{
  unsigned i;
  uint64_t p;

  pthread_mutex_lock (&m->lock);
  for (i = 0; i < nruns; i++)
    for (p = runs[i].first; p < runs[i].first + runs[i].count; p++)
      bit_set (m->dirty, p);
  pthread_mutex_unlock (&m->lock);
}

/* Wait for the oldest write in flight. */
static int
wait_oldest (struct r3map_mapping *m, int64_t *cookies, unsigned *n)
{
  int r = r3map_wait (m->wnbd, cookies[0], m->timeout_ms);

  memmove (cookies, cookies + 1, (*n - 1) * sizeof *cookies);
  (*n)--;
  return r;
}

/* Send the runs: each widened to the export's minimum block size (the
 * pages around are in memory: chunks are copied in whole, and a chunk
 * is at least that size), cut at the end of the export and into
 * requests of at most R3MAP_MAX_WRITE. */
static int
send_runs (struct r3map_mapping *m, const struct run *runs, unsigned nruns)
{
  int64_t cookies[MAX_WRITES];
  unsigned n = 0, i;
  int r = 0;

  for (i = 0; i < nruns && r == 0; i++) {
    uint64_t off = runs[i].first * m->page_size;
    uint64_t end = (runs[i].first + runs[i].count) * m->page_size;

    off -= off % m->write_align;
    end += (m->write_align - end % m->write_align) % m->write_align;
    if (end > m->size)
      end = m->size;
    while (off < end && r == 0) {
      uint64_t len = end - off < R3MAP_MAX_WRITE ? end - off : R3MAP_MAX_WRITE;
      int64_t cookie;

      if (n == MAX_WRITES && wait_oldest (m, cookies, &n) == -1) {
        r = -1;
        break;
      }
      cookie = nbd_aio_pwrite (m->wnbd, m->addr + off, len, off,
                               NBD_NULL_COMPLETION, 0);
      if (cookie == -1) {
        r3map_set_error_nbd ("write-back");
        r = -1;
        break;
      }
      cookies[n++] = cookie;
      m->n_synced_pages += (len + m->page_size - 1) / m->page_size;
      off += len;
    }
  }
  /* Let the writes in flight finish, unless the server stopped
   * answering: then each would wait a whole timeout. */
  while (n > 0 && !(r == -1 && errno == ETIMEDOUT))
    if (wait_oldest (m, cookies, &n) == -1)
      r = -1;
  return r;
}

/* Pages [first, first+count) of the region to the export, then a flush. */
int
r3map_dirty_sync (struct r3map_mapping *m, uint64_t first, uint64_t count)
{
  struct run *runs;
  uint64_t next = first, end = first + count;
  unsigned nruns;
  int r = 0;

  runs = malloc (MAX_RUNS * sizeof *runs);
  if (runs == NULL) {
    r3map_set_error (ENOMEM, "r3map_sync: out of memory");
    return -1;
  }
  pthread_mutex_lock (&m->sync_lock);
  if (m->wnbd == NULL) {
    m->wnbd = r3map_connect (m->uri, "r3map-sync", m->timeout_ms);
    if (m->wnbd == NULL) {
      r = -1;
      goto out;
    }
  }
  while (next < end) {
    if (take_runs (m, &next, end, runs, &nruns) == -1) {
      r = -1;
      break;
    }
    if (nruns > 0 && send_runs (m, runs, nruns) == -1) {
      give_back (m, runs, nruns);
      r = -1;
      break;
    }
  }
  if (r == 0 && nbd_can_flush (m->wnbd) == 1) {
    int64_t cookie = nbd_aio_flush (m->wnbd, NBD_NULL_COMPLETION, 0);

    if (cookie == -1) {
      r3map_set_error_nbd ("flush");
      r = -1;
    }
    else
      r = r3map_wait (m->wnbd, cookie, m->timeout_ms);
  }
  m->n_syncs++;
  /* After a failure the handle's state is unknown (a timeout leaves a
   * request on the wire): the next sync starts on a new connection. */
  if (r == -1) {
    int e = errno;
    char *why = strdup (r3map_get_error () ? r3map_get_error () : "");

    r3map_set_error (e, "writing back to %s: %s", m->uri,
                     why ? why : strerror (e));
    free (why);
    r3map_close (m->wnbd, e == ETIMEDOUT ? 0 : R3MAP_CLOSE_TIMEOUT_MS);
    m->wnbd = NULL;
    errno = e;
  }
 out:
  pthread_mutex_unlock (&m->sync_lock);
  free (runs);
  return r;
}
