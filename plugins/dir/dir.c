/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * nbdkit r3map-dir plugin: a disk stored as a directory of fixed-size
 * chunk files.
 *
 * Chunk N of the disk is the file DIR/%016x (N in hex, the layout of
 * nbdkit's S3 plugin, so a directory can be copied to a bucket as it
 * is).  A chunk file that does not exist reads as zeros; trimming or
 * zeroing a whole chunk deletes its file.  The disk's size and chunk
 * size are recorded in DIR/r3map-dir.meta when the disk is created and
 * checked at every later start.
 *
 * Locking.  Reads and writes of a chunk take the chunk's lock shared:
 * the kernel keeps concurrent pread/pwrite on one file correct, even
 * unaligned and overlapping within a chunk, so no read-modify-write is
 * needed.  Deleting a chunk file takes its lock exclusive, so that no
 * write can land in a file that is being unlinked (it would be lost)
 * and no cached descriptor is closed under a user.  The locks are a
 * fixed array indexed by chunk number: contention between unrelated
 * chunks that share a lock is only ever with a deletion.
 *
 * Durability.  A write marks its chunk dirty; a flush syncs every dirty
 * chunk and, if files were created or deleted, the directory.  The
 * dirty set is global, not per connection, so a flush on any connection
 * covers writes acknowledged on all of them: the plugin is safe for
 * multi-conn.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

/* Requests run in parallel, on every connection: see Locking above. */
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

#include <glib.h>

#include "chunkmap.h"
#include "parse.h"
#include "fdcache.h"

#define META_NAME "r3map-dir.meta"
#define META_GROUP "r3map-dir"
#define META_FORMAT 1

#define MIN_CHUNK_SIZE (UINT64_C (4) << 10)
#define MAX_CHUNK_SIZE (UINT64_C (64) << 20)
#define DEFAULT_CHUNK_SIZE (UINT64_C (64) << 10)

#define CHUNK_LOCKS 1024

/* Chunks written since the last flush.  A state of the chunk map, so
 * that marking an already dirty chunk is one atomic operation. */
#define CLEAN 0
#define DIRTY 1

/* Above this many dirty chunks a flush syncs the whole file system
 * once (syncfs) instead of every chunk file one by one. */
#define SYNCFS_THRESHOLD 256

/* Configuration, set by .config and fixed from .config_complete on. */
static char *dir;
static uint64_t size;
static const char *size_arg;      /* as the user wrote it, for messages */
static uint64_t chunk_size = DEFAULT_CHUNK_SIZE;
static const char *chunk_size_arg;
static uint64_t open_files;

/* Derived at .config_complete. */
static unsigned chunk_shift;
static uint64_t nchunks;
static int dir_fd = -1;
static bool writable;
static int readonly_errno;      /* why the directory is not writable */

/* Reads need not update the chunk files' access times (it costs a
 * metadata write per read); dropped if the kernel refuses it. */
static _Atomic int noatime = O_NOATIME;

/* Run-time state. */
static struct fdcache *fds;
static pthread_rwlock_t chunk_locks[CHUNK_LOCKS];
static struct r3map_chunkmap *dirty;
static pthread_mutex_t dirty_lock = PTHREAD_MUTEX_INITIALIZER;
static GArray *dirty_list;      /* uint64_t chunk numbers, under dirty_lock */
static atomic_bool dir_dirty;   /* a chunk file was created or deleted */

static void
dir_load (void)
{
  unsigned i;

  for (i = 0; i < CHUNK_LOCKS; ++i)
    pthread_rwlock_init (&chunk_locks[i], NULL);
}

static void
dir_unload (void)
{
  unsigned i;

  fdcache_free (fds);
  r3map_chunkmap_free (dirty);
  if (dirty_list)
    g_array_free (dirty_list, TRUE);
  if (dir_fd >= 0)
    close (dir_fd);
  free (dir);
  for (i = 0; i < CHUNK_LOCKS; ++i)
    pthread_rwlock_destroy (&chunk_locks[i]);
}

/* Report a parse failure as the one error line of a failed start. */
static int
config_error (GError *error)
{
  nbdkit_error ("%s", error->message);
  g_error_free (error);
  return -1;
}

