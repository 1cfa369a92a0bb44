/* libr3map: an NBD export as memory.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Thin wrappers over the userfaultfd(2) ioctls that libr3map uses.
 * See UFFDIO_COPY(2const) and friends, and the kernel's
 * Documentation/admin-guide/mm/userfaultfd.rst.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* UFFDIO_POISON (Linux 6.6) is newer than the headers of some
 * distributions that run newer kernels: the ABI is fixed, so spell it
 * out.  The feature bit tells at run time whether the kernel has it. */
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFDIO_POISON
#define R3MAP_UFFDIO_POISON_NR 0x08
struct r3map_uffdio_poison {
  struct uffdio_range range;
  __u64 mode;
  __s64 updated;
};
#define UFFDIO_POISON \
  _IOWR (UFFDIO, R3MAP_UFFDIO_POISON_NR, struct r3map_uffdio_poison)
#define R3MAP_POISON_BIT R3MAP_UFFDIO_POISON_NR
typedef struct r3map_uffdio_poison poison_arg;
#else
#define R3MAP_POISON_BIT _UFFDIO_POISON
typedef struct uffdio_poison poison_arg;
#endif

/* A new userfaultfd, not yet through UFFDIO_API.  The system call
 * first; when it is not permitted (vm.unprivileged_userfaultfd=0 and
 * no CAP_SYS_PTRACE), /dev/userfaultfd, whose file permissions decide.
 * Both handle faults taken inside the kernel too (a read(2) into the
 * region), which UFFD_USER_MODE_ONLY would turn into EFAULT: so that
 * mode is not used. */
