/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * A store over a file descriptor: a regular file or a block device. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/fs.h>

#include "store.h"

struct fd_store {
  int fd;
  bool own;
};

static int
fd_pread (void *h, void *buf, uint32_t count, uint64_t offset)
{
  struct fd_store *s = h;
  char *p = buf;

  while (count > 0) {
    ssize_t r = pread (s->fd, p, count, offset);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0) {               /* A file shorter than the store: zeros. */
      memset (p, 0, count);
      return 0;
    }
    p += r;
    count -= r;
    offset += r;
  }
  return 0;
}

static int
fd_pwrite (void *h, const void *buf, uint32_t count, uint64_t offset,
           bool fua)
{
  struct fd_store *s = h;
  const char *p = buf;

  while (count > 0) {
    ssize_t r = pwrite (s->fd, p, count, offset);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += r;
    count -= r;
    offset += r;
  }
  return fua ? fdatasync (s->fd) : 0;
}

static int
fd_flush (void *h)
{
  struct fd_store *s = h;

  return fdatasync (s->fd);
}

static int
fd_trim (void *h, uint32_t count, uint64_t offset)
{
  struct fd_store *s = h;

  /* Trim is advisory: a file system that cannot punch holes keeps the
   * data, which is allowed. */
  if (fallocate (s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 offset, count) == -1 &&
      errno != EOPNOTSUPP && errno != ENOSYS)
    return -1;
  return 0;
}

static int
fd_zero (void *h, uint32_t count, uint64_t offset)
{
  struct fd_store *s = h;

  if (fallocate (s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 offset, count) == 0)
    return 0;
  if (fallocate (s->fd, FALLOC_FL_ZERO_RANGE, offset, count) == 0)
    return 0;
  /* Neither works here (block devices, some file systems): let the
   * caller write zeros. */
  if (errno == EOPNOTSUPP || errno == ENOSYS || errno == ENODEV)
    errno = ENOTSUP;
  return -1;
}

static void
fd_close (void *h)
{
  struct fd_store *s = h;

  if (s->own)
    close (s->fd);
  free (s);
}

static const struct r3map_store_ops fd_ops = {
  .name = "fd",
  .pread = fd_pread,
  .pwrite = fd_pwrite,
  .flush = fd_flush,
  .trim = fd_trim,
  .zero = fd_zero,
  .close = fd_close,
};

struct r3map_store *
r3map_store_new_fd (int fd, bool own)
{
  struct r3map_store *store;
  struct fd_store *s;
  struct stat st;
  uint64_t size;

  if (fstat (fd, &st) == -1)
    return NULL;
  if (S_ISBLK (st.st_mode)) {
    if (ioctl (fd, BLKGETSIZE64, &size) == -1)
      return NULL;
  }
  else if (S_ISREG (st.st_mode))
    size = st.st_size;
  else {
    errno = EINVAL;
    return NULL;
  }

  s = calloc (1, sizeof *s);
  if (s == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  s->fd = fd;
  s->own = own;
  store = r3map_store_new (&fd_ops, s, size);
  if (store == NULL)
    free (s);
  return store;
}
