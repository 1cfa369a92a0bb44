/* libr3map: an NBD export as memory.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map_map, r3map_sync and r3map_unmap: set up a mapping (two libnbd
 * handles, an anonymous region registered with a userfaultfd, the
 * fault thread), find it again by address, and take it down.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_TIMEOUT_S 60

/* Every live mapping, so that r3map_sync and r3map_unmap can find
 * theirs by address. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct r3map_mapping *registry;

static bool
is_power_of_2 (uint64_t v)
{
  return v && (v & (v - 1)) == 0;
}

/* LIBR3MAP_TIMEOUT=SECONDS: how long any request or connection may
 * take before it counts as failed. */
static int
get_timeout_ms (int *ms)
{
  const char *s = getenv ("LIBR3MAP_TIMEOUT");
  char *end;
  long v;

  *ms = DEFAULT_TIMEOUT_S * 1000;
  if (s == NULL || *s == '\0')
    return 0;
  errno = 0;
  v = strtol (s, &end, 10);
  if (errno || *end != '\0' || v < 1 || v > 86400) {
    r3map_set_error (EINVAL, "LIBR3MAP_TIMEOUT=%s: must be a whole number "
                     "of seconds from 1 to 86400", s);
    return -1;
  }
  *ms = v * 1000;
  return 0;
}

static uint64_t *
new_bitmap (uint64_t bits)
{
  return calloc ((bits + 63) / 64, sizeof (uint64_t));
}

static void
free_mapping (struct r3map_mapping *m)
{
  if (m->thread_running) {
    uint64_t one = 1;

    /* Adding 1 to a fresh eventfd cannot block or overflow. */
    while (write (m->stopfd, &one, sizeof one) == -1 && errno == EINTR)
      ;
    pthread_join (m->thread, NULL);
  }
  r3map_fault_cleanup (m);
  r3map_close (m->wnbd, R3MAP_CLOSE_TIMEOUT_MS);
  if (m->addr)
    munmap (m->addr, m->maplen);
  if (m->uffd >= 0)
    close (m->uffd);
  if (m->stopfd >= 0)
    close (m->stopfd);
  pthread_mutex_destroy (&m->lock);
  pthread_mutex_destroy (&m->sync_lock);
  free (m->state);
  free (m->wintent);
  free (m->dirty);
  free (m->pool);
  free (m->uri);
  free (m);
}

/* The chunk: the export's preferred block size (r3map-pull advertises
 * its chunk size there), or 64K; at least a page and the minimum block
 * size (so that whole chunks are always aligned writes); at most 32M. */
static void
choose_chunk (struct r3map_mapping *m)
{
  int64_t pref = nbd_get_block_size (m->rnbd, LIBNBD_SIZE_PREFERRED);
  int64_t min = nbd_get_block_size (m->rnbd, LIBNBD_SIZE_MINIMUM);
  uint64_t c = pref > 0 && is_power_of_2 (pref) ? (uint64_t) pref
                                                 : R3MAP_DEFAULT_CHUNK;

  m->write_align = m->page_size;
  if (min > 0 && (uint64_t) min > m->write_align)
    m->write_align = min;
  while (c < m->write_align)
    c *= 2;
  if (c > R3MAP_MAX_CHUNK)
    c = R3MAP_MAX_CHUNK;
  m->chunk_size = c;
}

