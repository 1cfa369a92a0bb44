/* libr3map: an NBD export as memory.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The fault-serving thread.  It owns a libnbd handle of its own and
 * waits, in one poll(2), for three things: a fault in the region
 * (the userfaultfd), the answer to a read (the handle's socket), and
 * the request to stop (an eventfd).
 *
 * A missing fault asks for the chunk that holds the page; when the
 * chunk arrives it is copied into the region with UFFDIO_COPY, which
 * wakes every thread that waits on it.  The thread never touches the
 * region itself, and nothing it waits for depends on a thread that
 * may be stopped on a fault: so a program may touch the region from
 * any thread, and from inside system calls, without deadlock.
 *
 * A reader that faults on chunks in order (c, c+1, ...) makes the
 * thread read ahead: a window of W chunks after the fault, doubling
 * on each fault in order up to R3MAP_MAX_WINDOW, read in parallel.
 * As the kernel does for files, the first half of the window is
 * copied into the region as it arrives, and the second half is held
 * in buffers ("staged") until touched: the touch of the first staged
 * chunk is the next fault of the stream, which moves the window on.
 * So a sequential reader faults once per W/2 chunks, not once per
 * chunk.  Chunks read ahead go in runs of up to R3MAP_RA_RUN chunks
 * per NBD request: a server's cost is per request as much as per byte.
 * R3MAP_MAP_RANDOM turns readahead off.
 *
 * A read that fails is tried again (on a new connection if the old one
 * died or timed out) up to MAX_TRIES times; then the chunk's pages are
 * made to raise SIGBUS, as a file mapping does when its read fails.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define MAX_TRIES 3
#define RETRY_DELAY_NS (100 * 1000000) /* between two tries of a read */

/* Bytes of the export that REQ reads. */
static uint64_t
req_len (const struct r3map_mapping *m, const struct request *req)
{
  uint64_t off = req->chunk * m->chunk_size, len = req->n * m->chunk_size;

  return len < m->size - off ? len : m->size - off;
}

/* Bytes of the region that REQ covers: whole pages. */
static size_t
req_map_len (const struct r3map_mapping *m, const struct request *req)
{
  uint64_t off = req->chunk * m->chunk_size, len = req->n * m->chunk_size;

  return len < m->maplen - off ? len : m->maplen - off;
}

static void
set_state (struct r3map_mapping *m, const struct request *req,
           enum chunk_state st)
{
  memset (m->state + req->chunk, st, req->n);
}

static int
read_done (void *user_data, int *error)
{
  struct request *req = user_data;

  req->done = true;
  req->error = *error;
  return 1;
}

static struct request *
find_request (struct r3map_mapping *m, uint64_t c)
{
  struct request *req;

  for (req = m->requests; req; req = req->next)
    if (c >= req->chunk && c < req->chunk + req->n)
      return req;
  return NULL;
}

static void *
get_buf (struct r3map_mapping *m)
{
  void *buf;

  if (m->npool > 0)
    return m->pool[--m->npool];
  if (posix_memalign (&buf, m->page_size, m->buf_size) != 0)
    return NULL;
  return buf;
}

static void
put_buf (struct r3map_mapping *m, void *buf)
{
  if (m->npool < R3MAP_POOL)
    m->pool[m->npool++] = buf;
  else
    free (buf);
}

static void
remove_request (struct r3map_mapping *m, struct request *req)
{
  struct request **p;

  for (p = &m->requests; *p; p = &(*p)->next)
    if (*p == req) {
      *p = req->next;
      m->nrequests -= req->n;
      break;
    }
  put_buf (m, req->buf);
  free (req);
}

/* A read of chunks [c, c+n). */
static struct request *
new_request (struct r3map_mapping *m, uint64_t c, unsigned n, bool wanted)
{
  struct request *req = calloc (1, sizeof *req), **p;

  if (req == NULL)
    return NULL;
  req->buf = get_buf (m);
  if (req->buf == NULL) {
    free (req);
    return NULL;
  }
  req->chunk = c;
  req->n = n;
  req->wanted = wanted;
  if (!wanted) {
    req->ahead = true;
    m->n_readahead += n;
  }
  for (p = &m->requests; *p; p = &(*p)->next)
    ;
  *p = req;
  m->nrequests += n;
  set_state (m, req, CHUNK_INFLIGHT);
  return req;
}

/* The chunk cannot be read.  If a fault waits on it, its pages raise
 * a signal from now on; a read ahead that nobody waits for is just
 * forgotten. */
