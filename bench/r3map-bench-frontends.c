/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map-bench-frontends: the measurements of bench-frontends.sh.
 *
 *   r3map-bench-frontends touch slice|libnbd|file TARGET N SEED
 *       First touch of N pages, each in a chunk (64 KiB) of its own,
 *       chosen at random (SEED): through a libr3map region
 *       (R3MAP_MAP_RANDOM: no readahead), by a 4 KiB nbd_pread, or by
 *       a 4 KiB pread of the file.  TARGET is a URI, or the file.
 *       Prints "median p90 min" in microseconds.
 *
 *   r3map-bench-frontends seq slice|slice-again|libnbd|libnbd-qd16|file TARGET
 *       Reads the whole export in order, and reads every byte of it as
 *       an application would (a sum of 8-byte words): walking the
 *       region; walking it a second time (slice-again: only the second
 *       walk is timed, the region is all there); by nbd_pread of 256
 *       KiB one at a time, with 16 of them in flight; or by read(2) of
 *       1 MiB.  Prints MB/s (10^6 bytes).
 *
 *   r3map-bench-frontends wp URI N SEED
 *       The cost of write tracking: for N pages in chunks of their
 *       own, fetched first, the first write (a write-protect fault)
 *       and a second write; then r3map_sync of those N dirty pages;
 *       and what the compare-based alternative costs per chunk (a
 *       clean copy at fetch time, a memcmp at sync time).  Prints
 *       "wp_fault_us second_write_us sync_us_per_page copy_us cmp_us"
 *       (medians, the sync's mean).
 *
 * Time is CLOCK_MONOTONIC around the access alone.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>
#include <libr3map.h>

#define CHUNK (64 * 1024)
#define PAGE 4096

static double
now_us (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void fail (const char *what, const char *why)
  __attribute__ ((noreturn));

static void
fail (const char *what, const char *why)
{
  fprintf (stderr, "r3map-bench-frontends: %s: %s\n", what, why);
  exit (EXIT_FAILURE);
}

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y;
}

static double
quantile (double *v, size_t n, double q)
{
  qsort (v, n, sizeof *v, cmp_double);
  return v[(size_t) (q * (n - 1) + 0.5)];
}

/* N offsets, each a random page of a chunk of its own. */
static uint64_t *
pick (uint64_t size, size_t n, unsigned seed)
{
  uint64_t nchunks = size / CHUNK, *chunks, *offs, i;

  if (n > nchunks)
    fail ("N", "more pages than chunks");
  chunks = malloc (nchunks * sizeof *chunks);
  offs = malloc (n * sizeof *offs);
  srandom (seed);
  for (i = 0; i < nchunks; i++)
    chunks[i] = i;
  for (i = 0; i < n; i++) {     /* a partial Fisher-Yates shuffle */
    uint64_t j = i + random () % (nchunks - i), t = chunks[i];

    chunks[i] = chunks[j];
    chunks[j] = t;
    offs[i] = chunks[i] * CHUNK + (random () % (CHUNK / PAGE)) * PAGE;
  }
  free (chunks);
  return offs;
}

static struct nbd_handle *
connect_uri (const char *uri)
{
  struct nbd_handle *h = nbd_create ();

  if (h == NULL || nbd_connect_uri (h, uri) == -1)
    fail (uri, nbd_get_error ());
  return h;
}

static int
touch (const char *how, const char *target, size_t n, unsigned seed)
{
  double *lat = malloc (n * sizeof *lat);
  char buf[PAGE];
  uint64_t size, *offs;
  size_t i;

  if (strcmp (how, "slice") == 0) {
    void *addr;
    size_t len;

    if (r3map_map (target, R3MAP_MAP_READONLY | R3MAP_MAP_RANDOM,
                   &addr, &len) == -1)
      fail (target, r3map_get_error ());
    offs = pick (len, n, seed);
    for (i = 0; i < n; i++) {
      double t0 = now_us ();
      (void) *(volatile char *) ((char *) addr + offs[i]);
      lat[i] = now_us () - t0;
    }
    r3map_unmap (addr, len, 0);
  }
  else if (strcmp (how, "libnbd") == 0) {
    struct nbd_handle *h = connect_uri (target);

    size = nbd_get_size (h);
    offs = pick (size, n, seed);
    for (i = 0; i < n; i++) {
      double t0 = now_us ();
      if (nbd_pread (h, buf, PAGE, offs[i], 0) == -1)
        fail ("nbd_pread", nbd_get_error ());
      lat[i] = now_us () - t0;
    }
    nbd_shutdown (h, 0);
    nbd_close (h);
  }
  else if (strcmp (how, "file") == 0) {
    int fd = open (target, O_RDONLY);
    struct stat st;

    if (fd == -1 || fstat (fd, &st) == -1)
      fail (target, strerror (errno));
    offs = pick (st.st_size, n, seed);
    for (i = 0; i < n; i++) {
      double t0 = now_us ();
      if (pread (fd, buf, PAGE, offs[i]) != PAGE)
        fail ("pread", strerror (errno));
      lat[i] = now_us () - t0;
    }
    close (fd);
  }
  else
    fail ("touch", "slice, libnbd or file");
  printf ("%.1f %.1f %.1f\n", quantile (lat, n, 0.5), quantile (lat, n, 0.9),
          quantile (lat, n, 0));
  free (offs);
  free (lat);
  return 0;
}

static uint64_t
sum_words (const void *p, size_t len)
{
  const uint64_t *w = p;
  uint64_t sum = 0;
  size_t i;

  for (i = 0; i < len / 8; i++)
    sum += w[i];
  return sum;
}

/* The 16 buffers of libnbd-qd16, summed as each read completes. */
struct slot {
  char *buf;
  size_t len;
  uint64_t *sum;
  int busy;
};

static int
read_done (void *user_data, int *error)
{
  struct slot *s = user_data;

  if (*error)
    fail ("nbd_aio_pread", strerror (*error));
  *s->sum += sum_words (s->buf, s->len);
  s->busy = 0;
  return 1;
}

static int
seq (const char *how, const char *target)
{
  const size_t req = 256 * 1024;
  double t0, t1;
  uint64_t size = 0, sum = 0;

  if (strcmp (how, "slice") == 0 || strcmp (how, "slice-again") == 0) {
    void *addr;
    size_t len;

    if (r3map_map (target, R3MAP_MAP_READONLY, &addr, &len) == -1)
      fail (target, r3map_get_error ());
    if (strcmp (how, "slice-again") == 0)
      sum = sum_words (addr, len);
    t0 = now_us ();
    sum += sum_words (addr, len);
    t1 = now_us ();
    size = len;
    r3map_unmap (addr, len, 0);
  }
  else if (strncmp (how, "libnbd", 6) == 0) {
    struct nbd_handle *h = connect_uri (target);
    unsigned qd = strcmp (how, "libnbd-qd16") == 0 ? 16 : 1, k;
    char *buf = malloc (req * qd);
    struct slot slots[16];
    uint64_t off = 0;

    size = nbd_get_size (h);
    t0 = now_us ();
    if (qd == 1) {
      for (off = 0; off < size; off += req) {
        size_t n = size - off < req ? size - off : req;

        if (nbd_pread (h, buf, n, off, 0) == -1)
          fail ("nbd_pread", nbd_get_error ());
        sum += sum_words (buf, n);
      }
    }
    else {
      /* Keep qd reads in flight, each in a slot that is free again
       * when its read completed (the server may answer out of order). */
      memset (slots, 0, sizeof slots);
      while (off < size || nbd_aio_in_flight (h) > 0) {
        while (off < size && (unsigned) nbd_aio_in_flight (h) < qd) {
          struct slot *s;

          for (k = 0; slots[k].busy; k++)
            ;
          s = &slots[k];
          s->busy = 1;
          s->buf = buf + k * req;
          s->len = size - off < req ? size - off : req;
          s->sum = &sum;
          if (nbd_aio_pread (h, s->buf, s->len, off,
                             (nbd_completion_callback) {
                               .callback = read_done, .user_data = s },
                             0) == -1)
            fail ("nbd_aio_pread", nbd_get_error ());
          off += req;
        }
        if (nbd_poll (h, -1) == -1)
          fail ("nbd_poll", nbd_get_error ());
      }
    }
    t1 = now_us ();
    free (buf);
    nbd_shutdown (h, 0);
    nbd_close (h);
  }
  else if (strcmp (how, "file") == 0) {
    int fd = open (target, O_RDONLY);
    char *buf = malloc (1 << 20);
    ssize_t r;

    if (fd == -1)
      fail (target, strerror (errno));
    t0 = now_us ();
    while ((r = read (fd, buf, 1 << 20)) > 0) {
      size += r;
      sum += sum_words (buf, r);
    }
    t1 = now_us ();
    if (r == -1)
      fail ("read", strerror (errno));
    free (buf);
    close (fd);
  }
  else
    fail ("seq", "slice, slice-again, libnbd, libnbd-qd16 or file");
  printf ("%.1f\n", size / (t1 - t0));
  fprintf (stderr, "(%" PRIu64 " bytes, sum %" PRIu64 ")\n", size, sum & 1);
  return 0;
}

static int
wp (const char *uri, size_t n, unsigned seed)
{
  double *first = malloc (n * sizeof *first), *second = malloc (n * sizeof *second);
  double *copy = malloc (n * sizeof *copy), *cmp = malloc (n * sizeof *cmp);
  char *clean = malloc (CHUNK);
  uint64_t *offs;
  void *addr;
  size_t len, i;
  double t0, sync_us;

  if (r3map_map (uri, R3MAP_MAP_RANDOM, &addr, &len) == -1)
    fail (uri, r3map_get_error ());
  offs = pick (len, n, seed);
  for (i = 0; i < n; i++) {
    volatile char *p = (char *) addr + offs[i];
    char *c = (char *) addr + offs[i] / CHUNK * CHUNK;

    (void) *p;                  /* fetched, write-protected */
    t0 = now_us ();
    memcpy (clean, c, CHUNK);   /* what a compare-based design copies */
    copy[i] = now_us () - t0;
    t0 = now_us ();
    *p = 1;                     /* write-protect fault */
    first[i] = now_us () - t0;
    t0 = now_us ();
    p[8] = 2;                   /* no fault */
    second[i] = now_us () - t0;
    t0 = now_us ();
    if (memcmp (clean, c, CHUNK) == 0)  /* what it compares at sync */
      fail ("memcmp", "the write is not seen");
    cmp[i] = now_us () - t0;
  }
  t0 = now_us ();
  if (r3map_sync (addr, len, 0) == -1)
    fail ("r3map_sync", r3map_get_error ());
  sync_us = now_us () - t0;
  r3map_unmap (addr, len, R3MAP_UNMAP_DISCARD);
  printf ("%.2f %.3f %.2f %.2f %.2f\n", quantile (first, n, 0.5),
          quantile (second, n, 0.5), sync_us / n, quantile (copy, n, 0.5),
          quantile (cmp, n, 0.5));
  return 0;
}

int
main (int argc, char *argv[])
{
  if (argc == 6 && strcmp (argv[1], "touch") == 0)
    return touch (argv[2], argv[3], atol (argv[4]), atoi (argv[5]));
  if (argc == 4 && strcmp (argv[1], "seq") == 0)
    return seq (argv[2], argv[3]);
  if (argc == 5 && strcmp (argv[1], "wp") == 0)
    return wp (argv[2], atol (argv[3]), atoi (argv[4]));
  fprintf (stderr, "usage: see the head of r3map-bench-frontends.c\n");
  return 2;
}
