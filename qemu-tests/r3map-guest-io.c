/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map-guest-io: the workloads of the test guest (qemu-tests/), also
 * runnable on the host against an image file.  Linked statically: it
 * runs inside an initramfs that holds nothing but busybox.
 *
 *   r3map-guest-io pattern-write  [OPTIONS] DEVICE...
 *   r3map-guest-io pattern-verify [OPTIONS] DEVICE...
 *   r3map-guest-io pattern        [OPTIONS] DEVICE...   (write, then verify)
 *   r3map-guest-io writer         [OPTIONS] DEVICE...
 *
 * The pattern is deterministic: every 512-byte sector starts with its
 * byte offset and the seed, followed by bytes drawn from a generator
 * seeded with both, so data landing at the wrong offset is caught as
 * surely as wrong data.
 *
 * The writer writes blocks continuously, each one carrying a header
 * (magic, run id, device, block index, sequence number, checksum of
 * the whole block), and remembers the latest sequence number it wrote
 * to each block.  Verifying reads every block of the devices back and
 * checks that each one written holds exactly its latest write, and that
 * no block it never wrote carries this run's header.  The table lives
 * in the guest's memory, so a guest that was live-migrated verifies
 * after the migration every block it ever wrote, before it and since.
 *
 * The writer is driven by lines on the control input (stdin, that is
 * the serial console, by default): "verify" (verify now and go on
 * writing), "pause", "resume", "latency" (print the longest write
 * since the last "latency" and start measuring again), "stop" (verify
 * and exit); SIGUSR1 asks for a verification and SIGTERM for a stop,
 * and --seconds stops it after a time.  It prints its progress every
 * --report seconds, with the longest write of the interval: a disk
 * that pauses (after a live migration, say) shows there.
 *
 * Every result is one line "R3MAP-RESULT: PASS ..." or
 * "R3MAP-RESULT: FAIL ...", which the tests look for.  The exit status
 * is 0 when every verification passed, 1 when one failed, 2 on a usage
 * or I/O setup error.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/fs.h>

#define SECTOR 512
#define ALIGN 4096
#define MAX_DEVICES 8
#define IO_CHUNK (1024 * 1024)          /* bytes per read while verifying */
#define WRITER_MAGIC UINT64_C (0x5233574b424c4b31)  /* "R3WKBLK1" */

struct device {
  const char *path;
  int fd;
  uint64_t size;                /* bytes used: --size or the whole device */
  uint64_t nblocks;             /* writer blocks */
  uint64_t *last_seq;           /* writer: latest seq per block, 0 = never */
};

struct block_header {           /* at the start of every writer block */
  uint64_t magic;
  uint64_t run_id;
  uint64_t device;
  uint64_t index;
  uint64_t seq;
  uint64_t csum;                /* FNV-1a of the whole block, this field 0 */
};

static struct device devices[MAX_DEVICES];
static size_t ndevices;
static uint64_t opt_size;               /* 0 = whole device */
static uint64_t opt_seed = 1;
static uint64_t opt_block = 4096;
static double opt_seconds;              /* 0 = until stopped */
static double opt_rate;                 /* MiB/s, 0 = unlimited */
static uint64_t opt_sync;               /* fdatasync every N writes */
static double opt_report = 1;
static const char *opt_control = "-";
static bool opt_quiet;

static volatile sig_atomic_t sig_verify, sig_stop;

