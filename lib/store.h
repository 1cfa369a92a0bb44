/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The store interface: a flat range of bytes that can be read,
 * written, flushed, trimmed and zeroed.  The pull and track engines
 * move chunks between two stores without knowing what is behind them:
 *
 *  - a plain file descriptor (a cache file, a block device),
 *  - a libnbd handle (a remote NBD server, the seeder of a migration),
 *  - an nbdkit `next' (the plugin below a filter).
 *
 * Every call returns 0 on success, or -1 with errno set to what the
 * client should see (EIO, ENOSPC, EROFS, ETIMEDOUT ...).  Requests
 * outside the store fail with ERANGE before reaching the backend.
 */

#ifndef R3MAP_STORE_H
#define R3MAP_STORE_H

#include <stdbool.h>
#include <stdint.h>

struct nbd_handle;
struct nbdkit_next_ops;

/* What a kind of store implements.  zero may fail with ENOTSUP (or be
 * NULL) where the backend cannot zero: the caller then writes zeros. */
struct r3map_store_ops {
  const char *name;
  int (*pread) (void *h, void *buf, uint32_t count, uint64_t offset);
  int (*pwrite) (void *h, const void *buf, uint32_t count, uint64_t offset,
                 bool fua);
  int (*flush) (void *h);
  int (*trim) (void *h, uint32_t count, uint64_t offset);
  int (*zero) (void *h, uint32_t count, uint64_t offset);
  void (*close) (void *h);
};

struct r3map_store {
  const struct r3map_store_ops *ops;
  void *h;
  uint64_t size;
};

/* A file or block device.  If OWN, closing the store closes FD. */
extern struct r3map_store *r3map_store_new_fd (int fd, bool own);

/* A connected libnbd handle.  If OWN, closing the store shuts the
 * connection down and closes the handle. */
extern struct r3map_store *r3map_store_new_nbd (struct nbd_handle *nbd,
                                                bool own);

/* nbd_connect_uri (3), but giving up after TIMEOUT_MS milliseconds
 * (a server that accepts and never answers would hold the caller
 * forever): -1 with errno ETIMEDOUT then, or -1 with libnbd's error
 * and errno if the connection fails. */
extern int r3map_nbd_connect_uri (struct nbd_handle *nbd, const char *uri,
                                  uint64_t timeout_ms);

/* libnbd's last error without the name of the libnbd call in front
 * ("nbd_poll: ..."), which says nothing to the reader of a message
 * about a connection. */
extern const char *r3map_nbd_error (void);

/* The plugin (or filter) below an nbdkit filter.  The store does not
 * own NEXT: nbdkit does. */
extern struct r3map_store *r3map_store_new_next (struct nbdkit_next_ops *next);

/* For implementations: wrap handle H of a kind OPS of SIZE bytes.
 * Returns NULL with errno = ENOMEM; H is then the caller's to free. */
extern struct r3map_store *r3map_store_new (const struct r3map_store_ops *ops,
                                            void *h, uint64_t size);

extern void r3map_store_close (struct r3map_store *store);

extern int r3map_store_pread (struct r3map_store *store, void *buf,
                              uint32_t count, uint64_t offset);
extern int r3map_store_pwrite (struct r3map_store *store, const void *buf,
                               uint32_t count, uint64_t offset, bool fua);
extern int r3map_store_flush (struct r3map_store *store);
extern int r3map_store_trim (struct r3map_store *store,
                             uint32_t count, uint64_t offset);
extern int r3map_store_zero (struct r3map_store *store,
                             uint32_t count, uint64_t offset);

#endif /* R3MAP_STORE_H */