int
r3map_map (const char *uri, unsigned flags, void **addr, size_t *len)
{
  struct r3map_mapping *m;
  struct uffd_features feat;
  sigset_t all, old;
  const char *debug;
  int64_t size;
  int r;

  if (uri == NULL || addr == NULL || len == NULL) {
    r3map_set_error (EINVAL, "r3map_map: uri, addr and len must not be NULL");
    return -1;
  }
  if (flags & ~(R3MAP_MAP_READONLY | R3MAP_MAP_RANDOM)) {
    r3map_set_error (EINVAL, "r3map_map: flags: unknown flag 0x%x",
                     flags & ~(R3MAP_MAP_READONLY | R3MAP_MAP_RANDOM));
    return -1;
  }

  m = calloc (1, sizeof *m);
  if (m == NULL) {
    r3map_set_error (ENOMEM, "r3map_map: out of memory");
    return -1;
  }
  m->uffd = m->stopfd = -1;
  pthread_mutex_init (&m->lock, NULL);
  pthread_mutex_init (&m->sync_lock, NULL);
  m->flags = flags;
  m->readonly = flags & R3MAP_MAP_READONLY;
  m->last_fault = UINT64_MAX;
  m->page_size = sysconf (_SC_PAGESIZE);
  debug = getenv ("LIBR3MAP_DEBUG");
  m->debug = debug && strcmp (debug, "1") == 0;
  m->uri = strdup (uri);
  if (m->uri == NULL) {
    r3map_set_error (ENOMEM, "r3map_map: out of memory");
    goto fail;
  }
  if (get_timeout_ms (&m->timeout_ms) == -1)
    goto fail;

  m->rnbd = r3map_connect (uri, "r3map-fault", m->timeout_ms);
  if (m->rnbd == NULL)
    goto fail;
  size = nbd_get_size (m->rnbd);
  if (size == -1) {
    r3map_set_error_nbd (uri);
    goto fail;
  }
  if (size == 0) {
    r3map_set_error (EINVAL, "%s: the export is empty: nothing to map", uri);
    goto fail;
  }
  if ((uint64_t) size > SIZE_MAX - m->page_size) {
    r3map_set_error (EFBIG, "%s: the export (%" PRId64 " bytes) is larger "
                     "than this address space", uri, size);
    goto fail;
  }
  if (!m->readonly && nbd_is_read_only (m->rnbd) == 1) {
    r3map_set_error (EACCES, "%s: the export is read-only: map it with "
                     "R3MAP_MAP_READONLY", uri);
    goto fail;
  }
  m->size = size;
  m->maplen = (m->size + m->page_size - 1) / m->page_size * m->page_size;
  choose_chunk (m);
  m->nchunks = (m->size + m->chunk_size - 1) / m->chunk_size;
  m->ra_run = R3MAP_RA_RUN_BYTES / m->chunk_size;
  if (m->ra_run > R3MAP_RA_RUN)
    m->ra_run = R3MAP_RA_RUN;
  if (m->ra_run < 1)
    m->ra_run = 1;
  m->buf_size = m->ra_run * m->chunk_size;
  m->npages = m->maplen / m->page_size;

  if (!m->readonly) {
    m->wnbd = r3map_connect (uri, "r3map-sync", m->timeout_ms);
    if (m->wnbd == NULL)
      goto fail;
  }

  m->uffd = r3map_uffd_open (!m->readonly, &feat);
  if (m->uffd == -1)
    goto fail;

  /* MAP_NORESERVE: a 1T export costs address space, not commit.
   * MADV_DONTFORK: a child would see the region without its fault
   * thread, where missing pages read as zeros; better not at all.
   * MADV_NOHUGEPAGE: dirty tracking is per page. */
  m->addr = mmap (NULL, m->maplen,
                  PROT_READ | (m->readonly ? 0 : PROT_WRITE),
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m->addr == MAP_FAILED) {
    m->addr = NULL;
    r3map_set_error (errno, "mmap of %zu bytes: %s", m->maplen,
                     strerror (errno));
    goto fail;
  }
  if (madvise (m->addr, m->maplen, MADV_DONTFORK) == -1) {
    r3map_set_error (errno, "madvise MADV_DONTFORK: %s", strerror (errno));
    goto fail;
  }
  madvise (m->addr, m->maplen, MADV_NOHUGEPAGE); /* advisory */
  r = r3map_uffd_register (m->uffd, m->addr, m->maplen, !m->readonly);
  if (r == -1)
    goto fail;
  m->can_poison = feat.poison && r == 1;

  m->state = calloc (m->nchunks, 1);
  m->wintent = new_bitmap (m->npages);
  m->dirty = new_bitmap (m->npages);
  m->pool = calloc (R3MAP_POOL, sizeof *m->pool);
  if (m->state == NULL || m->wintent == NULL || m->dirty == NULL ||
      m->pool == NULL) {
    r3map_set_error (ENOMEM, "r3map_map: out of memory");
    goto fail;
  }
  m->stopfd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (m->stopfd == -1) {
    r3map_set_error (errno, "eventfd: %s", strerror (errno));
    goto fail;
  }

  /* Signals are for the application's threads, not this one. */
  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  r = pthread_create (&m->thread, NULL, r3map_fault_thread, m);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  if (r != 0) {
    r3map_set_error (r, "cannot start the fault thread: %s", strerror (r));
    goto fail;
  }
  m->thread_running = true;

  r3map_debug (m, "mapped %s: %" PRIu64 " bytes at %p, chunk %" PRIu64
               ", write alignment %" PRIu64 ", %s, %s", uri, m->size,
               m->addr, m->chunk_size, m->write_align,
               m->readonly ? "read-only" : "read-write",
               m->can_poison ? "failed reads raise SIGBUS"
                             : "failed reads raise SIGSEGV");

  pthread_mutex_lock (&registry_lock);
  m->next = registry;
  registry = m;
  pthread_mutex_unlock (&registry_lock);
  *addr = m->addr;
  *len = m->size;
  return 0;

 fail:
  {
    int e = errno;
    free_mapping (m);
    errno = e;
  }
  return -1;
}

