/* libr3map: an NBD export as memory.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * What the files of libr3map share.  One struct r3map_mapping per
 * r3map_map: the memory region, the userfaultfd that reports its
 * faults, the fault-serving thread with its own libnbd handle, and the
 * dirty pages that r3map_sync writes back through a second handle.
 */

#ifndef LIBR3MAP_INTERNAL_H
#define LIBR3MAP_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libnbd.h>

#include "libr3map.h"

/* Chunks are what the fault thread fetches; pages are what the kernel
 * faults on and what dirty tracking counts. */
#define R3MAP_DEFAULT_CHUNK (64 * 1024)
#define R3MAP_MAX_CHUNK     (32 * 1024 * 1024)

/* Readahead: at most this many chunks and bytes ahead of a sequential
 * reader, in requests of at most this many chunks and bytes. */
#define R3MAP_MAX_WINDOW        64
#define R3MAP_MAX_WINDOW_BYTES  (8 * 1024 * 1024)
#define R3MAP_RA_RUN            8
#define R3MAP_RA_RUN_BYTES      (1024 * 1024)
#define R3MAP_POOL              32      /* free buffers kept */

/* Largest write that r3map_sync sends in one request. */
#define R3MAP_MAX_WRITE     (4 * 1024 * 1024)

/* How long an unmap waits for reads ahead still on the wire. */
#define R3MAP_CLOSE_TIMEOUT_MS 5000

enum chunk_state {
  CHUNK_ABSENT = 0,             /* not in memory, not asked for */
  CHUNK_INFLIGHT,               /* a read is on the wire */
  CHUNK_STAGED,                 /* read ahead, held in a buffer */
  CHUNK_PRESENT,                /* in the region */
  CHUNK_FAILED,                 /* could not be read: its pages raise a signal */
};

/* A read of a run of chunks (one, unless read ahead): on the wire,
 * then, if read ahead, maybe staged. */
struct request {
  struct request *next;
  uint64_t chunk;               /* the first */
  unsigned n;                   /* how many */
  void *buf;                    /* n * chunk_size bytes, page aligned */
  bool on_wire;                 /* issued on the current handle */
  bool done;                    /* set by the completion callback */
  int error;                    /* errno from the callback, if any */
  bool wanted;                  /* a fault waits: install on arrival */
  bool ahead;                   /* read ahead, not for a fault */
  bool eager;                   /* read ahead, install on arrival too */
  unsigned tries;
  int64_t deadline;             /* monotonic ns: on the wire, when to give up
                                   waiting; off it, when to try again */
};

struct r3map_mapping {
  struct r3map_mapping *next;   /* the registry (map.c) */

  char *uri;
  unsigned flags;
  bool readonly;
  int timeout_ms;               /* for every request and connection */
  bool debug;

  char *addr;                   /* the region */
  uint64_t size;                /* the export's size, what r3map_map returns */
  size_t maplen;                /* size rounded up to pages */
  size_t page_size;
  uint64_t chunk_size;          /* a power of 2, a multiple of page_size */
  uint64_t write_align;         /* the export's minimum block size, or a page */
  uint64_t nchunks;
  uint64_t npages;

  int uffd;
  bool can_poison;              /* UFFDIO_POISON: failed pages raise SIGBUS */
  int stopfd;                   /* eventfd: the fault thread must exit */
  pthread_t thread;
  bool thread_running;

  /* Owned by the fault thread once it runs. */
  struct nbd_handle *rnbd;      /* reads; NULL after a failure until reconnect */
  uint8_t *state;               /* enum chunk_state, per chunk */
  uint64_t *wintent;            /* pages with a write fault waiting on a read */
  struct request *requests;     /* in flight and staged, oldest first */
  unsigned nrequests;            /* chunks in requests */
  unsigned ra_run;              /* chunks per readahead request, at most */
  size_t buf_size;              /* every request buffer: ra_run chunks */
  void **pool;                  /* free request buffers, reused: a buffer
                                   from malloc this large is a fresh mmap,
                                   every page of it a page fault */
  unsigned npool;
  uint64_t last_fault;          /* chunk of the last missing fault */
  unsigned window;              /* readahead window in chunks, 0 = off */

  /* Shared by the fault thread and r3map_sync, under lock. */
  pthread_mutex_t lock;
  uint64_t *dirty;              /* pages written since their last sync */

  /* r3map_sync, one at a time. */
  pthread_mutex_t sync_lock;
  struct nbd_handle *wnbd;      /* writes; NULL after a failure until reconnect */

  /* Counters, printed at unmap with LIBR3MAP_DEBUG=1. */
  uint64_t n_missing, n_wp, n_fetched, n_readahead, n_ra_used, n_failed;
  uint64_t n_synced_pages, n_syncs;
};

/* error.c */
extern void r3map_set_error (int errnum, const char *fs, ...)
  __attribute__ ((format (printf, 2, 3)));
extern void r3map_set_error_nbd (const char *context);
extern void r3map_debug (const struct r3map_mapping *m, const char *fs, ...)
  __attribute__ ((format (printf, 2, 3)));

/* uffd.c: thin wrappers over the userfaultfd ioctls. */
struct uffd_features {
  bool wp;                      /* UFFD_FEATURE_PAGEFAULT_FLAG_WP */
  bool poison;                  /* UFFD_FEATURE_POISON */
};
extern int r3map_uffd_open (bool want_wp, struct uffd_features *got);
extern int r3map_uffd_register (int uffd, void *addr, size_t len, bool wp);
extern int r3map_uffd_copy (int uffd, void *dst, const void *src, size_t len,
                            bool wp);
extern int r3map_uffd_wake (int uffd, void *addr, size_t len);
extern int r3map_uffd_protect (int uffd, void *addr, size_t len, bool wp);
extern int r3map_uffd_fail (int uffd, bool can_poison, void *addr, size_t len);

/* conn.c: libnbd handles with a deadline on everything. */
extern struct nbd_handle *r3map_connect (const char *uri, const char *name,
                                         int timeout_ms);
extern int r3map_wait (struct nbd_handle *h, int64_t cookie, int timeout_ms);
extern void r3map_close (struct nbd_handle *h, int timeout_ms);
extern int64_t r3map_now (void);

/* fault.c: the fault-serving thread. */
extern void *r3map_fault_thread (void *mv);
extern void r3map_fault_cleanup (struct r3map_mapping *m);

/* dirty.c: write-protect faults and r3map_sync. */
extern void r3map_dirty_fault (struct r3map_mapping *m, uint64_t page);
extern int r3map_dirty_sync (struct r3map_mapping *m, uint64_t first,
                             uint64_t count);

/* Bitmaps of pages. */
static inline bool
bit_test (const uint64_t *map, uint64_t i)
{
  return (map[i / 64] >> (i % 64)) & 1;
}

static inline void
bit_set (uint64_t *map, uint64_t i)
{
  map[i / 64] |= UINT64_C (1) << (i % 64);
}

static inline void
bit_clear (uint64_t *map, uint64_t i)
{
  map[i / 64] &= ~(UINT64_C (1) << (i % 64));
}

#endif /* LIBR3MAP_INTERNAL_H */