static int
dir_config (const char *key, const char *value)
{
  GError *error = NULL;

  if (strcmp (key, "dir") == 0) {
    free (dir);
    dir = realpath (value, NULL);
    if (dir == NULL) {
      nbdkit_error ("dir=%s: %m", value);
      return -1;
    }
  }
  else if (strcmp (key, "size") == 0) {
    if (!r3map_parse_size (key, value, &size, &error))
      return config_error (error);
    if (size == 0) {
      nbdkit_error ("size=%s: the disk must not be empty", value);
      return -1;
    }
    size_arg = value;
  }
  else if (strcmp (key, "chunk-size") == 0) {
    if (!r3map_parse_size (key, value, &chunk_size, &error))
      return config_error (error);
    if (!r3map_is_power_of_2 (chunk_size) ||
        chunk_size < MIN_CHUNK_SIZE || chunk_size > MAX_CHUNK_SIZE) {
      nbdkit_error ("chunk-size=%s: must be a power of 2 from 4K to 64M",
                    value);
      return -1;
    }
    chunk_size_arg = value;
  }
  else if (strcmp (key, "open-files") == 0) {
    if (!r3map_parse_uint (key, value, 1, 1 << 20, &open_files, &error))
      return config_error (error);
  }
  else {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

/* Read DIR/r3map-dir.meta: "key=value" lines under a [r3map-dir]
 * header, "#" comments.  Returns 1 if it was read, 0 if there is none
 * (a new disk), -1 on error (reported).  Anything unexpected is an
 * error: a damaged file is never half-trusted. */
static int
read_meta (uint64_t *msize, uint64_t *mchunk)
{
  g_autofree char *text = NULL;
  g_auto (GStrv) lines = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *path = g_build_filename (dir, META_NAME, NULL);
  uint64_t format = 0, s = 0, c = 0;
  bool in_group = false;
  size_t i;

  if (!g_file_get_contents (path, &text, NULL, &error)) {
    if (g_error_matches (error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
      return 0;
    nbdkit_error ("dir=%s: cannot read %s: %s", dir, META_NAME,
                  error->message);
    return -1;
  }
  lines = g_strsplit (text, "\n", -1);
  for (i = 0; lines[i] != NULL; ++i) {
    const char *line = lines[i], *eq = strchr (line, '=');
    uint64_t *field = NULL;

    if (*line == '\0' || *line == '#')
      continue;
    if (strcmp (line, "[" META_GROUP "]") == 0) {
      in_group = true;
      continue;
    }
    if (!in_group || eq == NULL)
      goto damaged;
    if (strncmp (line, "format=", 7) == 0)
      field = &format;
    else if (strncmp (line, "size=", 5) == 0)
      field = &s;
    else if (strncmp (line, "chunk-size=", 11) == 0)
      field = &c;
    else
      continue;                 /* Keys of later formats are ignored. */
    if (!r3map_parse_uint (META_NAME, eq + 1, 1, INT64_MAX, field, NULL))
      goto damaged;
  }
  if (format != META_FORMAT || s == 0 || !r3map_is_power_of_2 (c))
    goto damaged;
  *msize = s;
  *mchunk = c;
  return 1;

 damaged:
  nbdkit_error ("dir=%s: %s is damaged or of an unknown format", dir,
                META_NAME);
  return -1;
}

/* Create DIR/r3map-dir.meta durably: write a temporary file, sync it,
 * rename it into place, sync the directory.  A crash leaves either no
 * metadata or the whole of it. */
static int
write_meta (void)
{
  g_autofree char *text =
    g_strdup_printf ("# r3map-dir disk: do not edit.\n"
                     "[" META_GROUP "]\n"
                     "format=%d\n"
                     "size=%" PRIu64 "\n"
                     "chunk-size=%" PRIu64 "\n",
                     META_FORMAT, size, chunk_size);
  const char *tmp = META_NAME ".tmp";
  size_t len = strlen (text);
  int fd;

  fd = openat (dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1)
    goto fail;
  if (write (fd, text, len) != (ssize_t) len || fsync (fd) == -1) {
    int e = errno;
    close (fd);
    unlinkat (dir_fd, tmp, 0);
    errno = e ? e : EIO;
    goto fail;
  }
  close (fd);
  if (renameat (dir_fd, tmp, dir_fd, META_NAME) == -1 || fsync (dir_fd) == -1) {
    int e = errno;
    unlinkat (dir_fd, tmp, 0);
    errno = e;
    goto fail;
  }
  return 0;

 fail:
  nbdkit_error ("dir=%s: cannot create a disk here: %m", dir);
  return -1;
}

/* The default number of cached descriptors.  The soft limit on open
 * files is first raised to the hard one: the low soft default (1024)
 * only protects programs that use select(2), and systemd's guidance is
 * that a program needing more raises it itself (nbdkit uses poll).
 * All but 1024 descriptors (or half, under a small limit) are then left
 * to the cache, for at most 65536 files (4 GiB at 64 KiB chunks). */
static uint64_t
default_open_files (void)
{
  struct rlimit rl;
  uint64_t n, reserve;

  if (getrlimit (RLIMIT_NOFILE, &rl) == -1)
    return 512;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < rl.rlim_max) {
    struct rlimit raised = { .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };
    if (raised.rlim_cur == RLIM_INFINITY || raised.rlim_cur > (1 << 20))
      raised.rlim_cur = 1 << 20;
    if (setrlimit (RLIMIT_NOFILE, &raised) == 0)
      rl.rlim_cur = raised.rlim_cur;
  }
  if (rl.rlim_cur == RLIM_INFINITY)
    return 65536;
  reserve = MIN (1024, rl.rlim_cur / 2);
  n = rl.rlim_cur - reserve;
  return MAX (16, MIN (n, 65536));
}

static int
dir_config_complete (void)
{
  uint64_t msize = 0, mchunk = 0;
  int r;

  if (dir == NULL) {
    nbdkit_error ("dir=: required parameter missing (the directory "
                  "holding the disk)");
    return -1;
  }
  dir_fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd == -1) {
    if (errno == ENOTDIR)
      nbdkit_error ("dir=%s: not a directory", dir);
    else
      nbdkit_error ("dir=%s: %m", dir);
    return -1;
  }
  writable = faccessat (dir_fd, ".", W_OK, AT_EACCESS) == 0;
  if (!writable)
    readonly_errno = errno;

  r = read_meta (&msize, &mchunk);
  if (r == -1)
    return -1;
  if (r == 1) {
    /* An existing disk: whatever the command line says must agree
     * with it.  Nothing is changed on a mismatch. */
    if (size_arg && size != msize) {
      nbdkit_error ("size=%s: the disk in dir=%s has size %" PRIu64
                    " and cannot be resized", size_arg, dir, msize);
      return -1;
    }
    if (chunk_size_arg && chunk_size != mchunk) {
      nbdkit_error ("chunk-size=%s: the disk in dir=%s has chunk-size %"
                    PRIu64 " and cannot be changed",
                    chunk_size_arg, dir, mchunk);
      return -1;
    }
    size = msize;
    chunk_size = mchunk;
  }
  else {
    if (size_arg == NULL) {
      nbdkit_error ("size=: required to create a new disk in dir=%s", dir);
      return -1;
    }
    if (!writable) {
      errno = readonly_errno;
      nbdkit_error ("dir=%s: cannot create a disk here: %m", dir);
      return -1;
    }
    if (write_meta () == -1)
      return -1;
  }
  if (!writable)
    nbdkit_debug ("dir=%s is not writable: serving the disk read-only", dir);

  chunk_shift = __builtin_ctzll (chunk_size);
  nbdkit_debug ("size=%" PRIu64 " chunk-size=%" PRIu64, size, chunk_size);
  nchunks = (size + chunk_size - 1) >> chunk_shift;
  if (open_files == 0)
    open_files = default_open_files ();
  nbdkit_debug ("caching up to %" PRIu64 " open chunk files", open_files);

  fds = fdcache_new (open_files);
  dirty = r3map_chunkmap_new (nchunks);
  dirty_list = g_array_new (FALSE, FALSE, sizeof (uint64_t));
  if (fds == NULL || dirty == NULL) {
    nbdkit_error ("dir=%s: %m", dir);
    return -1;
  }
  return 0;
}

#define dir_config_help \
  "dir=<DIRECTORY>     (required) The directory holding the disk.\n" \
  "size=<SIZE>         The disk size (required to create a disk).\n" \
  "chunk-size=<SIZE>   The chunk size (power of 2, 4K-64M, default 64K).\n" \
  "open-files=<N>      How many chunk files to keep open."

static void
dir_dump_plugin (void)
{
  printf ("r3map_version=%s\n", PACKAGE_VERSION);
  printf ("r3map_dir_parameters=dir,size,chunk-size,open-files\n");
  printf ("r3map_dir_default_chunk_size=%" PRIu64 "\n", DEFAULT_CHUNK_SIZE);
  printf ("r3map_dir_chunk_size_range=%" PRIu64 "-%" PRIu64 "\n",
          MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
}

static void *
dir_open (int readonly)
{
  return NBDKIT_HANDLE_NOT_NEEDED;
}

static int64_t
dir_get_size (void *handle)
{
  return size;
}

static int
dir_can_write (void *handle)
{
  return writable;
}

static int
dir_can_multi_conn (void *handle)
{
  return 1;
}

static int
dir_can_trim (void *handle)
{
  return 1;
}

static int
dir_can_zero (void *handle)
{
  return 1;
}

static int
dir_can_fast_zero (void *handle)
{
  return 1;
}

static int
dir_can_fua (void *handle)
{
  return NBDKIT_FUA_NATIVE;
}

static int
dir_can_extents (void *handle)
{
  return 1;
}

static pthread_rwlock_t *
lock_of (uint64_t chunk)
{
  return &chunk_locks[chunk % CHUNK_LOCKS];
}

static void
chunk_name (uint64_t chunk, char name[static 17])
{
  snprintf (name, 17, "%016" PRIx64, chunk);
}

/* The open chunk file for CHUNK, referenced.  Call with the chunk's
 * lock held.  If the file does not exist: with CREATE, it is created;
 * without, NULL is returned with errno = ENOENT. */
static struct fdcache_entry *
get_chunk (uint64_t chunk, bool create)
{
  struct fdcache_entry *e;
  char name[17];
  int fd, flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;

  e = fdcache_lookup (fds, chunk);
  if (e != NULL)
    return e;

  /* One system call whether or not the file exists: creating chunk
   * files is the cost of every first write.  A write that missed the
   * cache may have created the file, so the directory is synced at the
   * next flush (one fsync, whatever the number of files). */
  chunk_name (chunk, name);
  if (create)
    flags |= O_CREAT;
  fd = openat (dir_fd, name, flags | noatime, 0644);
  if (fd == -1 && errno == EPERM && noatime) {
    /* O_NOATIME needs the file's owner or CAP_FOWNER. */
    noatime = 0;
    fd = openat (dir_fd, name, flags, 0644);
  }
  if (fd == -1)
    return NULL;
  if (create)
    atomic_store (&dir_dirty, true);
  return fdcache_insert (fds, chunk, fd);
}

/* Remember that CHUNK holds writes not yet synced. */
static int
mark_dirty (uint64_t chunk)
{
  int r = r3map_chunkmap_cas (dirty, chunk, CLEAN, DIRTY);

  if (r == 1) {
    pthread_mutex_lock (&dirty_lock);
    g_array_append_val (dirty_list, chunk);
    pthread_mutex_unlock (&dirty_lock);
  }
  return r == -1 ? -1 : 0;
}

/* Sync the directory if a chunk file was created or deleted since the
 * last time.  On failure the flag is put back so that the next flush
 * tries again. */
static int
sync_dir (void)
{
  if (!atomic_exchange (&dir_dirty, false))
    return 0;
  if (fsync (dir_fd) == -1) {
    atomic_store (&dir_dirty, true);
    return -1;
  }
  return 0;
}

/* Split a request into chunk-sized pieces. */
#define FOR_EACH_PIECE(count, offset)                                   \
  for (uint64_t chunk_ = (offset) >> chunk_shift,                       \
         off_ = (offset) & (chunk_size - 1),                            \
         n_ = MIN ((uint64_t) (count), chunk_size - off_),              \
         left_ = (count);                                               \
       left_ > 0;                                                       \
       left_ -= n_, chunk_++, off_ = 0, n_ = MIN (left_, chunk_size))

static int
read_piece (uint64_t chunk, uint64_t off, uint64_t n, char *buf)
{
  struct fdcache_entry *e;
  int r = 0;

  pthread_rwlock_rdlock (lock_of (chunk));
  e = get_chunk (chunk, false);
  if (e == NULL) {
    if (errno == ENOENT)
      memset (buf, 0, n);       /* A missing chunk reads as zeros. */
    else
      r = -1;
    goto out;
  }
  while (n > 0) {
    ssize_t got = pread (e->fd, buf, n, off);
    if (got == -1) {
      if (errno == EINTR)
        continue;
      r = -1;
      break;
    }
    if (got == 0) {             /* Past the end of a short file: zeros. */
      memset (buf, 0, n);
      break;
    }
    buf += got;
    off += got;
    n -= got;
  }
  fdcache_release (fds, e);
 out:
  pthread_rwlock_unlock (lock_of (chunk));
  return r;
}

static int
dir_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
           uint32_t flags)
{
  char *p = buf;

  FOR_EACH_PIECE (count, offset) {
    if (read_piece (chunk_, off_, n_, p) == -1) {
      nbdkit_error ("pread: chunk %016" PRIx64 ": %m", chunk_);
      return -1;
    }
    p += n_;
  }
  return 0;
}

static int
write_piece (uint64_t chunk, uint64_t off, uint64_t n, const char *buf,
             bool fua)
{
  struct fdcache_entry *e;
  int r = 0;

  pthread_rwlock_rdlock (lock_of (chunk));
  e = get_chunk (chunk, true);
  if (e == NULL) {
    r = -1;
    goto out;
  }
  while (n > 0) {
    ssize_t put = pwrite (e->fd, buf, n, off);
    if (put == -1) {
      if (errno == EINTR)
        continue;
      r = -1;
      break;
    }
    buf += put;
    off += put;
    n -= put;
  }
  if (r == 0) {
    if (fua)
      r = fdatasync (e->fd) == -1 || sync_dir () == -1 ? -1 : 0;
    else
      r = mark_dirty (chunk);
  }
  fdcache_release (fds, e);
 out:
  pthread_rwlock_unlock (lock_of (chunk));
  return r;
}

static int
dir_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset,
            uint32_t flags)
{
  const char *p = buf;
  bool fua = flags & NBDKIT_FLAG_FUA;

  FOR_EACH_PIECE (count, offset) {
    if (write_piece (chunk_, off_, n_, p, fua) == -1) {
      nbdkit_error ("pwrite: chunk %016" PRIx64 ": %m", chunk_);
      return -1;
    }
    p += n_;
  }
  return 0;
}

/* Delete a whole chunk: it reads as zeros from now on. */
static int
delete_chunk (uint64_t chunk)
{
  char name[17];
  int r = 0;

  chunk_name (chunk, name);
  pthread_rwlock_wrlock (lock_of (chunk));
  fdcache_drop (fds, chunk);
  if (unlinkat (dir_fd, name, 0) == 0)
    atomic_store (&dir_dirty, true);
  else if (errno != ENOENT)
    r = -1;
  pthread_rwlock_unlock (lock_of (chunk));
  return r;
}

/* Make part of a chunk read as zeros.  A missing chunk already does.
 * Punching a hole is fast and frees space; where the file system
 * cannot, zeros are written unless the client asked for a fast zero. */
static int
zero_piece (uint64_t chunk, uint64_t off, uint64_t n, bool fast)
{
  static const char zeros[65536];
  struct fdcache_entry *e;
  int r = 0;

  pthread_rwlock_rdlock (lock_of (chunk));
  e = get_chunk (chunk, false);
  if (e == NULL) {
    r = errno == ENOENT ? 0 : -1;
    goto out;
  }
  if (fallocate (e->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 off, n) == 0)
    goto done;
  if (errno != EOPNOTSUPP && errno != ENOSYS) {
    r = -1;
    goto done;
  }
  if (fast) {
    errno = ENOTSUP;
    r = -1;
    goto done;
  }
  while (n > 0 && r == 0) {
    uint64_t k = MIN (n, sizeof zeros);
    if (pwrite (e->fd, zeros, k, off) != (ssize_t) k)
      r = -1;
    off += k;
    n -= k;
  }
 done:
  if (r == 0)
    r = mark_dirty (chunk);
  fdcache_release (fds, e);
 out:
  pthread_rwlock_unlock (lock_of (chunk));
  return r;
}

static int
dir_flush (void *handle, uint32_t flags);

/* Zero and trim are the same operation here: whole chunks are deleted,
 * partial chunks get a hole.  (Trim could leave data behind; reading
 * zeros after a trim is what clients prefer and costs nothing more.) */
static int
zero_or_trim (const char *what, uint32_t count, uint64_t offset,
              uint32_t flags)
{
  bool fast = flags & NBDKIT_FLAG_FAST_ZERO;

  FOR_EACH_PIECE (count, offset) {
    int r;

    if (n_ == chunk_size ||
        (off_ == 0 && (chunk_ << chunk_shift) + n_ == size))
      r = delete_chunk (chunk_);
    else
      r = zero_piece (chunk_, off_, n_, fast);
    if (r == -1) {
      if (errno != ENOTSUP)
        nbdkit_error ("%s: chunk %016" PRIx64 ": %m", what, chunk_);
      return -1;
    }
  }
  if (flags & NBDKIT_FLAG_FUA)
    return dir_flush (NULL, 0);
  return 0;
}

static int
dir_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return zero_or_trim ("zero", count, offset, flags);
}

