/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The state file and the status file of the pull engine: see
 * pull-state.h. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "parse.h"
#include "pull-state.h"

/* The header, at offset 0 of a state file, in the machine's byte
 * order (a state file is not moved between machines: the cache it
 * describes is local). */
struct state_header {
  char magic[16];
  uint32_t version;
  uint32_t header_size;
  uint64_t size;
  uint64_t chunk_size;
  uint64_t nchunks;
  uint64_t words;               /* 64-bit words in each bitmap */
  uint32_t identity_len;
  uint32_t reserved;
  char identity[R3MAP_STATE_IDENTITY_MAX];
};
G_STATIC_ASSERT (sizeof (struct state_header) <= R3MAP_STATE_HEADER);

/* The leecher's record, in the header's free space: zeros (no magic)
 * in a file that never had one. */
#define LEECH_MAGIC "r3leech1"
#define LEECH_OFFSET 3072
struct leech_header {
  char magic[8];
  char epoch[24];               /* NUL-terminated */
  uint64_t seq;
  uint64_t finalized;
};
G_STATIC_ASSERT (sizeof (struct state_header) <= LEECH_OFFSET);
G_STATIC_ASSERT (LEECH_OFFSET + sizeof (struct leech_header) <=
                 R3MAP_STATE_HEADER);

struct r3map_pull_state {
  int fd;
  void *map;
  size_t map_size;
  uint64_t nchunks;
  uint64_t *local;
  uint64_t *dirty;
};

static uint64_t
bitmap_words (uint64_t nchunks)
{
  return (nchunks + 63) / 64;
}

static uint64_t
file_size (uint64_t words)
{
  return R3MAP_STATE_HEADER + 2 * words * 8;
}

static void
make_header (struct state_header *h, uint64_t size, uint64_t chunk_size,
             const char *identity)
{
  memset (h, 0, sizeof *h);
  memcpy (h->magic, R3MAP_STATE_MAGIC, sizeof h->magic);
  h->version = R3MAP_STATE_VERSION;
  h->header_size = R3MAP_STATE_HEADER;
  h->size = size;
  h->chunk_size = chunk_size;
  h->nchunks = (size + chunk_size - 1) / chunk_size;
  h->words = bitmap_words (h->nchunks);
  h->identity_len = strlen (identity);
  memcpy (h->identity, identity, h->identity_len);
}

static bool
sys_error (GError **error, const char *path, const char *what)
{
  int err = errno;

  g_set_error (error, R3MAP_ERROR, err, "state=%s: %s%s%s", path,
               what, *what ? ": " : "", g_strerror (err));
  return false;
}

/* Write a new, empty state file under a temporary name and rename it
 * into place, so that a crash never leaves a half-written one. */
static bool
create_file (const char *path, const struct state_header *h, GError **error)
{
  g_autofree char *tmpl = g_strdup_printf ("%s.XXXXXX", path);
  g_autofree char *dir = g_path_get_dirname (path);
  int fd, dfd;

  fd = mkstemp (tmpl);
  if (fd == -1)
    return sys_error (error, path, "cannot create");
  if (ftruncate (fd, file_size (h->words)) == -1 ||
      pwrite (fd, h, sizeof *h, 0) != (ssize_t) sizeof *h ||
      fsync (fd) == -1 ||
      rename (tmpl, path) == -1) {
    sys_error (error, path, "cannot create");
    close (fd);
    unlink (tmpl);
    return false;
  }
  close (fd);
  dfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync (dfd);
    close (dfd);
  }
  return true;
}

/* Read and check the header of the open state file FD. */
static bool
read_header (int fd, const char *path, struct state_header *h,
             GError **error)
{
  struct stat st;
  ssize_t r;

  if (fstat (fd, &st) == -1)
    return sys_error (error, path, "");
  memset (h, 0, sizeof *h);
  r = pread (fd, h, sizeof *h, 0);
  if (r == -1)
    return sys_error (error, path, "");
  if ((size_t) r < sizeof *h ||
      memcmp (h->magic, R3MAP_STATE_MAGIC, sizeof h->magic) != 0) {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "state=%s: not an r3map-pull state file", path);
    return false;
  }
  if (h->version != R3MAP_STATE_VERSION ||
      h->header_size != R3MAP_STATE_HEADER) {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "state=%s: state file version %" PRIu32
                 " is not supported (this is version %d)",
                 path, h->version, R3MAP_STATE_VERSION);
    return false;
  }
  if (h->chunk_size == 0 || !r3map_is_power_of_2 (h->chunk_size) ||
      h->size == 0 ||
      h->nchunks != (h->size - 1) / h->chunk_size + 1 ||
      h->words != bitmap_words (h->nchunks) ||
      h->identity_len >= R3MAP_STATE_IDENTITY_MAX ||
      (uint64_t) st.st_size != file_size (h->words)) {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "state=%s: the state file is damaged (its header and its "
                 "size disagree)", path);
    return false;
  }
  h->identity[h->identity_len] = '\0';
  return true;
}

