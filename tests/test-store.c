/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Unit tests of the store interface (lib/store*.c).  One sequence of
 * operations, checked against what must be read back, runs over each
 * kind of store: a file descriptor, a libnbd connection to a captive
 * nbdkit, and an nbdkit `next' faked over a buffer. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <libnbd.h>
#include <nbdkit-filter.h>

#include "store.h"

#define SIZE (4 << 20)

static void
fill (char *buf, size_t n, unsigned seed)
{
  size_t i;

  for (i = 0; i < n; ++i)
    buf[i] = (char) (seed + i * 7 + (i >> 9));
}

static void
exercise (struct r3map_store *s)
{
  g_autofree char *buf = g_malloc (SIZE);
  g_autofree char *want = g_malloc0 (SIZE);
  g_autofree char *zeros = g_malloc0 (SIZE);

  g_assert_cmpuint (s->size, ==, SIZE);

  /* Unaligned write, read back. */
  fill (want + 1000, 200000, 1);
  g_assert_cmpint (r3map_store_pwrite (s, want + 1000, 200000, 1000, false), ==, 0);
  fill (want + SIZE - 10, 10, 2);
  g_assert_cmpint (r3map_store_pwrite (s, want + SIZE - 10, 10, SIZE - 10, true), ==, 0);
  g_assert_cmpint (r3map_store_flush (s), ==, 0);
  g_assert_cmpint (r3map_store_pread (s, buf, SIZE, 0), ==, 0);
  g_assert_true (memcmp (buf, want, SIZE) == 0);

  /* Zero: reads back as zeros, neighbours untouched. */
  g_assert_cmpint (r3map_store_zero (s, 65536, 65536), ==, 0);
  memset (want + 65536, 0, 65536);
  g_assert_cmpint (r3map_store_pread (s, buf, SIZE, 0), ==, 0);
  g_assert_true (memcmp (buf, want, SIZE) == 0);

  /* Trim: advisory, so only what is outside the range is checked. */
  g_assert_cmpint (r3map_store_trim (s, 4096, 8192), ==, 0);
  g_assert_cmpint (r3map_store_pread (s, buf, 8192, 0), ==, 0);
  g_assert_true (memcmp (buf, want, 8192) == 0);

  /* Outside the store: refused before reaching the backend. */
  g_assert_cmpint (r3map_store_pread (s, buf, 2, SIZE - 1), ==, -1);
  g_assert_cmpint (errno, ==, ERANGE);
  g_assert_cmpint (r3map_store_pwrite (s, buf, 1, SIZE, false), ==, -1);
  g_assert_cmpint (errno, ==, ERANGE);
  g_assert_cmpint (r3map_store_zero (s, 1, UINT64_MAX), ==, -1);
  g_assert_cmpint (errno, ==, ERANGE);
  /* Empty requests succeed and touch nothing. */
  g_assert_cmpint (r3map_store_pread (s, buf, 0, SIZE), ==, 0);
  (void) zeros;
}

static void
test_fd (void)
{
  char path[] = "/tmp/r3map-test-store.XXXXXX";
  int fd = mkstemp (path);
  struct r3map_store *s;

  g_assert_cmpint (fd, >=, 0);
  unlink (path);
  g_assert_cmpint (ftruncate (fd, SIZE), ==, 0);
  s = r3map_store_new_fd (fd, true);
  g_assert_nonnull (s);
  exercise (s);
  r3map_store_close (s);
  /* The store owned the descriptor and closed it. */
  g_assert_cmpint (fcntl (fd, F_GETFD), ==, -1);
}

static void
test_fd_not_a_file (void)
{
  int fds[2];

  g_assert_cmpint (pipe (fds), ==, 0);
  g_assert_null (r3map_store_new_fd (fds[0], false));
  g_assert_cmpint (errno, ==, EINVAL);
  close (fds[0]);
  close (fds[1]);
}

static void
test_nbd (void)
{
  char *argv[] = { "nbdkit", "-s", "--exit-with-parent", "memory", "4M", NULL };
  struct nbd_handle *nbd = nbd_create ();
  struct r3map_store *s;

  g_assert_nonnull (nbd);
  if (nbd_connect_command (nbd, argv) == -1) {
    g_test_skip ("cannot run nbdkit memory");
    nbd_close (nbd);
    return;
  }
  s = r3map_store_new_nbd (nbd, true);
  g_assert_nonnull (s);
  exercise (s);
  r3map_store_close (s);
}

/* A fake `next' over a buffer, with the capabilities a plugin reports.
 * The first member lets the callbacks find their buffer. */
struct fake {
  struct nbdkit_next_ops ops;
  char *data;
  int fail_errno;
};

static int64_t fake_get_size (nbdkit_next *n) { return SIZE; }
static int fake_yes (nbdkit_next *n) { return 1; }
static int fake_no (nbdkit_next *n) { return 0; }

static int
fake_pread (nbdkit_next *n, void *buf, uint32_t count, uint64_t off,
            uint32_t flags, int *err)
{
  struct fake *f = (struct fake *) n;

  if (f->fail_errno) {
    *err = f->fail_errno;
    return -1;
  }
  memcpy (buf, f->data + off, count);
  return 0;
}

static int
fake_pwrite (nbdkit_next *n, const void *buf, uint32_t count, uint64_t off,
             uint32_t flags, int *err)
{
  struct fake *f = (struct fake *) n;

  memcpy (f->data + off, buf, count);
  return 0;
}

static int
fake_flush (nbdkit_next *n, uint32_t flags, int *err)
{
  return 0;
}

static void
test_next (void)
{
  struct fake f = { 0 };
  struct r3map_store *s;
  char c;

  f.ops.get_size = fake_get_size;
  f.ops.can_flush = fake_yes;
  /* No FUA, trim or zero: the store must emulate them. */
  f.ops.can_fua = fake_no;
  f.ops.can_trim = fake_no;
  f.ops.can_zero = fake_no;
  f.ops.pread = fake_pread;
  f.ops.pwrite = fake_pwrite;
  f.ops.flush = fake_flush;
  f.data = g_malloc0 (SIZE);

  s = r3map_store_new_next (&f.ops);
  g_assert_nonnull (s);
  exercise (s);

  /* The backend's errno reaches the caller. */
  f.fail_errno = ENOSPC;
  g_assert_cmpint (r3map_store_pread (s, &c, 1, 0), ==, -1);
  g_assert_cmpint (errno, ==, ENOSPC);
  r3map_store_close (s);
  g_free (f.data);
}

int
main (int argc, char *argv[])
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/store/fd", test_fd);
  g_test_add_func ("/store/fd-not-a-file", test_fd_not_a_file);
  g_test_add_func ("/store/nbd", test_nbd);
  g_test_add_func ("/store/next", test_next);
  return g_test_run ();
}