static int
dir_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return zero_or_trim ("trim", count, offset, flags & ~NBDKIT_FLAG_FAST_ZERO);
}

/* Sync one dirty chunk.  A chunk deleted since it was written has
 * nothing left to sync (the directory sync covers the deletion). */
static int
sync_chunk (uint64_t chunk)
{
  struct fdcache_entry *e;
  int r = 0;

  pthread_rwlock_rdlock (lock_of (chunk));
  e = get_chunk (chunk, false);
  if (e == NULL)
    r = errno == ENOENT ? 0 : -1;
  else {
    r = fdatasync (e->fd);
    fdcache_release (fds, e);
  }
  pthread_rwlock_unlock (lock_of (chunk));
  return r;
}

static int
dir_flush (void *handle, uint32_t flags)
{
  GArray *list;
  int r = 0, err = 0;
  guint i;

  /* Take the current dirty set and clear the chunks' marks before
   * syncing them: a write that lands meanwhile marks its chunk again
   * and is covered by this sync or the next flush. */
  pthread_mutex_lock (&dirty_lock);
  list = dirty_list;
  dirty_list = g_array_new (FALSE, FALSE, sizeof (uint64_t));
  pthread_mutex_unlock (&dirty_lock);
  for (i = 0; i < list->len; ++i)
    r3map_chunkmap_set (dirty, g_array_index (list, uint64_t, i), CLEAN);

  if (list->len > SYNCFS_THRESHOLD) {
    if (syncfs (dir_fd) == -1) {
      err = errno;
      r = -1;
    }
  }
  else {
    for (i = 0; i < list->len; ++i) {
      if (sync_chunk (g_array_index (list, uint64_t, i)) == -1) {
        err = errno;
        r = -1;
      }
    }
  }
  if (r == -1) {
    /* Whatever was not proven durable stays dirty. */
    for (i = 0; i < list->len; ++i)
      mark_dirty (g_array_index (list, uint64_t, i));
  }
  g_array_free (list, TRUE);

  if (sync_dir () == -1 && r == 0) {
    err = errno;
    r = -1;
  }
  if (r == -1) {
    errno = err;
    nbdkit_error ("flush: dir=%s: %m", dir);
  }
  return r;
}