/* Is the state file with header H one of this disk?  SIZE 0: any. */
static bool
check_header (const char *path, const struct state_header *h, uint64_t size,
              uint64_t chunk_size, const char *identity, GError **error)
{
  if (size != 0 && h->size != size) {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "state=%s: made for a disk of %" PRIu64 " bytes, "
                 "this one has %" PRIu64 " (a state file of another disk?)",
                 path, h->size, size);
    return false;
  }
  if (h->chunk_size != chunk_size) {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "state=%s: made with chunk-size %" PRIu64 ", not %" PRIu64,
                 path, h->chunk_size, chunk_size);
    return false;
  }
  if (strcmp (h->identity, identity) != 0) {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "state=%s: made for the disk '%s', not '%s' "
                 "(a state file of another disk?)",
                 path, h->identity, identity);
    return false;
  }
  return true;
}

bool
r3map_pull_state_check (const char *path, uint64_t size, uint64_t chunk_size,
                        const char *identity, GError **error)
{
  struct state_header h;
  bool ok;
  int fd;

  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1 && errno == ENOENT)
    return true;                /* It will be created. */
  if (fd == -1)
    return sys_error (error, path, "");
  ok = read_header (fd, path, &h, error) &&
    check_header (path, &h, size, chunk_size, identity, error);
  close (fd);
  return ok;
}

struct r3map_pull_state *
r3map_pull_state_open (const char *path, uint64_t size, uint64_t chunk_size,
                       const char *identity, bool *created, GError **error)
{
  struct r3map_pull_state *s;
  struct state_header want, have;
  int fd;

  if (strlen (identity) >= R3MAP_STATE_IDENTITY_MAX) {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "identity=%s: longer than %d bytes", identity,
                 R3MAP_STATE_IDENTITY_MAX - 1);
    return NULL;
  }
  make_header (&want, size, chunk_size, identity);

  *created = false;
  fd = open (path, O_RDWR | O_CLOEXEC);
  if (fd == -1 && errno == ENOENT) {
    if (!create_file (path, &want, error))
      return NULL;
    *created = true;
    fd = open (path, O_RDWR | O_CLOEXEC);
  }
  if (fd == -1) {
    sys_error (error, path, "");
    return NULL;
  }
  if (!read_header (fd, path, &have, error))
    goto fail;
  if (!check_header (path, &have, size, chunk_size, identity, error))
    goto fail;

  s = g_new0 (struct r3map_pull_state, 1);
  s->fd = fd;
  s->nchunks = have.nchunks;
  s->map_size = file_size (have.words);
  s->map = mmap (NULL, s->map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (s->map == MAP_FAILED) {
    sys_error (error, path, "cannot map");
    g_free (s);
    goto fail;
  }
  s->local = (uint64_t *) ((char *) s->map + R3MAP_STATE_HEADER);
  s->dirty = s->local + have.words;
  return s;

 fail:
  close (fd);
  return NULL;
}

void
r3map_pull_state_close (struct r3map_pull_state *s)
{
  if (s == NULL)
    return;
  msync (s->map, s->map_size, MS_SYNC);
  munmap (s->map, s->map_size);
  close (s->fd);
  g_free (s);
}

static bool
test_bit (uint64_t *map, uint64_t chunk)
{
  return __atomic_load_n (&map[chunk / 64], __ATOMIC_ACQUIRE) &
    (UINT64_C (1) << (chunk % 64));
}

bool
r3map_pull_state_local (struct r3map_pull_state *s, uint64_t chunk)
{
  return test_bit (s->local, chunk);
}

bool
r3map_pull_state_dirty (struct r3map_pull_state *s, uint64_t chunk)
{
  return test_bit (s->dirty, chunk);
}

void
r3map_pull_state_set_local (struct r3map_pull_state *s, uint64_t chunk)
{
  __atomic_fetch_or (&s->local[chunk / 64], UINT64_C (1) << (chunk % 64),
                     __ATOMIC_SEQ_CST);
}