static void
fail_request (struct r3map_mapping *m, struct request *req, int err)
{
  uint64_t off = req->chunk * m->chunk_size;

  if (req->wanted) {
    fprintf (stderr, "libr3map: %s: reading offset %" PRIu64 " (%" PRIu64
             " bytes) failed: %s; those pages of the region now raise %s\n",
             m->uri, off, req_len (m, req), strerror (err),
             m->can_poison ? "SIGBUS" : "SIGSEGV");
    if (r3map_uffd_fail (m->uffd, m->can_poison, m->addr + off,
                         req_map_len (m, req)) == -1)
      fprintf (stderr, "libr3map: cannot mark the failed pages: %s\n",
               strerror (errno));
    set_state (m, req, CHUNK_FAILED);
    m->n_failed += req->n;
  }
  else
    set_state (m, req, CHUNK_ABSENT);
  remove_request (m, req);
}

/* Put REQ on the wire, connecting first if there is no handle. */
static void
issue (struct r3map_mapping *m, struct request *req)
{
  uint64_t c = req->chunk;
  int64_t cookie;

  req->tries++;
  req->done = false;
  req->error = 0;
  if (m->rnbd == NULL) {
    m->rnbd = r3map_connect (m->uri, "r3map-fault", m->timeout_ms);
    if (m->rnbd == NULL) {
      r3map_debug (m, "reconnect failed: %s", r3map_get_error ());
      req->deadline = r3map_now () + RETRY_DELAY_NS;
      if (req->tries >= MAX_TRIES)
        fail_request (m, req, r3map_get_errno ());
      return;
    }
    r3map_debug (m, "reconnected to %s", m->uri);
  }
  cookie = nbd_aio_pread (m->rnbd, req->buf, req_len (m, req),
                          c * m->chunk_size,
                          (nbd_completion_callback) {
                            .callback = read_done, .user_data = req },
                          0);
  if (cookie == -1) {
    int e = nbd_get_errno ();

    r3map_debug (m, "read of chunk %" PRIu64 ": %s", c, nbd_get_error ());
    req->deadline = r3map_now () + RETRY_DELAY_NS;
    if (req->tries >= MAX_TRIES)
      fail_request (m, req, e > 0 ? e : EIO);
    return;
  }
  req->on_wire = true;
  req->deadline = r3map_now () + (int64_t) m->timeout_ms * 1000000;
}

/* Drop the read handle (dead, or stuck past a deadline).  nbd_close
 * may still call completion callbacks, so the requests it had are
 * looked at only afterwards: each is tried again or fails. */
static void
drop_handle (struct r3map_mapping *m, const char *why)
{
  struct request *req, *next;

  r3map_debug (m, "dropping the read connection: %s", why);
  nbd_close (m->rnbd);
  m->rnbd = NULL;
  for (req = m->requests; req; req = next) {
    next = req->next;
    if (!req->on_wire)
      continue;
    req->on_wire = false;
    req->done = false;
    req->deadline = 0;          /* at once, on a new connection */
    if (req->tries >= MAX_TRIES)
      fail_request (m, req, ETIMEDOUT);
  }
}

/* Copy a chunk that arrived into the region.  Pages with a write
 * fault waiting are copied writable and counted dirty; the others are
 * copied write-protected so that their first write is seen.  Under
 * the lock, so that r3map_sync sees a page dirty exactly when it can
 * have been written. */
static void
install (struct r3map_mapping *m, struct request *req)
{
  uint64_t p0 = req->chunk * m->chunk_size / m->page_size, p, run;
  size_t len = req_map_len (m, req), got = req_len (m, req);
  size_t np = len / m->page_size;
  bool wp = !m->readonly, failed = false;

  /* The region past the end of the export reads as zeros. */
  if (got < len)
    memset ((char *) req->buf + got, 0, len - got);

  pthread_mutex_lock (&m->lock);
  for (p = 0; p < np; p += run) {
    bool intent = wp && bit_test (m->wintent, p0 + p);

    for (run = 1; p + run < np &&
           (wp && bit_test (m->wintent, p0 + p + run)) == intent; run++)
      ;
    if (r3map_uffd_copy (m->uffd, m->addr + (p0 + p) * m->page_size,
                         (char *) req->buf + p * m->page_size,
                         run * m->page_size, wp && !intent) == -1) {
      failed = true;
      break;
    }
    if (intent) {
      uint64_t i;

      for (i = p0 + p; i < p0 + p + run; i++) {
        bit_clear (m->wintent, i);
        bit_set (m->dirty, i);
      }
    }
  }
  pthread_mutex_unlock (&m->lock);

  if (failed) {
    req->wanted = true;
    fail_request (m, req, errno);
    return;
  }
  set_state (m, req, CHUNK_PRESENT);
  if (req->ahead)
    m->n_ra_used += req->n;
  remove_request (m, req);
}