static void say (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));
static void result (bool pass, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

static void
say (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  fputs ("r3map-guest: ", stdout);
  vprintf (fmt, ap);
  putchar ('\n');
  fflush (stdout);
  va_end (ap);
}

static void
result (bool pass, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  printf ("R3MAP-RESULT: %s ", pass ? "PASS" : "FAIL");
  vprintf (fmt, ap);
  putchar ('\n');
  fflush (stdout);
  va_end (ap);
}

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* splitmix64: a small, good, seekable generator. */
static uint64_t
mix (uint64_t x)
{
  x += UINT64_C (0x9e3779b97f4a7c15);
  x = (x ^ (x >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C (0x94d049bb133111eb);
  return x ^ (x >> 31);
}

static void
fill (unsigned char *p, size_t len, uint64_t state)
{
  size_t i;
  uint64_t v;

  for (i = 0; i + 8 <= len; i += 8) {
    state = mix (state);
    memcpy (p + i, &state, 8);
  }
  if (i < len) {
    v = mix (state);
    memcpy (p + i, &v, len - i);
  }
}

static uint64_t
fnv1a (const unsigned char *p, size_t len)
{
  uint64_t h = UINT64_C (0xcbf29ce484222325);
  size_t i;

  for (i = 0; i < len; ++i) {
    h ^= p[i];
    h *= UINT64_C (0x100000001b3);
  }
  return h;
}

static void *
aligned_alloc_or_die (size_t len)
{
  void *p;
  int r = posix_memalign (&p, ALIGN, len);

  if (r != 0) {
    fprintf (stderr, "r3map-guest-io: out of memory (%zu bytes)\n", len);
    exit (2);
  }
  memset (p, 0, len);
  return p;
}

/* Full-length pread/pwrite: a short transfer or an error is reported
 * with the offset and fails. */
static bool
io (bool write, struct device *d, void *buf, size_t len, uint64_t off)
{
  size_t done = 0;
  ssize_t r;

  while (done < len) {
    if (write)
      r = pwrite (d->fd, (char *) buf + done, len - done, off + done);
    else
      r = pread (d->fd, (char *) buf + done, len - done, off + done);
    if (r <= 0) {
      say ("%s: %s at offset %" PRIu64 ": %s", d->path,
           write ? "write" : "read", off + done,
           r == 0 ? "end of device" : strerror (errno));
      return false;
    }
    done += r;
  }
  return true;
}

static void
open_device (struct device *d, const char *path, bool writable)
{
  struct stat st;
  uint64_t size;
  int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;

  d->path = path;
  /* Bypass the guest's page cache: what is read back comes from the
   * disk.  tmpfs (an image on the host) refuses O_DIRECT. */
  d->fd = open (path, flags | O_DIRECT);
  if (d->fd == -1 && errno == EINVAL)
    d->fd = open (path, flags);
  if (d->fd == -1) {
    fprintf (stderr, "r3map-guest-io: %s: %s\n", path, strerror (errno));
    exit (2);
  }
  if (fstat (d->fd, &st) == -1) {
    fprintf (stderr, "r3map-guest-io: fstat: %s: %s\n", path, strerror (errno));
    exit (2);
  }
  if (S_ISBLK (st.st_mode)) {
    if (ioctl (d->fd, BLKGETSIZE64, &size) == -1) {
      fprintf (stderr, "r3map-guest-io: BLKGETSIZE64: %s: %s\n",
               path, strerror (errno));
      exit (2);
    }
  }
  else
    size = st.st_size;
  if (opt_size) {
    if (opt_size > size) {
      fprintf (stderr, "r3map-guest-io: %s: --size %" PRIu64
               " is larger than the device (%" PRIu64 " bytes)\n",
               path, opt_size, size);
      exit (2);
    }
    size = opt_size;
  }
  d->size = size - size % ALIGN;
  if (d->size == 0) {
    fprintf (stderr, "r3map-guest-io: %s: empty device\n", path);
    exit (2);
  }
}

/* --- The pattern ------------------------------------------------------ */

static void
pattern_sector (unsigned char *p, uint64_t off)
{
  memcpy (p, &off, 8);
  memcpy (p + 8, &opt_seed, 8);
  fill (p + 16, SECTOR - 16, mix (off ^ mix (opt_seed)));
}

static bool
pattern_write (void)
{
  unsigned char *buf = aligned_alloc_or_die (IO_CHUNK);
  double t = now ();
  size_t i;
  uint64_t off, len, s, total = 0;

  for (i = 0; i < ndevices; ++i) {
    struct device *d = &devices[i];

    for (off = 0; off < d->size; off += len) {
      len = d->size - off < IO_CHUNK ? d->size - off : IO_CHUNK;
      for (s = 0; s < len; s += SECTOR)
        pattern_sector (buf + s, off + s);
      if (!io (true, d, buf, len, off)) {
        result (false, "pattern-write %s: write error at %" PRIu64, d->path, off);
        free (buf);
        return false;
      }
    }
    if (fsync (d->fd) == -1) {
      result (false, "pattern-write %s: fsync: %s", d->path, strerror (errno));
      free (buf);
      return false;
    }
    total += d->size;
  }
  free (buf);
  t = now () - t;
  result (true, "pattern-write %" PRIu64 " bytes seed %" PRIu64 " in %.2f s",
          total, opt_seed, t);
  return true;
}

static bool
pattern_verify (void)
{
  unsigned char *buf = aligned_alloc_or_die (IO_CHUNK);
  unsigned char want[SECTOR];
  double t = now ();
  size_t i;
  uint64_t off, len, s, total = 0, bad = 0, first_bad = 0;
  const char *first_path = NULL;

  for (i = 0; i < ndevices; ++i) {
    struct device *d = &devices[i];

    for (off = 0; off < d->size; off += len) {
      len = d->size - off < IO_CHUNK ? d->size - off : IO_CHUNK;
      if (!io (false, d, buf, len, off)) {
        result (false, "pattern-verify %s: read error at %" PRIu64, d->path, off);
        free (buf);
        return false;
      }
      for (s = 0; s < len; s += SECTOR) {
        pattern_sector (want, off + s);
        if (memcmp (want, buf + s, SECTOR) != 0) {
          if (bad++ == 0) {
            first_bad = off + s;
            first_path = d->path;
          }
        }
      }
    }
    total += d->size;
  }
  free (buf);
  t = now () - t;
  if (bad) {
    result (false, "pattern-verify %" PRIu64 " bad sectors of %" PRIu64
            ", the first at byte %" PRIu64 " of %s (seed %" PRIu64 ")",
            bad, total / SECTOR, first_bad, first_path, opt_seed);
    return false;
  }
  result (true, "pattern-verify %" PRIu64 " bytes seed %" PRIu64 " in %.2f s",
          total, opt_seed, t);
  return true;
}

/* --- The writer ------------------------------------------------------- */

static uint64_t run_id;
static uint64_t seq;
static uint64_t bytes_written, writes;
/* The longest write (pwrite and any fdatasync after it), in seconds,
 * since the last progress line and since the last "latency" command,
 * and the sequence number of the latter. */
static double lat_report, lat_asked;
static uint64_t lat_asked_seq;

static void
on_signal (int sig)
{
  if (sig == SIGUSR1)
    sig_verify = 1;
  else
    sig_stop = 1;
}

static void
make_block (unsigned char *buf, size_t dev, uint64_t index, uint64_t s)
{
  struct block_header h = {
    .magic = WRITER_MAGIC, .run_id = run_id, .device = dev,
    .index = index, .seq = s, .csum = 0,
  };

  memcpy (buf, &h, sizeof h);
  fill (buf + sizeof h, opt_block - sizeof h, mix (run_id ^ s));
  h.csum = fnv1a (buf, opt_block);
  memcpy (buf, &h, sizeof h);
}

/* Why a block read back is not what was last written there, or NULL. */
static const char *
check_block (unsigned char *p, size_t dev, uint64_t index, uint64_t want_seq)
{
  struct block_header h;
  uint64_t csum;

  memcpy (&h, p, sizeof h);
  if (want_seq == 0) {
    if (h.magic == WRITER_MAGIC && h.run_id == run_id)
      return "never written, yet holds a block of this run";
    return NULL;
  }
  if (h.magic != WRITER_MAGIC)
    return "no block header";
  if (h.run_id != run_id)
    return "a block of another run";
  if (h.device != dev || h.index != index)
    return "a block meant for another place";
  if (h.seq < want_seq)
    return "an older write (a write was lost)";
  if (h.seq > want_seq)
    return "a newer write than any acknowledged";
  memset (p + offsetof (struct block_header, csum), 0, 8);
  csum = fnv1a (p, opt_block);
  memcpy (p + offsetof (struct block_header, csum), &h.csum, 8);
  if (csum != h.csum)
    return "bad checksum (the payload is damaged)";
  return NULL;
}

static bool
writer_verify (const char *what)
{
  unsigned char *buf = aligned_alloc_or_die (IO_CHUNK);
  double t = now ();
  uint64_t off, len, b, index, checked = 0, written = 0, bad = 0;
  const char *why;
  size_t i;

  for (i = 0; i < ndevices; ++i) {
    struct device *d = &devices[i];

    for (off = 0; off < d->nblocks * opt_block; off += len) {
      len = d->nblocks * opt_block - off;
      if (len > IO_CHUNK)
        len = IO_CHUNK;
      if (!io (false, d, buf, len, off)) {
        result (false, "%s: read error on %s at %" PRIu64, what, d->path, off);
        free (buf);
        return false;
      }
      for (b = 0; b < len; b += opt_block) {
        index = (off + b) / opt_block;
        checked++;
        written += d->last_seq[index] != 0;
        why = check_block (buf + b, i, index, d->last_seq[index]);
        if (why) {
          if (bad < 10)
            say ("%s block %" PRIu64 " (last seq %" PRIu64 "): %s",
                 d->path, index, d->last_seq[index], why);
          bad++;
        }
      }
    }
  }
  free (buf);
  t = now () - t;
  if (bad) {
    result (false, "%s: %" PRIu64 " of %" PRIu64 " blocks wrong (%" PRIu64
            " ever written, up to seq %" PRIu64 ")",
            what, bad, checked, written, seq);
    return false;
  }
  result (true, "%s: %" PRIu64 " blocks ever written hold their latest "
          "write (seq 1-%" PRIu64 "), %" PRIu64 " blocks checked in %.2f s",
          what, written, seq, checked, t);
  return true;
}

/* Read one command line from the control input, if one is waiting. */
static const char *
control_poll (int fd)
{
  static char line[128];
  static size_t have;
  struct pollfd pfd = { .fd = fd, .events = POLLIN };
  char c;
  ssize_t r;

  if (fd < 0)
    return NULL;
  while (poll (&pfd, 1, 0) == 1 && (pfd.revents & POLLIN)) {
    r = read (fd, &c, 1);
    if (r <= 0)
      return NULL;
    if (c == '\n' || c == '\r') {
      if (have == 0)
        continue;
      line[have] = '\0';
      have = 0;
      return line;
    }
    if (have < sizeof line - 1)
      line[have++] = c;
  }
  return NULL;
}

static int
control_open (void)
{
  struct termios t;
  int fd;

  if (strcmp (opt_control, "none") == 0)
    return -1;
  if (strcmp (opt_control, "-") == 0)
    fd = STDIN_FILENO;
  else {
    fd = open (opt_control, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd == -1) {
      fprintf (stderr, "r3map-guest-io: %s: %s\n", opt_control, strerror (errno));
      exit (2);
    }
  }
  /* On the serial console: no echo of the commands into the log. */
  if (isatty (fd) && tcgetattr (fd, &t) == 0) {
    t.c_lflag &= ~(ECHO | ECHONL);
    tcsetattr (fd, TCSANOW, &t);
  }
  return fd;
}

static bool
writer (void)
{
  unsigned char *buf = aligned_alloc_or_die (opt_block);
  double start, last_report, next_write;
  uint64_t rnd, index, total_blocks = 0, last_bytes = 0;
  bool paused = false, pass = true, stop = false;
  int control = control_open ();
  const char *cmd;
  struct sigaction sa;
  struct timespec ts;
  size_t i, dev = 0;
  unsigned verifications = 0;
  char what[64];

  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction (SIGUSR1, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);

  clock_gettime (CLOCK_REALTIME, &ts);
  run_id = mix (ts.tv_sec ^ mix (ts.tv_nsec ^ mix (getpid () ^ opt_seed)));
  rnd = run_id;
  for (i = 0; i < ndevices; ++i) {
    devices[i].nblocks = devices[i].size / opt_block;
    devices[i].last_seq = calloc (devices[i].nblocks, sizeof (uint64_t));
    if (devices[i].last_seq == NULL) {
      fprintf (stderr, "r3map-guest-io: out of memory\n");
      exit (2);
    }
    total_blocks += devices[i].nblocks;
  }
  say ("writer: run %016" PRIx64 ", %zu device(s), %" PRIu64 " blocks of %"
       PRIu64 " bytes, rate %s%.1f MiB/s, %s", run_id, ndevices, total_blocks,
       opt_block, opt_rate ? "" : "unlimited ", opt_rate,
       opt_seconds ? "timed" : "until stopped");

  start = last_report = next_write = now ();
  while (!stop) {
    double t = now ();

    if (opt_seconds && t - start >= opt_seconds)
      break;
    if (sig_stop)
      break;
    cmd = control_poll (control);
    if (sig_verify) {
      sig_verify = 0;
      cmd = "verify";
    }
    if (cmd) {
      if (strcmp (cmd, "verify") == 0) {
        snprintf (what, sizeof what, "writer-verify %u", ++verifications);
        pass &= writer_verify (what);
      }
      else if (strcmp (cmd, "pause") == 0) {
        paused = true;
        say ("writer: paused at seq %" PRIu64, seq);
      }
      else if (strcmp (cmd, "resume") == 0) {
        paused = false;
        next_write = now ();
        say ("writer: resumed at seq %" PRIu64, seq);
      }
      else if (strcmp (cmd, "latency") == 0) {
        say ("writer: longest write %.3f ms (seq %" PRIu64 ") of %" PRIu64
             " writes up to seq %" PRIu64, lat_asked * 1000, lat_asked_seq,
             writes, seq);
        lat_asked = 0;
        lat_asked_seq = 0;
      }
      else if (strcmp (cmd, "stop") == 0)
        stop = true;
      else
        say ("writer: unknown command '%s' (verify, pause, resume, latency, "
             "stop)", cmd);
      continue;
    }

    if (t - last_report >= opt_report && !opt_quiet) {
      say ("writer: seq %" PRIu64 " written %.1f MiB at %.1f MiB/s, "
           "longest write %.1f ms%s",
           seq, bytes_written / 1048576.0,
           (bytes_written - last_bytes) / 1048576.0 / (t - last_report),
           lat_report * 1000, paused ? " (paused)" : "");
      lat_report = 0;
      last_report = t;
      last_bytes = bytes_written;
    }

    if (paused || (opt_rate && t < next_write)) {
      ts.tv_sec = 0;
      ts.tv_nsec = paused ? 10000000 : 1000000;
      nanosleep (&ts, NULL);
      continue;
    }

    /* One block at a random place, the devices in turn. */
    rnd = mix (rnd);
    dev = (dev + 1) % ndevices;
    index = rnd % devices[dev].nblocks;
    seq++;
    make_block (buf, dev, index, seq);
    t = now ();
    if (!io (true, &devices[dev], buf, opt_block, index * opt_block)) {
      result (false, "writer: write of seq %" PRIu64 " failed", seq);
      free (buf);
      return false;
    }
    devices[dev].last_seq[index] = seq;
    bytes_written += opt_block;
    writes++;
    if (opt_sync && writes % opt_sync == 0 && fdatasync (devices[dev].fd) == -1) {
      result (false, "writer: fdatasync: %s", strerror (errno));
      free (buf);
      return false;
    }
    t = now () - t;
    if (t > lat_report)
      lat_report = t;
    if (t > lat_asked) {
      lat_asked = t;
      lat_asked_seq = seq;
    }
    if (opt_rate)
      next_write += opt_block / (opt_rate * 1048576.0);
  }
  free (buf);

  say ("writer: stopped at seq %" PRIu64 " after %.1f s, %.1f MiB written",
       seq, now () - start, bytes_written / 1048576.0);
  for (i = 0; i < ndevices; ++i)
    if (fsync (devices[i].fd) == -1) {
      result (false, "writer: fsync %s: %s", devices[i].path, strerror (errno));
      return false;
    }
  pass &= writer_verify ("writer-final");
  return pass;
}

/* --- Main ------------------------------------------------------------- */

static uint64_t
parse_size (const char *opt, const char *s)
{
  char *end;
  unsigned long long v;
  uint64_t mult = 1;

  errno = 0;
  v = strtoull (s, &end, 0);
  if (errno || end == s)
    goto bad;
  switch (*end) {
  case 'k': case 'K': mult = 1024; end++; break;
  case 'm': case 'M': mult = 1024 * 1024; end++; break;
  case 'g': case 'G': mult = 1024 * 1024 * 1024; end++; break;
  }
  if (*end != '\0' || v > UINT64_MAX / mult)
    goto bad;
  return v * mult;
 bad:
  fprintf (stderr, "r3map-guest-io: %s: not a size: '%s'\n", opt, s);
  exit (2);
}

static double
parse_number (const char *opt, const char *s)
{
  char *end;
  double v;

  errno = 0;
  v = strtod (s, &end);
  if (errno || end == s || *end != '\0' || v < 0) {
    fprintf (stderr, "r3map-guest-io: %s: not a number >= 0: '%s'\n", opt, s);
    exit (2);
  }
  return v;
}

static void
usage (int status)
{
  fprintf (status ? stderr : stdout,
"usage: r3map-guest-io pattern-write|pattern-verify|pattern|writer [OPTIONS] DEVICE...\n"
"  --size BYTES      use only the first BYTES of each device (K, M, G)\n"
"  --seed N          pattern seed (default 1)\n"
"  --block BYTES     writer block size (default 4096)\n"
"  --seconds S       writer: stop after S seconds (default: when told)\n"
"  --rate MIBS       writer: at most MIBS MiB/s (default unlimited)\n"
"  --sync N          writer: fdatasync every N writes (default never)\n"
"  --report S        writer: progress every S seconds (default 1)\n"
"  --control FILE    writer: commands from FILE, '-' stdin, 'none'\n"
"  --quiet           writer: no progress lines\n");
  exit (status);
}

int
main (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "size", required_argument, NULL, 's' },
    { "seed", required_argument, NULL, 'S' },
    { "block", required_argument, NULL, 'b' },
    { "seconds", required_argument, NULL, 't' },
    { "rate", required_argument, NULL, 'r' },
    { "sync", required_argument, NULL, 'y' },
    { "report", required_argument, NULL, 'R' },
    { "control", required_argument, NULL, 'c' },
    { "quiet", no_argument, NULL, 'q' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *mode;
  bool pass = false, writable;
  int c;

  while ((c = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
    switch (c) {
    case 's': opt_size = parse_size ("--size", optarg); break;
    case 'S': opt_seed = parse_size ("--seed", optarg); break;
    case 'b': opt_block = parse_size ("--block", optarg); break;
    case 't': opt_seconds = parse_number ("--seconds", optarg); break;
    case 'r': opt_rate = parse_number ("--rate", optarg); break;
    case 'y': opt_sync = parse_size ("--sync", optarg); break;
    case 'R': opt_report = parse_number ("--report", optarg); break;
    case 'c': opt_control = optarg; break;
    case 'q': opt_quiet = true; break;
    case 'h': usage (0); break;
    default: usage (2);
    }
  }
  if (argc - optind < 2)
    usage (2);
  mode = argv[optind++];
  if (opt_block < ALIGN || opt_block > IO_CHUNK ||
      (opt_block & (opt_block - 1)) != 0) {
    fprintf (stderr, "r3map-guest-io: --block: a power of two from %d to %d\n",
             ALIGN, IO_CHUNK);
    exit (2);
  }
  if (argc - optind > MAX_DEVICES) {
    fprintf (stderr, "r3map-guest-io: at most %d devices\n", MAX_DEVICES);
    exit (2);
  }
  writable = strcmp (mode, "pattern-verify") != 0;
  for (; optind < argc; optind++)
    open_device (&devices[ndevices++], argv[optind], writable);

  if (strcmp (mode, "pattern-write") == 0)
    pass = pattern_write ();
  else if (strcmp (mode, "pattern-verify") == 0)
    pass = pattern_verify ();
  else if (strcmp (mode, "pattern") == 0)
    pass = pattern_write () && pattern_verify ();
  else if (strcmp (mode, "writer") == 0) {
    size_t i;

    for (i = 0; i < ndevices; ++i)
      if (devices[i].size < opt_block) {
        fprintf (stderr, "r3map-guest-io: %s: smaller than one block\n",
                 devices[i].path);
        exit (2);
      }
    pass = writer ();
  }
  else {
    fprintf (stderr, "r3map-guest-io: unknown mode '%s'\n", mode);
    usage (2);
  }
  return pass ? 0 : 1;
}
