/* libr3map: an NBD export as memory.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * libnbd handles with a deadline on everything.  A thread that
 * touches the region waits for the fault thread, which waits for the
 * server: a server that never answers must turn into an error (and a
 * signal in the toucher), never into a process that hangs.  So every
 * wait goes through nbd_poll with a timeout instead of libnbd's
 * blocking calls.
 */

#include <config.h>

#include <errno.h>
#include <time.h>

#include "internal.h"

int64_t
r3map_now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
remaining_ms (int64_t deadline)
{
  int64_t left = (deadline - r3map_now ()) / 1000000;

  return left < 0 ? 0 : left > 1000000 ? 1000000 : (int) left + 1;
}

/* Connect to URI; NULL with the error set on failure.  The URI is the
 * application's, so it may name local files (tls-psk-file=, socket=),
 * as in nbd_connect_uri(3) with nbd_set_uri_allow_local_file. */
struct nbd_handle *
r3map_connect (const char *uri, const char *name, int timeout_ms)
{
  struct nbd_handle *h = nbd_create ();
  int64_t deadline = r3map_now () + (int64_t) timeout_ms * 1000000;
  int r;

  if (h == NULL) {
    r3map_set_error_nbd ("nbd_create");
    return NULL;
  }
  nbd_set_handle_name (h, name);
  if (nbd_set_uri_allow_local_file (h, true) == -1 ||
      nbd_aio_connect_uri (h, uri) == -1) {
    r3map_set_error_nbd (uri);
    nbd_close (h);
    return NULL;
  }
  while (!nbd_aio_is_ready (h)) {
    if (nbd_aio_is_dead (h) || nbd_aio_is_closed (h)) {
      r3map_set_error_nbd (uri);
      nbd_close (h);
      return NULL;
    }
    r = nbd_poll (h, remaining_ms (deadline));
    if (r == -1) {
      r3map_set_error_nbd (uri);
      nbd_close (h);
      return NULL;
    }
    if (r == 0 && r3map_now () >= deadline) {
      r3map_set_error (ETIMEDOUT, "%s: no answer from the server within "
                       "%d ms", uri, timeout_ms);
      nbd_close (h);
      return NULL;
    }
  }
  return h;
}

/* Wait for COOKIE; -1 with the error set on failure or timeout.  After
 * a timeout the handle is in an unknown state: the caller closes it. */
int
r3map_wait (struct nbd_handle *h, int64_t cookie, int timeout_ms)
{
  int64_t deadline = r3map_now () + (int64_t) timeout_ms * 1000000;
  int r;

  for (;;) {
    r = nbd_aio_command_completed (h, cookie);
    if (r == 1)
      return 0;
    if (r == -1) {
      r3map_set_error_nbd ("NBD request");
      return -1;
    }
    r = nbd_poll (h, remaining_ms (deadline));
    if (r == -1) {
      r3map_set_error_nbd ("NBD request");
      return -1;
    }
    if (r == 0 && r3map_now () >= deadline) {
      r3map_set_error (ETIMEDOUT, "no answer from the server within %d ms",
                       timeout_ms);
      return -1;
    }
  }
}

/* Close a handle politely: let the requests in flight finish (for at
 * most TIMEOUT_MS), tell the server with NBD_CMD_DISC, then close.
 * Closing the socket with replies pending is legal, but nbdkit 1.32
 * aborts on it (an assertion in raw_send_socket when it writes the
 * reply to the closed socket), taking every other client down. */
void
r3map_close (struct nbd_handle *h, int timeout_ms)
{
  int64_t deadline = r3map_now () + (int64_t) timeout_ms * 1000000;

  if (h == NULL)
    return;
  while (nbd_aio_in_flight (h) > 0 && nbd_aio_is_dead (h) == 0 &&
         nbd_aio_is_closed (h) == 0 && r3map_now () < deadline)
    if (nbd_poll (h, remaining_ms (deadline)) == -1)
      break;
  if (nbd_aio_in_flight (h) == 0 &&
      (nbd_aio_is_ready (h) == 1 || nbd_aio_is_processing (h) == 1))
    nbd_shutdown (h, 0);
  nbd_close (h);
}