/* Handle completions, after libnbd was told about its socket. */
static void
reap (struct r3map_mapping *m)
{
  struct request *req, *next;

  for (req = m->requests; req; req = next) {
    next = req->next;
    if (!req->on_wire || !req->done)
      continue;
    req->on_wire = false;
    if (req->error) {
      r3map_debug (m, "read of chunk %" PRIu64 " failed: %s", req->chunk,
                   strerror (req->error));
      req->deadline = r3map_now () + RETRY_DELAY_NS;
      if (req->tries >= MAX_TRIES)
        fail_request (m, req, req->error);
      continue;                 /* tried again below */
    }
    m->n_fetched += req->n;
    if (req->wanted || req->eager)
      install (m, req);
    else
      set_state (m, req, CHUNK_STAGED);
  }
  if (m->rnbd && (nbd_aio_is_dead (m->rnbd) || nbd_aio_is_closed (m->rnbd)))
    drop_handle (m, nbd_get_error () ? nbd_get_error () : "connection lost");
}

/* Requests that are neither on the wire nor staged, and whose retry
 * time has come: issue them. */
static void
reissue (struct r3map_mapping *m)
{
  struct request *req, *next;
  int64_t now = r3map_now ();

  for (req = m->requests; req; req = next) {
    next = req->next;
    if (!req->on_wire && m->state[req->chunk] == CHUNK_INFLIGHT &&
        req->deadline <= now)
      issue (m, req);
  }
}

/* Make room for N more chunks read ahead: forget the oldest staged. */
static bool
make_room (struct r3map_mapping *m, unsigned n, unsigned limit)
{
  struct request *req, *next;

  for (req = m->requests; req && m->nrequests + n > limit; req = next) {
    next = req->next;
    if (m->state[req->chunk] == CHUNK_STAGED) {
      set_state (m, req, CHUNK_ABSENT);
      remove_request (m, req);
    }
  }
  return m->nrequests + n <= limit;
}

static void
read_ahead (struct r3map_mapping *m, uint64_t c)
{
  unsigned maxw = R3MAP_MAX_WINDOW_BYTES / m->chunk_size, i, n;
  unsigned run = m->ra_run;
  struct request *req;

  if (m->flags & R3MAP_MAP_RANDOM)
    return;
  /* In order: the next chunk, or a chunk inside the window read
   * ahead at the last fault (whose first half was copied in, so the
   * reader's next fault is further on). */
  if (m->last_fault == UINT64_MAX || c <= m->last_fault ||
      c > m->last_fault + m->window + 1) {
    m->window = 0;
    return;
  }
  if (maxw > R3MAP_MAX_WINDOW)
    maxw = R3MAP_MAX_WINDOW;
  if (maxw < 1)
    maxw = 1;
  m->window = m->window == 0 ? 4 : m->window * 2;
  if (m->window > maxw)
    m->window = maxw;
  for (i = 1; i <= m->window && c + i < m->nchunks; i += n) {
    n = 1;
    if (m->state[c + i] != CHUNK_ABSENT)
      continue;
    /* A run of absent chunks, one request. */
    while (n < run && i + n <= m->window && c + i + n < m->nchunks &&
           m->state[c + i + n] == CHUNK_ABSENT)
      n++;
    if (!make_room (m, n, 2 * maxw))
      break;
    req = new_request (m, c + i, n, false);
    if (req == NULL)
      break;
    issue (m, req);
  }
  /* The first half: into the region now, or as soon as it arrives. */
  for (i = 1; i <= m->window / 2 && c + i < m->nchunks; i++) {
    if (m->state[c + i] != CHUNK_STAGED && m->state[c + i] != CHUNK_INFLIGHT)
      continue;
    req = find_request (m, c + i);
    if (req == NULL)
      continue;
    if (m->state[c + i] == CHUNK_STAGED)
      install (m, req);
    else
      req->eager = true;
  }
}