void
r3map_pull_state_set_dirty (struct r3map_pull_state *s, uint64_t chunk)
{
  __atomic_fetch_or (&s->dirty[chunk / 64], UINT64_C (1) << (chunk % 64),
                     __ATOMIC_SEQ_CST);
}

void
r3map_pull_state_clear_dirty (struct r3map_pull_state *s, uint64_t chunk)
{
  __atomic_fetch_and (&s->dirty[chunk / 64], ~(UINT64_C (1) << (chunk % 64)),
                      __ATOMIC_SEQ_CST);
}

void
r3map_pull_state_clear_local (struct r3map_pull_state *s, uint64_t chunk)
{
  __atomic_fetch_and (&s->local[chunk / 64], ~(UINT64_C (1) << (chunk % 64)),
                      __ATOMIC_SEQ_CST);
}

bool
r3map_pull_state_get_leech (struct r3map_pull_state *s,
                            struct r3map_leech_record *r)
{
  const struct leech_header *h =
    (const struct leech_header *) ((char *) s->map + LEECH_OFFSET);

  memset (r, 0, sizeof *r);
  if (memcmp (h->magic, LEECH_MAGIC, sizeof h->magic) != 0 ||
      memchr (h->epoch, '\0', sizeof h->epoch) == NULL)
    return false;
  g_strlcpy (r->epoch, h->epoch, sizeof r->epoch);
  r->seq = h->seq;
  r->finalized = h->finalized != 0;
  return true;
}

int
r3map_pull_state_set_leech (struct r3map_pull_state *s,
                            const struct r3map_leech_record *r)
{
  struct leech_header *h =
    (struct leech_header *) ((char *) s->map + LEECH_OFFSET);

  /* The chunk bits this record vouches for reach the disk first. */
  if (msync (s->map, s->map_size, MS_SYNC) == -1)
    return -1;
  memcpy (h->magic, LEECH_MAGIC, sizeof h->magic);
  memset (h->epoch, 0, sizeof h->epoch);
  g_strlcpy (h->epoch, r->epoch, sizeof h->epoch);
  h->seq = r->seq;
  h->finalized = r->finalized;
  return msync (s->map, R3MAP_STATE_HEADER, MS_SYNC);
}

static uint64_t
count_bits (const uint64_t *map, uint64_t words)
{
  uint64_t i, n = 0;

  for (i = 0; i < words; ++i)
    n += __builtin_popcountll (__atomic_load_n (&map[i], __ATOMIC_RELAXED));
  return n;
}

uint64_t
r3map_pull_state_count_local (struct r3map_pull_state *s)
{
  return count_bits (s->local, bitmap_words (s->nchunks));
}

int
r3map_pull_state_sync (struct r3map_pull_state *s)
{
  return msync (s->map, s->map_size, MS_SYNC);
}

bool
r3map_pull_state_inspect (const char *path,
                          struct r3map_pull_state_info *info, GError **error)
{
  struct state_header h;
  g_autofree uint64_t *maps = NULL;
  size_t bytes;
  int fd;
  bool ok = false;

  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return sys_error (error, path, "");
  if (!read_header (fd, path, &h, error))
    goto out;
  bytes = h.words * 8 * 2;
  maps = g_try_malloc (bytes);
  if (maps == NULL) {
    errno = ENOMEM;
    sys_error (error, path, "");
    goto out;
  }
  if (pread (fd, maps, bytes, R3MAP_STATE_HEADER) != (ssize_t) bytes) {
    errno = errno ? errno : EIO;
    sys_error (error, path, "cannot read");
    goto out;
  }
  info->size = h.size;
  info->chunk_size = h.chunk_size;
  info->nchunks = h.nchunks;
  info->local = count_bits (maps, h.words);
  info->dirty = count_bits (maps + h.words, h.words);
  g_strlcpy (info->identity, h.identity, sizeof info->identity);
  ok = true;
 out:
  close (fd);
  return ok;
}

/* ---- Status file ---------------------------------------------------- */

struct r3map_pull_status {
  struct r3map_status_page *page;
};