/* The mapping holding [addr, addr+len), or NULL with the error set. */
static struct r3map_mapping *
lookup (const char *fn, void *addr, size_t len)
{
  struct r3map_mapping *m;
  uintptr_t a = (uintptr_t) addr;

  pthread_mutex_lock (&registry_lock);
  for (m = registry; m; m = m->next)
    if (a >= (uintptr_t) m->addr && a < (uintptr_t) m->addr + m->maplen)
      break;
  pthread_mutex_unlock (&registry_lock);
  if (m == NULL)
    r3map_set_error (EINVAL, "%s: %p is not in a region from r3map_map",
                     fn, addr);
  else if (len > m->maplen - (a - (uintptr_t) m->addr)) {
    r3map_set_error (EINVAL, "%s: %zu bytes at %p go past the end of the "
                     "region", fn, len, addr);
    m = NULL;
  }
  return m;
}

int
r3map_sync (void *addr, size_t len, unsigned flags)
{
  struct r3map_mapping *m;
  uint64_t first, last;

  if (flags != 0) {
    r3map_set_error (EINVAL, "r3map_sync: flags: unknown flag 0x%x", flags);
    return -1;
  }
  m = lookup ("r3map_sync", addr, len);
  if (m == NULL)
    return -1;
  if (m->readonly || len == 0)
    return 0;
  first = ((uintptr_t) addr - (uintptr_t) m->addr) / m->page_size;
  last = ((uintptr_t) addr - (uintptr_t) m->addr + len - 1) / m->page_size;
  return r3map_dirty_sync (m, first, last - first + 1);
}

int
r3map_unmap (void *addr, size_t len, unsigned flags)
{
  struct r3map_mapping *m, **p;

  if (flags & ~R3MAP_UNMAP_DISCARD) {
    r3map_set_error (EINVAL, "r3map_unmap: flags: unknown flag 0x%x",
                     flags & ~R3MAP_UNMAP_DISCARD);
    return -1;
  }
  m = lookup ("r3map_unmap", addr, len);
  if (m == NULL)
    return -1;
  if (addr != m->addr || (len != m->size && len != m->maplen)) {
    r3map_set_error (EINVAL, "r3map_unmap: give the address and length "
                     "that r3map_map returned (%p, %" PRIu64 ")",
                     m->addr, m->size);
    return -1;
  }
  /* Writes go back first; if they cannot, the region stays, so that
   * nothing is lost: the caller may try again, or discard. */
  if (!m->readonly && !(flags & R3MAP_UNMAP_DISCARD) &&
      r3map_dirty_sync (m, 0, m->npages) == -1)
    return -1;

  pthread_mutex_lock (&registry_lock);
  for (p = &registry; *p; p = &(*p)->next)
    if (*p == m) {
      *p = m->next;
      break;
    }
  pthread_mutex_unlock (&registry_lock);

  r3map_debug (m, "unmapped %s: %" PRIu64 " missing faults, %" PRIu64
               " write faults, %" PRIu64 " chunks fetched (%" PRIu64
               " read ahead, %" PRIu64 " of those used), %" PRIu64
               " failed, %" PRIu64 " pages written back in %" PRIu64
               " syncs", m->uri, m->n_missing, m->n_wp, m->n_fetched,
               m->n_readahead, m->n_ra_used, m->n_failed,
               m->n_synced_pages, m->n_syncs);
  free_mapping (m);
  return 0;
}