static bool
chunk_exists (uint64_t chunk)
{
  struct fdcache_entry *e = fdcache_lookup (fds, chunk);
  struct stat st;
  char name[17];

  if (e != NULL) {
    fdcache_release (fds, e);
    return true;
  }
  chunk_name (chunk, name);
  return fstatat (dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static int
dir_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
             struct nbdkit_extents *extents)
{
  bool req_one = flags & NBDKIT_FLAG_REQ_ONE;
  uint64_t chunk = offset >> chunk_shift;
  uint64_t start = offset, end = offset + count;
  uint32_t type = 0, prev = UINT32_MAX;

  /* One extent per run of present or missing chunks; nbdkit merges
   * neighbours of the same type and clips the first and last. */
  for (; start < end; chunk++) {
    uint64_t next = MIN ((chunk + 1) << chunk_shift, end);

    type = chunk_exists (chunk) ? 0 : NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
    if (req_one && prev != UINT32_MAX && type != prev)
      break;
    if (nbdkit_add_extent (extents, start, next - start, type) == -1)
      return -1;
    prev = type;
    start = next;
  }
  return 0;
}

static struct nbdkit_plugin plugin = {
  .name              = "r3map-dir",
  .longname          = "r3map directory of chunks",
  .version           = PACKAGE_VERSION,
  .load              = dir_load,
  .unload            = dir_unload,
  .config            = dir_config,
  .config_complete   = dir_config_complete,
  .config_help       = dir_config_help,
  .magic_config_key  = "dir",
  .dump_plugin       = dir_dump_plugin,
  .open              = dir_open,
  .get_size          = dir_get_size,
  .can_write         = dir_can_write,
  .can_multi_conn    = dir_can_multi_conn,
  .can_trim          = dir_can_trim,
  .can_zero          = dir_can_zero,
  .can_fast_zero     = dir_can_fast_zero,
  .can_fua           = dir_can_fua,
  .can_extents       = dir_can_extents,
  .pread             = dir_pread,
  .pwrite            = dir_pwrite,
  .flush             = dir_flush,
  .trim              = dir_trim,
  .zero              = dir_zero,
  .extents           = dir_extents,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)
