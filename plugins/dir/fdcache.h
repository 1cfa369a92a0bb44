/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * A bounded cache of open chunk files.
 *
 * Opening a chunk file for every request would cost two system calls
 * per request; keeping every chunk open would run out of descriptors
 * on a large disk.  The cache keeps the most recently used CAPACITY
 * descriptors open.  An entry in use is referenced and never closed
 * under its user; when every entry is in use the cache grows past its
 * capacity rather than fail, and shrinks back as entries are released.
 */

#ifndef R3MAP_DIR_FDCACHE_H
#define R3MAP_DIR_FDCACHE_H

#include <stddef.h>
#include <stdint.h>

struct fdcache;

struct fdcache_entry {
  uint64_t key;
  int fd;
  /* The rest is private to fdcache.c. */
  unsigned refs;
  struct fdcache_entry *prev, *next;
};

extern struct fdcache *fdcache_new (size_t capacity);
extern void fdcache_free (struct fdcache *c);

/* A referenced entry for KEY, or NULL if KEY is not cached. */
extern struct fdcache_entry *fdcache_lookup (struct fdcache *c, uint64_t key);

/* Cache FD, just opened for KEY, and return it referenced.  If another
 * thread cached KEY meanwhile, FD is closed and that entry returned.
 * Returns NULL (FD closed, errno = ENOMEM) if memory runs out. */
extern struct fdcache_entry *fdcache_insert (struct fdcache *c,
                                             uint64_t key, int fd);

/* Drop a reference.  errno is preserved. */
extern void fdcache_release (struct fdcache *c, struct fdcache_entry *e);

/* Close and forget KEY's descriptor.  The caller guarantees that
 * nobody holds a reference (it holds the chunk's exclusive lock). */
extern void fdcache_drop (struct fdcache *c, uint64_t key);

#endif /* R3MAP_DIR_FDCACHE_H */