static void
missing_fault (struct r3map_mapping *m, uint64_t page, bool write)
{
  uint64_t c = page * m->page_size / m->chunk_size;
  char *addr = m->addr + page * m->page_size;
  struct request *req;

  m->n_missing++;
  if (write && !m->readonly && m->state[c] != CHUNK_PRESENT &&
      m->state[c] != CHUNK_FAILED) {
    pthread_mutex_lock (&m->lock);
    bit_set (m->wintent, page);
    pthread_mutex_unlock (&m->lock);
  }
  switch ((enum chunk_state) m->state[c]) {
  case CHUNK_PRESENT:
    /* Copied in after the fault was queued: the copy woke it. */
    r3map_uffd_wake (m->uffd, addr, m->page_size);
    break;
  case CHUNK_FAILED:
    r3map_uffd_fail (m->uffd, m->can_poison, addr, m->page_size);
    break;
  case CHUNK_INFLIGHT:
    req = find_request (m, c);
    if (req)
      req->wanted = true;
    break;
  case CHUNK_STAGED:
    req = find_request (m, c);
    if (req)
      install (m, req);
    break;
  case CHUNK_ABSENT:
    req = new_request (m, c, 1, true);
    if (req == NULL) {
      fprintf (stderr, "libr3map: out of memory serving a fault\n");
      r3map_uffd_fail (m->uffd, m->can_poison, addr, m->page_size);
      break;
    }
    issue (m, req);
    break;
  }
  read_ahead (m, c);
  m->last_fault = c;
}

static void
read_faults (struct r3map_mapping *m)
{
  struct uffd_msg msgs[16];
  ssize_t n, i;

  for (;;) {
    n = read (m->uffd, msgs, sizeof msgs);
    if (n <= 0)
      return;                   /* EAGAIN: no more for now */
    for (i = 0; i < n / (ssize_t) sizeof msgs[0]; i++) {
      uint64_t a = msgs[i].arg.pagefault.address, page;
      uint64_t fl = msgs[i].arg.pagefault.flags;

      if (msgs[i].event != UFFD_EVENT_PAGEFAULT ||
          a < (uintptr_t) m->addr || a >= (uintptr_t) m->addr + m->maplen)
        continue;
      page = (a - (uintptr_t) m->addr) / m->page_size;
      if (fl & UFFD_PAGEFAULT_FLAG_WP) {
        m->n_wp++;
        r3map_dirty_fault (m, page);
      }
      else
        missing_fault (m, page, fl & UFFD_PAGEFAULT_FLAG_WRITE);
    }
  }
}

/* Milliseconds until the first deadline: of a read on the wire, or of
 * the next try of one that failed. */
static int
poll_timeout (struct r3map_mapping *m)
{
  struct request *req;
  int64_t first = INT64_MAX, left;

  for (req = m->requests; req; req = req->next)
    if ((req->on_wire || m->state[req->chunk] == CHUNK_INFLIGHT) &&
        req->deadline < first)
      first = req->deadline;
  if (first == INT64_MAX)
    return -1;
  left = (first - r3map_now ()) / 1000000 + 1;
  return left < 0 ? 0 : left > 1000000 ? 1000000 : (int) left;
}

static void
check_deadlines (struct r3map_mapping *m)
{
  struct request *req;
  int64_t now = r3map_now ();

  for (req = m->requests; req; req = req->next)
    if (req->on_wire && req->deadline <= now) {
      drop_handle (m, "no answer within the timeout");
      return;
    }
}

void *
r3map_fault_thread (void *mv)
{
  struct r3map_mapping *m = mv;

  for (;;) {
    struct pollfd fds[3] = {
      { .fd = m->uffd, .events = POLLIN },
      { .fd = m->stopfd, .events = POLLIN },
    };
    int nfds = 2, r;

    if (m->rnbd) {
      unsigned dir = nbd_aio_get_direction (m->rnbd);

      fds[2].fd = nbd_aio_get_fd (m->rnbd);
      fds[2].events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                      ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
      if (fds[2].fd >= 0)
        nfds = 3;
    }
    r = poll (fds, nfds, poll_timeout (m));
    if (r == -1 && errno != EINTR) {
      fprintf (stderr, "libr3map: poll: %s\n", strerror (errno));
      break;
    }
    if (fds[1].revents)
      break;
    if (nfds == 3 && fds[2].revents) {
      if (fds[2].revents & (POLLIN | POLLHUP | POLLERR))
        nbd_aio_notify_read (m->rnbd);
      else if (fds[2].revents & POLLOUT)
        nbd_aio_notify_write (m->rnbd);
    }
    if (m->rnbd)
      reap (m);
    if (fds[0].revents & POLLIN)
      read_faults (m);
    check_deadlines (m);
    reissue (m);
  }
  return NULL;
}

/* After the thread stopped: close its handle, letting reads ahead that
 * are still on the wire finish (their callbacks only mark them done),
 * then free the requests. */
void
r3map_fault_cleanup (struct r3map_mapping *m)
{
  if (m->rnbd)
    r3map_close (m->rnbd, R3MAP_CLOSE_TIMEOUT_MS);
  m->rnbd = NULL;
  while (m->requests)
    remove_request (m, m->requests);
  while (m->npool > 0)
    free (m->pool[--m->npool]);
}