static int
open_raw (void)
{
  int fd, dev, e;

  fd = syscall (SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (fd >= 0)
    return fd;
  e = errno;
  if (e == ENOSYS) {
    r3map_set_error (ENOSYS, "userfaultfd(2) is not available: the kernel "
                     "is built without CONFIG_USERFAULTFD, or the program "
                     "runs under valgrind, which does not implement it");
    return -1;
  }
  if (e != EPERM) {
    r3map_set_error (e, "userfaultfd(2): %s", strerror (e));
    return -1;
  }
  dev = open ("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev >= 0) {
    fd = ioctl (dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    e = errno;
    close (dev);
    if (fd >= 0)
      return fd;
  }
  r3map_set_error (EPERM, "userfaultfd(2) is not permitted: run with "
                   "CAP_SYS_PTRACE, set the sysctl "
                   "vm.unprivileged_userfaultfd=1, or give this user "
                   "read-write access to /dev/userfaultfd");
  return -1;
}

/* UFFDIO_API may be called once per descriptor, and asking for a
 * feature the kernel lacks fails: so ask a first descriptor what the
 * kernel has, then open the real one with what is wanted. */
int
r3map_uffd_open (bool want_wp, struct uffd_features *got)
{
  struct uffdio_api api = { .api = UFFD_API };
  uint64_t have;
  int fd;

  fd = open_raw ();
  if (fd == -1)
    return -1;
  if (ioctl (fd, UFFDIO_API, &api) == -1) {
    r3map_set_error (errno, "UFFDIO_API: %s", strerror (errno));
    close (fd);
    return -1;
  }
  close (fd);
  have = api.features;

  got->wp = want_wp && (have & UFFD_FEATURE_PAGEFAULT_FLAG_WP);
  got->poison = (have & UFFD_FEATURE_POISON) != 0;
  if (want_wp && !got->wp) {
    r3map_set_error (ENOTSUP, "this kernel cannot write-protect anonymous "
                     "memory through userfaultfd (Linux 5.7 or later "
                     "needed to track writes): map with R3MAP_MAP_READONLY");
    return -1;
  }

  fd = open_raw ();
  if (fd == -1)
    return -1;
  api = (struct uffdio_api) {
    .api = UFFD_API,
    .features = (got->wp ? UFFD_FEATURE_PAGEFAULT_FLAG_WP : 0) |
                (got->poison ? UFFD_FEATURE_POISON : 0),
  };
  if (ioctl (fd, UFFDIO_API, &api) == -1) {
    r3map_set_error (errno, "UFFDIO_API: %s", strerror (errno));
    close (fd);
    return -1;
  }
  return fd;
}

/* Register the region for missing faults, and for write-protect
 * faults if WP.  Returns the ioctls the range supports, or 0. */
int
r3map_uffd_register (int uffd, void *addr, size_t len, bool wp)
{
  struct uffdio_register reg = {
    .range = { .start = (uintptr_t) addr, .len = len },
    .mode = UFFDIO_REGISTER_MODE_MISSING | (wp ? UFFDIO_REGISTER_MODE_WP : 0),
  };
  uint64_t need = (UINT64_C (1) << _UFFDIO_COPY) |
                  (UINT64_C (1) << _UFFDIO_WAKE);

  if (wp)
    need |= UINT64_C (1) << _UFFDIO_WRITEPROTECT;
  if (ioctl (uffd, UFFDIO_REGISTER, &reg) == -1) {
    r3map_set_error (errno, "UFFDIO_REGISTER: %s", strerror (errno));
    return -1;
  }
  if ((reg.ioctls & need) != need) {
    r3map_set_error (ENOTSUP, "UFFDIO_REGISTER: the kernel does not offer "
                     "UFFDIO_COPY%s on anonymous memory",
                     wp ? " and UFFDIO_WRITEPROTECT" : "");
    return -1;
  }
  return (reg.ioctls >> R3MAP_POISON_BIT) & 1;
}

/* Copy LEN bytes into the region at DST, write-protected if WP, and
 * wake the threads that fault there.  The kernel may copy part and ask
 * to be called again (EAGAIN, while the address space changes), and
 * refuses a range in which a page is already there (EEXIST): the
 * pages that are there are left as they are, they are newer. */
int
r3map_uffd_copy (int uffd, void *dst, const void *src, size_t len, bool wp)
{
  struct uffdio_copy c;
  size_t done = 0, page = sysconf (_SC_PAGESIZE);
  bool one_by_one = false;

  while (done < len) {
    c = (struct uffdio_copy) {
      .dst = (uintptr_t) dst + done,
      .src = (uintptr_t) src + done,
      .len = one_by_one ? page : len - done,
      .mode = wp ? UFFDIO_COPY_MODE_WP : 0,
    };
    if (ioctl (uffd, UFFDIO_COPY, &c) == 0) {
      done += c.len;
      continue;
    }
    if (errno == EAGAIN) {
      if (c.copy > 0)
        done += c.copy;
      continue;
    }
    if (errno == EEXIST) {
      if (one_by_one)
        done += page;
      one_by_one = true;
      continue;
    }
    return -1;
  }
  return 0;
}

int
r3map_uffd_wake (int uffd, void *addr, size_t len)
{
  struct uffdio_range r = { .start = (uintptr_t) addr, .len = len };

  return ioctl (uffd, UFFDIO_WAKE, &r);
}

/* Set (WP) or clear write protection; clearing wakes the writers. */
int
r3map_uffd_protect (int uffd, void *addr, size_t len, bool wp)
{
  struct uffdio_writeprotect w = {
    .range = { .start = (uintptr_t) addr, .len = len },
    .mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
  };

  return ioctl (uffd, UFFDIO_WRITEPROTECT, &w);
}

/* Pages that could not be read must never read as zeros: they raise
 * SIGBUS, as a file mapping does when its read fails (UFFDIO_POISON,
 * Linux 6.6).  Without it, the range is made inaccessible first, then
 * taken out of userfaultfd, which wakes the waiting threads: they
 * fault again and get SIGSEGV. */
int
r3map_uffd_fail (int uffd, bool can_poison, void *addr, size_t len)
{
  if (can_poison) {
    poison_arg p = { .range = { .start = (uintptr_t) addr, .len = len } };

    if (ioctl (uffd, UFFDIO_POISON, &p) == 0 || errno == EEXIST)
      return 0;
  }
  if (mprotect (addr, len, PROT_NONE) == -1)
    return -1;
  {
    struct uffdio_range r = { .start = (uintptr_t) addr, .len = len };

    return ioctl (uffd, UFFDIO_UNREGISTER, &r);
  }
}