const char *
r3map_pull_phase_name (unsigned phase)
{
  switch (phase) {
  case R3MAP_PHASE_STARTING: return "starting";
  case R3MAP_PHASE_PULLING:  return "pulling";
  case R3MAP_PHASE_BACKOFF:  return "waiting for the remote";
  case R3MAP_PHASE_COMPLETE: return "complete";
  case R3MAP_PHASE_IDLE:     return "on demand only";
  case R3MAP_PHASE_STOPPED:  return "stopped";
  case R3MAP_PHASE_PRECOPY:  return "pre-copy";
  case R3MAP_PHASE_SEAL_WAIT: return "waiting for the seal";
  case R3MAP_PHASE_SOURCE_LOST: return "source lost before finalize";
  default:                   return "unknown";
  }
}

struct r3map_pull_status *
r3map_pull_status_create (const char *path, GError **error)
{
  struct r3map_pull_status *st;
  void *map;
  long page = sysconf (_SC_PAGESIZE);
  size_t len = sizeof (struct r3map_status_page);
  int fd;

  len = (len + page - 1) / page * page;
  fd = open (path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1 || ftruncate (fd, len) == -1) {
    g_set_error (error, R3MAP_ERROR, errno, "status=%s: %s", path,
                 g_strerror (errno));
    if (fd >= 0)
      close (fd);
    return NULL;
  }
  map = mmap (NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close (fd);
  if (map == MAP_FAILED) {
    g_set_error (error, R3MAP_ERROR, errno, "status=%s: cannot map: %s",
                 path, g_strerror (errno));
    return NULL;
  }
  st = g_new0 (struct r3map_pull_status, 1);
  st->page = map;
  memcpy (st->page->magic, R3MAP_STATUS_MAGIC, sizeof st->page->magic);
  return st;
}

/* One writer: the sequence is odd while the fields change. */
void
r3map_pull_status_publish (struct r3map_pull_status *st,
                           const struct r3map_pull_counters *c)
{
  const uint64_t *v = (const uint64_t *) c;
  uint64_t seq;
  size_t i;

  if (st == NULL)
    return;
  seq = atomic_load_explicit (&st->page->seq, memory_order_relaxed);
  atomic_store_explicit (&st->page->seq, seq + 1, memory_order_relaxed);
  atomic_thread_fence (memory_order_release);
  for (i = 0; i < R3MAP_STATUS_NFIELDS; ++i)
    atomic_store_explicit (&st->page->field[i], v[i], memory_order_relaxed);
  atomic_store_explicit (&st->page->seq, seq + 2, memory_order_release);
}

void
r3map_pull_status_close (struct r3map_pull_status *st)
{
  long page = sysconf (_SC_PAGESIZE);
  size_t len = sizeof (struct r3map_status_page);

  if (st == NULL)
    return;
  len = (len + page - 1) / page * page;
  munmap (st->page, len);
  g_free (st);
}

bool
r3map_pull_status_read (const char *path, struct r3map_pull_counters *c,
                        GError **error)
{
  struct r3map_status_page *page;
  uint64_t *v = (uint64_t *) c;
  struct stat sb;
  unsigned tries;
  int fd;

  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1 || fstat (fd, &sb) == -1) {
    g_set_error (error, R3MAP_ERROR, errno, "%s: %s", path,
                 g_strerror (errno));
    if (fd >= 0)
      close (fd);
    return false;
  }
  if ((size_t) sb.st_size < sizeof *page) {
    close (fd);
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "%s: not an r3map status file", path);
    return false;
  }
  page = mmap (NULL, sizeof *page, PROT_READ, MAP_SHARED, fd, 0);
  close (fd);
  if (page == MAP_FAILED) {
    g_set_error (error, R3MAP_ERROR, errno, "%s: %s", path,
                 g_strerror (errno));
    return false;
  }
  if (memcmp (page->magic, R3MAP_STATUS_MAGIC, sizeof page->magic) != 0) {
    munmap (page, sizeof *page);
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "%s: not an r3map status file", path);
    return false;
  }
  for (tries = 0; ; ++tries) {
    uint64_t s1, s2;
    size_t i;

    s1 = atomic_load_explicit (&page->seq, memory_order_acquire);
    if (s1 & 1) {
      if (tries > 1000)
        break;
      sched_yield ();
      continue;
    }
    for (i = 0; i < R3MAP_STATUS_NFIELDS; ++i)
      v[i] = atomic_load_explicit (&page->field[i], memory_order_relaxed);
    atomic_thread_fence (memory_order_acquire);
    s2 = atomic_load_explicit (&page->seq, memory_order_relaxed);
    if (s1 == s2)
      break;
  }
  munmap (page, sizeof *page);
  return true;
}
