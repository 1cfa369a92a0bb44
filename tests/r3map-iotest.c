/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0. */

/* r3map-iotest: a model-checking random I/O tester for an NBD export.
 *
 * Usage: r3map-iotest [OPTIONS] URI
 *
 *   --ops N            total number of random operations (default 10000),
 *                      shared by all connections
 *   --connections N    connections to open, 1..64 (default 4); each is its
 *                      own libnbd handle driven by its own thread
 *   --seed S           seed for the random choices (default: time based);
 *                      always printed so that a failing run can be repeated
 *   --max-size BYTES   largest single request (default 1M, at most 32M);
 *                      K, M and G suffixes are accepted
 *   --trim-reads-zero  check that trimmed ranges read back as zeroes
 *   --model FILE       at the end, write the model's disk image to FILE
 *   --initial FILE     FILE holds the export's expected initial contents
 *   --verify-only      compare the export with --initial FILE, then exit
 *   --quiet            print only the seed, failures and the summary
 *
 * Exit status: 0 if every check passed, 1 on any mismatch or NBD error,
 * 2 on a usage error.
 *
 * The model.  We keep a copy of what the export must contain: a byte
 * image as large as the export plus one "defined" bit per byte.  Bytes
 * become defined when the initial contents are loaded (from --initial, or
 * by reading the whole export first and taking it as truth), and when
 * a pwrite or zero succeeds.  NBD says that trimmed data reads back as
 * unspecified, so a trim makes its bytes undefined and they are not
 * compared again until they are rewritten; --trim-reads-zero is for
 * servers that promise more.  A request that fails also makes its range
 * undefined, because the server may have applied part of it.  Every read
 * is compared with the defined bytes of the model, and so is every
 * block status extent that claims to read as zeroes.  At the end the
 * whole export is read back and compared once more.
 *
 * The range lock.  NBD does not order concurrent requests, not even on
 * one connection, so two overlapping requests in flight at once leave
 * the result undefined and the model could not say what to expect.
 * Before issuing a request a thread therefore takes a lock on its byte
 * range, waiting while an overlapping range is in flight, and keeps it
 * until the model has been updated or checked.  Only overlapping ranges
 * are serialized: two unaligned writes 100 bytes apart in one 64 KiB
 * chunk do run at the same time, and that is the point, because this is
 * where a chunked backend's read-modify-write code breaks.
 *
 * Multi-conn.  A write acknowledged on one connection is expected to be
 * visible to a later read on any connection.  That holds for a server
 * whose connections share one cache, which is what NBD_FLAG_CAN_MULTI_CONN
 * promises; with more than one connection to a server that does not
 * advertise it, a warning is printed and the checks are made anyway.
 *
 * Reproducibility.  Each thread draws its operations, ranges and write
 * data from its own xorshift64* generator, seeded from the global seed
 * and the thread's index, so what each thread does is fixed by the seed.
 * How the threads' operations interleave (and so which thread gets to
 * run how many of them) depends on scheduling, so a rerun with the same
 * seed is close but not identical; --connections 1 repeats exactly.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#define PROG "r3map-iotest"

#define KiB (UINT64_C (1) << 10)
#define MiB (UINT64_C (1) << 20)
#define GiB (UINT64_C (1) << 30)

#define MAX_EXPORT_SIZE GiB     /* the model lives in memory */
#define MAX_REQUEST     (32 * MiB)
#define MAX_CONNECTIONS 64
#define MAX_REPORTS     10      /* failures printed before we stop */
#define SWEEP_PIECE     (4 * MiB)
#define CHUNK           (64 * KiB)

#define EXIT_USAGE 2

#define MIN(a, b) ((a) < (b) ? (a) : (b))

static struct {
  uint64_t ops;
  unsigned connections;
  uint64_t seed;
  uint64_t max_size;
  bool trim_reads_zero;
  bool verify_only;
  bool quiet;
  const char *model_file;
  const char *initial_file;
  const char *uri;
} cfg = { .ops = 10000, .connections = 4, .max_size = MiB };

/* What the server offers, as seen on the first connection. */
static struct {
  uint64_t size;
  uint64_t align;             /* minimum block size, 1 if not advertised */
  uint64_t max_request;       /* largest request we send */
  uint64_t sweep_piece;       /* request size for whole-export reads */
  bool can_write, can_flush, can_fua, can_zero, can_trim, can_extents;
  bool can_multi_conn;
} ex;

enum op_type {
  OP_PREAD, OP_PWRITE, OP_ZERO, OP_TRIM, OP_FLUSH, OP_BLOCK_STATUS,
  OP_NR_RANDOM,
  /* Not chosen at random: whole-export reads, and the goodbye. */
  OP_LOAD = OP_NR_RANDOM, OP_VERIFY, OP_SHUTDOWN,
};

static const char *const op_name[] = {
  [OP_PREAD] = "pread", [OP_PWRITE] = "pwrite", [OP_ZERO] = "zero",
  [OP_TRIM] = "trim", [OP_FLUSH] = "flush",
  [OP_BLOCK_STATUS] = "block_status",
  [OP_LOAD] = "pread", [OP_VERIFY] = "pread", [OP_SHUTDOWN] = "shutdown",
};

/* Relative frequency of each operation; unsupported ones are set to 0. */
static unsigned op_weight[OP_NR_RANDOM] = {
  [OP_PREAD] = 40, [OP_PWRITE] = 30, [OP_ZERO] = 10, [OP_TRIM] = 7,
  [OP_FLUSH] = 5, [OP_BLOCK_STATUS] = 8,
};
static unsigned op_weight_total;

/* One request, as described in failure messages. */
struct op {
  enum op_type type;
  uint64_t num;               /* index in the global sequence */
  unsigned conn;
  uint64_t off, len;
  uint32_t flags;
};

struct stats {
  uint64_t ops, reads, writes, zeros, trims, flushes, extents;
  uint64_t bytes_read, bytes_written;
};

struct worker {
  unsigned index;
  pthread_t thread;
  struct nbd_handle *nbd;
  uint64_t rng;
  uint8_t *buf;               /* ex.max_request bytes */
  bool lost;                  /* the connection no longer works */
  struct stats stats;
};

static struct worker *workers;
static uint64_t bytes_verified;

static _Atomic uint64_t next_op;
static atomic_bool stop;
static _Atomic uint64_t nr_reports, nr_mismatches, nr_errors;

/*----------------------------------------------------------------------
 * Random numbers.
 */

/* splitmix64: turns the seed and a thread index into well mixed,
 * independent starting states (xorshift64* must not start at 0).
 */
static uint64_t
splitmix64 (uint64_t x)
{
  x += UINT64_C (0x9e3779b97f4a7c15);
  x = (x ^ (x >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C (0x94d049bb133111eb);
  return x ^ (x >> 31);
}

static uint64_t
rng_seed (uint64_t seed, unsigned index)
{
  uint64_t s = splitmix64 (seed ^ splitmix64 (index));
  return s != 0 ? s : UINT64_C (0x9e3779b97f4a7c15);
}

/* xorshift64*: fast, and plenty good enough for picking test cases. */
static uint64_t
rng_next (uint64_t *s)
{
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * UINT64_C (0x2545f4914f6cdd1d);
}

/* A number in [0, n), n > 0.  The modulo bias is irrelevant here. */
static uint64_t
rng_below (uint64_t *s, uint64_t n)
{
  return rng_next (s) % n;
}

static void
fill_random (uint64_t *s, uint8_t *buf, uint64_t len)
{
  uint64_t i, r;

  for (i = 0; i + 8 <= len; i += 8) {
    r = rng_next (s);
    memcpy (&buf[i], &r, 8);
  }
  if (i < len) {
    r = rng_next (s);
    memcpy (&buf[i], &r, len - i);
  }
}

/*----------------------------------------------------------------------
 * Failure reporting.
 */

static const char *
errno_name (int err, char *buf, size_t size)
{
  switch (err) {
#define E(e) case e: return #e
  E (EPERM); E (ENOENT); E (EINTR); E (EIO); E (EBADF); E (EAGAIN);
  E (ENOMEM); E (EACCES); E (EFAULT); E (EBUSY); E (EINVAL); E (EFBIG);
  E (ENOSPC); E (EROFS); E (EPIPE); E (ERANGE); E (ENOTSUP); E (EPROTO);
  E (EBADMSG); E (EOVERFLOW); E (ENOTCONN); E (ESHUTDOWN); E (ETIMEDOUT);
  E (ECONNREFUSED); E (ECONNRESET); E (ECANCELED); E (EDQUOT);
#undef E
  default:
    snprintf (buf, size, "errno %d", err);
    return buf;
  }
}

static void
describe_op (const struct op *op, char *buf, size_t size)
{
  char num[24];

  if (op->type == OP_LOAD)
    snprintf (num, sizeof num, "initial");
  else if (op->type == OP_VERIFY || op->type == OP_SHUTDOWN)
    snprintf (num, sizeof num, "final");
  else
    snprintf (num, sizeof num, "%" PRIu64, op->num);

  if (op->type == OP_FLUSH || op->type == OP_SHUTDOWN)
    snprintf (buf, size, "op=%s conn=%u %s", num, op->conn, op_name[op->type]);
  else
    snprintf (buf, size, "op=%s conn=%u %s off=%" PRIu64 " len=%" PRIu64 "%s%s",
              num, op->conn, op_name[op->type], op->off, op->len,
              op->flags & LIBNBD_CMD_FLAG_FUA ? " fua" : "",
              op->flags & LIBNBD_CMD_FLAG_NO_HOLE ? " no_hole" : "");
}

/* Count a failure in *COUNTER and print it, unless MAX_REPORTS have been
 * printed already.  Reaching MAX_REPORTS stops the run: after that many
 * the output would only bury the first, most useful, messages.
 */
static void report (_Atomic uint64_t *counter, const struct op *op,
                    const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

static void
report (_Atomic uint64_t *counter, const struct op *op, const char *fmt, ...)
{
  char what[160], msg[256];
  va_list args;
  uint64_t n;

  atomic_fetch_add (counter, 1);
  n = atomic_fetch_add (&nr_reports, 1) + 1;
  if (n >= MAX_REPORTS)
    atomic_store (&stop, true);
  if (n > MAX_REPORTS)
    return;

  va_start (args, fmt);
  vsnprintf (msg, sizeof msg, fmt, args);
  va_end (args);
  describe_op (op, what, sizeof what);
  /* One fprintf per line, so that lines from threads do not mix. */
  fprintf (stderr, PROG ": seed=%" PRIu64 " %s: %s\n", cfg.seed, what, msg);
  if (n == MAX_REPORTS)
    fprintf (stderr, PROG ": stopping after %d failures\n", MAX_REPORTS);
}

/* An NBD command failed.  Always returns -1. */
static int
report_nbd_error (const struct op *op)
{
  const char *msg = nbd_get_error ();
  char buf[32];

  report (&nr_errors, op, "ERROR: %s (%s)", msg ? msg : "unknown error",
          errno_name (nbd_get_errno (), buf, sizeof buf));
  return -1;
}

/*----------------------------------------------------------------------
 * The model: the export's expected contents, plus a bitmap saying which
 * bytes are known.
 *
 * Only the thread holding the range lock for a byte touches that byte's
 * data and bit, and the range lock's mutex orders successive holders, so
 * relaxed atomics suffice.  They are needed at all only because two
 * threads working on neighbouring ranges may share a bitmap word.
 */

static struct {
  uint64_t size;
  uint8_t *data;
  _Atomic uint64_t *defined;
} model;

static int
model_init (uint64_t size)
{
  model.size = size;
  model.data = calloc (size, 1);
  /* All bits zero is a valid _Atomic uint64_t: lock-free atomics have
   * the representation of the plain type.
   */
  model.defined = calloc ((size + 63) / 64 + 1, sizeof *model.defined);
  if (model.data == NULL || model.defined == NULL) {
    fprintf (stderr, PROG ": cannot allocate a model of %" PRIu64 " bytes\n",
             size);
    return -1;
  }
  return 0;
}

static void
model_free (void)
{
  free (model.data);
  free (model.defined);
}

static bool
model_is_defined (uint64_t pos)
{
  uint64_t w = atomic_load_explicit (&model.defined[pos / 64],
                                     memory_order_relaxed);
  return (w >> (pos % 64)) & 1;
}

static void
model_set_defined (uint64_t off, uint64_t len, bool defined)
{
  while (len > 0) {
    uint64_t bit = off % 64;
    uint64_t n = MIN (len, 64 - bit);
    uint64_t mask = n == 64 ? UINT64_MAX : ((UINT64_C (1) << n) - 1) << bit;
    _Atomic uint64_t *w = &model.defined[off / 64];

    if (defined)
      atomic_fetch_or_explicit (w, mask, memory_order_relaxed);
    else
      atomic_fetch_and_explicit (w, ~mask, memory_order_relaxed);
    off += n;
    len -= n;
  }
}

static void
model_store (uint64_t off, const uint8_t *buf, uint64_t len)
{
  memcpy (&model.data[off], buf, len);
  model_set_defined (off, len, true);
}

static void
model_store_zero (uint64_t off, uint64_t len)
{
  memset (&model.data[off], 0, len);
  model_set_defined (off, len, true);
}

static void
model_forget (uint64_t off, uint64_t len)
{
  model_set_defined (off, len, false);
}

/* Length of the run of bytes starting at POS, at most MAXLEN long, that
 * are all defined or all undefined (which one goes to *DEFINED).  Whole
 * bitmap words are skipped at once; they lie within [POS, POS+MAXLEN),
 * which the caller holds, so no other thread is changing them.
 */
static uint64_t
defined_run (uint64_t pos, uint64_t maxlen, bool *defined)
{
  const bool d = model_is_defined (pos);
  const uint64_t fill = d ? UINT64_MAX : 0;
  uint64_t n = 0;

  while (n < maxlen) {
    uint64_t p = pos + n;

    if (p % 64 == 0 && maxlen - n >= 64 &&
        atomic_load_explicit (&model.defined[p / 64],
                              memory_order_relaxed) == fill) {
      n += 64;
      continue;
    }
    if (model_is_defined (p) != d)
      break;
    n++;
  }
  *defined = d;
  return n;
}

/* GOT == NULL stands for a buffer of zeroes. */
static uint8_t
got_byte (const uint8_t *got, uint64_t i)
{
  return got ? got[i] : 0;
}

static bool
is_zero (const uint8_t *buf, uint64_t len)
{
  return len == 0 || (buf[0] == 0 && memcmp (buf, buf + 1, len - 1) == 0);
}

/* Report each region of differing bytes in the defined range [OFF,
 * OFF+LEN).  Random data matches by chance one byte in 256, so a region
 * only ends after MISMATCH_GAP matching bytes; otherwise one bad read
 * would use up all the reports.  Returns false once the run is stopping.
 */
#define MISMATCH_GAP 64

static bool
report_regions (const struct op *op, uint64_t off, uint64_t len,
                const uint8_t *got, const char *why)
{
  uint64_t i = 0, start, last, differ;

  while (i < len) {
    if (model.data[off + i] == got_byte (got, i)) {
      i++;
      continue;
    }
    start = last = i;
    differ = 0;
    for (; i < len && i - last <= MISMATCH_GAP; i++) {
      if (model.data[off + i] != got_byte (got, i)) {
        last = i;
        differ++;
      }
    }
    report (&nr_mismatches, op,
            "MISMATCH at offset %" PRIu64 ": expected 0x%02x got 0x%02x "
            "(%" PRIu64 " of %" PRIu64 " bytes differ%s)",
            off + start, model.data[off + start], got_byte (got, start),
            differ, last - start + 1, why);
    if (atomic_load (&stop))
      return false;
  }
  return true;
}

/* Compare the defined bytes of [OFF, OFF+LEN) with GOT, which is what the
 * server returned (or, if NULL, zeroes that it claimed).  WHY is appended
 * to mismatch messages.
 */
static void
model_compare (const struct op *op, uint64_t off, uint64_t len,
               const uint8_t *got, const char *why)
{
  uint64_t i = 0, run;
  bool defined;

  while (i < len) {
    const uint8_t *g = got ? got + i : NULL;

    run = defined_run (off + i, len - i, &defined);
    if (defined &&
        !(g ? memcmp (&model.data[off + i], g, run) == 0
            : is_zero (&model.data[off + i], run)) &&
        !report_regions (op, off + i, run, g, why))
      return;
    i += run;
  }
}

/*----------------------------------------------------------------------
 * The range lock.  Each worker has at most one request in flight, so a
 * fixed slot per worker is all the bookkeeping needed.
 */

struct range {
  uint64_t off, len;
  bool busy;
};

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct range *slots;
  unsigned nr_slots;
} ranges = {
  .lock = PTHREAD_MUTEX_INITIALIZER,
  .cond = PTHREAD_COND_INITIALIZER,
};

static bool
overlaps_in_flight (unsigned self, uint64_t off, uint64_t len)
{
  unsigned i;

  for (i = 0; i < ranges.nr_slots; i++) {
    const struct range *r = &ranges.slots[i];

    if (i != self && r->busy && off < r->off + r->len && r->off < off + len)
      return true;
  }
  return false;
}

static void
range_acquire (unsigned self, uint64_t off, uint64_t len)
{
  pthread_mutex_lock (&ranges.lock);
  while (overlaps_in_flight (self, off, len))
    pthread_cond_wait (&ranges.cond, &ranges.lock);
  ranges.slots[self] = (struct range) { .off = off, .len = len, .busy = true };
  pthread_mutex_unlock (&ranges.lock);
}

static void
range_release (unsigned self)
{
  pthread_mutex_lock (&ranges.lock);
  ranges.slots[self].busy = false;
  pthread_cond_broadcast (&ranges.cond);
  pthread_mutex_unlock (&ranges.lock);
}

/*----------------------------------------------------------------------
 * Choosing operations.
 */

static uint64_t
align_down (uint64_t x, uint64_t a)
{
  return x - x % a;
}

static uint64_t
align_up (uint64_t x, uint64_t a)
{
  return align_down (x + a - 1, a);
}

static enum op_type
choose_op (uint64_t *rng)
{
  uint64_t r = rng_below (rng, op_weight_total);
  enum op_type t;

  for (t = 0; t < OP_NR_RANDOM - 1; t++) {
    if (r < op_weight[t])
      break;
    r -= op_weight[t];
  }
  return t;
}

static uint32_t
choose_flags (uint64_t *rng, enum op_type type)
{
  uint32_t flags = 0;

  if ((type == OP_PWRITE || type == OP_ZERO || type == OP_TRIM) &&
      ex.can_fua && rng_below (rng, 4) == 0)
    flags |= LIBNBD_CMD_FLAG_FUA;
  if (type == OP_ZERO && rng_below (rng, 2) == 0)
    flags |= LIBNBD_CMD_FLAG_NO_HOLE;
  return flags;
}

/* Around a boundary, a multiple of UNIT inside the export: starts up to
 * 64 KiB before it and may run past the next one too.
 */
static void
choose_straddle (uint64_t *rng, uint64_t unit, uint64_t *off, uint64_t *len)
{
  const uint64_t nr_boundaries = (ex.size - 1) / unit;
  const uint64_t span = MIN (unit, CHUNK);
  uint64_t boundary, head;

  if (nr_boundaries == 0) {
    *off = rng_below (rng, ex.size);
    *len = 1 + rng_below (rng, 4096);
    return;
  }
  boundary = unit * (1 + rng_below (rng, nr_boundaries));
  head = 1 + rng_below (rng, span);
  *off = boundary - head;
  *len = head + 1 + rng_below (rng, 2 * span);
}

/* A mix of shapes, so that every path of a chunked backend is taken:
 * unaligned partial blocks, sector, page and chunk aligned requests,
 * requests crossing a chunk (or other power of two) boundary, large
 * ones, and ones touching the first or last byte of the export.
 */
static void
choose_range (uint64_t *rng, uint64_t *off, uint64_t *len)
{
  switch (rng_below (rng, 10)) {
  case 0: case 1: case 2:       /* small, any byte offset */
    *len = 1 + rng_below (rng, 4096);
    *off = rng_below (rng, ex.size);
    break;
  case 3:                       /* 512 byte sectors */
    *len = 512 * (1 + rng_below (rng, 16));
    *off = align_down (rng_below (rng, ex.size), 512);
    break;
  case 4:                       /* 4 KiB pages */
    *len = 4096 * (1 + rng_below (rng, 16));
    *off = align_down (rng_below (rng, ex.size), 4096);
    break;
  case 5:                       /* whole 64 KiB chunks */
    *len = CHUNK * (1 + rng_below (rng, 4));
    *off = align_down (rng_below (rng, ex.size), CHUNK);
    break;
  case 6:                       /* across a 64 KiB chunk boundary */
    choose_straddle (rng, CHUNK, off, len);
    break;
  case 7:                       /* across a 512 B .. 1 MiB boundary */
    choose_straddle (rng, UINT64_C (512) << rng_below (rng, 12), off, len);
    break;
  case 8:                       /* large */
    *len = 1 + rng_below (rng, ex.max_request);
    *off = rng_below (rng, ex.size);
    break;
  default:                      /* first or last byte */
    *len = 1 + rng_below (rng, rng_below (rng, 2) ? 4096 : 4 * CHUNK);
    *off = rng_below (rng, 2) ? 0 : ex.size;    /* clamped below */
    break;
  }

  /* Honour the server's minimum block size and stay inside the export.
   * ex.max_request is a multiple of ex.align and at most ex.size.
   */
  *off = align_down (*off, ex.align);
  *len = MIN (align_up (*len, ex.align), ex.max_request);
  if (*off > ex.size - *len)
    *off = ex.size - *len;
}

/*----------------------------------------------------------------------
 * Running operations.  The caller holds the range lock for [off, len).
 */

static int
do_pread (struct worker *w, const struct op *op)
{
  if (nbd_pread (w->nbd, w->buf, op->len, op->off, op->flags) == -1)
    return report_nbd_error (op);
  w->stats.reads++;
  w->stats.bytes_read += op->len;
  model_compare (op, op->off, op->len, w->buf, "");
  return 0;
}

/* w->buf already holds the data. */
static int
do_pwrite (struct worker *w, const struct op *op)
{
  if (nbd_pwrite (w->nbd, w->buf, op->len, op->off, op->flags) == -1) {
    model_forget (op->off, op->len);
    return report_nbd_error (op);
  }
  w->stats.writes++;
  w->stats.bytes_written += op->len;
  model_store (op->off, w->buf, op->len);
  return 0;
}

static int
do_zero (struct worker *w, const struct op *op)
{
  if (nbd_zero (w->nbd, op->len, op->off, op->flags) == -1) {
    model_forget (op->off, op->len);
    return report_nbd_error (op);
  }
  w->stats.zeros++;
  model_store_zero (op->off, op->len);
  return 0;
}

static int
do_trim (struct worker *w, const struct op *op)
{
  if (nbd_trim (w->nbd, op->len, op->off, op->flags) == -1) {
    model_forget (op->off, op->len);
    return report_nbd_error (op);
  }
  w->stats.trims++;
  if (cfg.trim_reads_zero)
    model_store_zero (op->off, op->len);
  else
    model_forget (op->off, op->len);
  return 0;
}

static int
do_flush (struct worker *w, const struct op *op)
{
  if (nbd_flush (w->nbd, 0) == -1)
    return report_nbd_error (op);
  w->stats.flushes++;
  return 0;
}

/* Block status may not say more than the server knows, but what it does
 * say must be true: an extent flagged as reading zeroes must not cover
 * defined non-zero bytes in the model.
 */
static int
check_extents (void *opaque, const char *metacontext, uint64_t offset,
               uint32_t *entries, size_t nr_entries,
               int *error __attribute__ ((unused)))
{
  const struct op *op = opaque;
  const uint64_t end = op->off + op->len;
  uint64_t pos = offset;
  char why[96];
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  if (offset != op->off || nr_entries % 2 != 0) {
    report (&nr_errors, op, "ERROR: bad block status reply: offset %" PRIu64
            ", %zu entries", offset, nr_entries);
    return 0;
  }

  for (i = 0; i < nr_entries && pos < end; i += 2) {
    const uint64_t len = entries[i];
    const uint32_t flags = entries[i + 1];

    if (len == 0) {
      report (&nr_errors, op,
              "ERROR: zero-length block status extent at offset %" PRIu64,
              pos);
      return 0;
    }
    /* The last extent may reach past the request; we only hold the
     * range we asked about.
     */
    if (flags & LIBNBD_STATE_ZERO) {
      snprintf (why, sizeof why,
                "; extent off=%" PRIu64 " len=%" PRIu64 " flags=0x%" PRIx32
                " claims zeroes", pos, len, flags);
      model_compare (op, pos, MIN (len, end - pos), NULL, why);
    }
    pos += len;
  }
  return 0;
}

static int
do_block_status (struct worker *w, const struct op *op)
{
  nbd_extent_callback cb = {
    .callback = check_extents,
    .user_data = (void *) op,
  };

  if (nbd_block_status (w->nbd, op->len, op->off, cb, 0) == -1)
    return report_nbd_error (op);
  w->stats.extents++;
  return 0;
}

static int
execute (struct worker *w, const struct op *op)
{
  switch (op->type) {
  case OP_PREAD:        return do_pread (w, op);
  case OP_PWRITE:       return do_pwrite (w, op);
  case OP_ZERO:         return do_zero (w, op);
  case OP_TRIM:         return do_trim (w, op);
  case OP_FLUSH:        return do_flush (w, op);
  case OP_BLOCK_STATUS: return do_block_status (w, op);
  default:              return -1;      /* not a random operation */
  }
}

/* After a command failed: is this connection gone for good?  Must be
 * called before any other libnbd call overwrites the thread's errno.
 * A server that is shutting down (nbdkit on SIGTERM) keeps the socket
 * open but fails every command with ESHUTDOWN, so that counts too.
 */
static bool
check_lost (struct worker *w)
{
  if (nbd_get_errno () == ESHUTDOWN ||
      nbd_aio_is_dead (w->nbd) == 1 || nbd_aio_is_closed (w->nbd) == 1)
    w->lost = true;
  return w->lost;
}

static void *
worker_run (void *arg)
{
  struct worker *w = arg;

  while (!atomic_load (&stop)) {
    const uint64_t num = atomic_fetch_add (&next_op, 1);
    struct op op = { .num = num, .conn = w->index };
    int r;

    if (num >= cfg.ops)
      break;
    op.type = choose_op (&w->rng);
    op.flags = choose_flags (&w->rng, op.type);
    w->stats.ops++;

    if (op.type == OP_FLUSH)    /* a flush has no range to lock */
      r = execute (w, &op);
    else {
      choose_range (&w->rng, &op.off, &op.len);
      /* Make up the data before locking, to keep the lock short. */
      if (op.type == OP_PWRITE)
        fill_random (&w->rng, w->buf, op.len);
      range_acquire (w->index, op.off, op.len);
      r = execute (w, &op);
      range_release (w->index);
    }

    if (r == -1 && check_lost (w)) {
      fprintf (stderr, PROG ": conn=%u: connection lost, thread stops\n",
               w->index);
      break;
    }
  }
  return NULL;
}

/*----------------------------------------------------------------------
 * Whole-export reads: loading the model and the final check.
 */

/* The I'th live connection, round robin, or NULL if all are gone. */
static struct worker *
pick_connection (uint64_t i)
{
  unsigned n;

  for (n = 0; n < cfg.connections; n++) {
    struct worker *w = &workers[(i + n) % cfg.connections];

    if (!w->lost)
      return w;
  }
  return NULL;
}

/* Read the whole export.  With OP_LOAD what is read becomes the model;
 * with OP_VERIFY it is compared with it.  The pieces rotate over the
 * connections so that each one's view of the export is checked.
 */
static int
sweep_export (enum op_type type)
{
  uint8_t *buf = malloc (ex.sweep_piece);
  uint64_t off, i;

  if (buf == NULL) {
    perror (PROG ": malloc");
    return -1;
  }
  for (off = 0, i = 0; off < ex.size && !atomic_load (&stop); i++) {
    struct worker *w = pick_connection (i);
    struct op op = {
      .type = type, .off = off, .len = MIN (ex.sweep_piece, ex.size - off),
    };

    if (w == NULL) {
      report (&nr_errors, &op, "ERROR: no connection left");
      break;
    }
    op.conn = w->index;
    if (nbd_pread (w->nbd, buf, op.len, op.off, 0) == -1) {
      report_nbd_error (&op);
      check_lost (w);
    }
    else if (type == OP_LOAD)
      model_store (op.off, buf, op.len);
    else {
      model_compare (&op, op.off, op.len, buf, "");
      bytes_verified += op.len;
    }
    off += op.len;
  }
  free (buf);
  return 0;
}

/*----------------------------------------------------------------------
 * Model files.
 */

/* Returns 0, or EXIT_USAGE if FILE cannot be used, or EXIT_FAILURE. */
static int
load_initial (const char *file)
{
  struct stat st;
  uint64_t done = 0;
  int fd = open (file, O_RDONLY);

  if (fd == -1) {
    fprintf (stderr, PROG ": --initial: %s: %s\n", file, strerror (errno));
    return EXIT_USAGE;
  }
  if (fstat (fd, &st) == -1 || !S_ISREG (st.st_mode) ||
      (uint64_t) st.st_size != ex.size) {
    fprintf (stderr, PROG ": --initial: %s: must be a regular file of "
             "%" PRIu64 " bytes, the size of the export\n", file, ex.size);
    close (fd);
    return EXIT_USAGE;
  }
  while (done < ex.size) {
    ssize_t r = read (fd, &model.data[done], MIN (ex.size - done, SWEEP_PIECE));

    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      fprintf (stderr, PROG ": --initial: %s: %s\n", file,
               r == 0 ? "file shrank while reading" : strerror (errno));
      close (fd);
      return EXIT_FAILURE;
    }
    done += r;
  }
  close (fd);
  model_set_defined (0, ex.size, true);
  return 0;
}

/* Write the model's image, undefined bytes as zero.  The model is not
 * used any more, so it is zeroed in place.
 */
static int
write_model (const char *file)
{
  uint64_t off, run;
  bool defined;
  FILE *fp;

  for (off = 0; off < ex.size; off += run) {
    run = defined_run (off, ex.size - off, &defined);
    if (!defined)
      memset (&model.data[off], 0, run);
  }

  fp = fopen (file, "w");
  if (fp == NULL ||
      fwrite (model.data, 1, ex.size, fp) != ex.size ||
      fclose (fp) == EOF) {
    fprintf (stderr, PROG ": --model: %s: %s\n", file, strerror (errno));
    return -1;
  }
  return 0;
}

/*----------------------------------------------------------------------
 * Connecting.
 */

static int
connect_all (void)
{
  unsigned i;

  for (i = 0; i < cfg.connections; i++) {
    struct nbd_handle *nbd = nbd_create ();

    if (nbd == NULL ||
        nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
        nbd_connect_uri (nbd, cfg.uri) == -1) {
      fprintf (stderr, PROG ": connection %u to %s: %s\n",
               i, cfg.uri, nbd_get_error ());
      nbd_close (nbd);
      return -1;
    }
    workers[i].nbd = nbd;
  }
  return 0;
}

/* libnbd's can_* calls return -1 on error; count that as "cannot". */
static bool
can (int r)
{
  return r == 1;
}

/* Find out what the server offers and decide request sizes. */
static int
probe_export (void)
{
  struct nbd_handle *nbd = workers[0].nbd;
  const int64_t size = nbd_get_size (nbd);
  int64_t minimum = nbd_get_block_size (nbd, LIBNBD_SIZE_MINIMUM);
  int64_t maximum = nbd_get_block_size (nbd, LIBNBD_SIZE_MAXIMUM);
  unsigned i;

  if (size == -1 || minimum == -1 || maximum == -1) {
    fprintf (stderr, PROG ": %s\n", nbd_get_error ());
    return -1;
  }
  for (i = 1; i < cfg.connections; i++) {
    if (nbd_get_size (workers[i].nbd) != size) {
      fprintf (stderr, PROG ": connection %u sees a different export size\n",
               i);
      return -1;
    }
  }
  if (size > (int64_t) MAX_EXPORT_SIZE) {
    fprintf (stderr, PROG ": the export is %" PRId64 " bytes; at most "
             "%" PRIu64 " (1 GiB) is supported, because the model is "
             "kept in memory\n", size, MAX_EXPORT_SIZE);
    return -1;
  }
  ex.size = size;
  ex.align = minimum > 0 ? (uint64_t) minimum : 1;
  if (ex.size == 0 || ex.size < ex.align) {
    fprintf (stderr, PROG ": the export (%" PRIu64 " bytes) is too small "
             "to test\n", ex.size);
    return -1;
  }

  ex.max_request = MIN (cfg.max_size, ex.size);
  ex.sweep_piece = MIN (SWEEP_PIECE, ex.size);
  if (maximum > 0) {
    ex.max_request = MIN (ex.max_request, (uint64_t) maximum);
    ex.sweep_piece = MIN (ex.sweep_piece, (uint64_t) maximum);
  }
  ex.max_request = align_down (ex.max_request, ex.align);
  ex.sweep_piece = align_down (ex.sweep_piece, ex.align);
  if (ex.max_request == 0)
    ex.max_request = ex.align;
  if (ex.sweep_piece == 0)
    ex.sweep_piece = ex.align;

  ex.can_write = nbd_is_read_only (nbd) == 0;
  ex.can_flush = can (nbd_can_flush (nbd));
  ex.can_fua = can (nbd_can_fua (nbd));
  ex.can_zero = ex.can_write && can (nbd_can_zero (nbd));
  ex.can_trim = ex.can_write && can (nbd_can_trim (nbd));
  ex.can_extents =
    can (nbd_can_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION));
  ex.can_multi_conn = can (nbd_can_multi_conn (nbd));
  return 0;
}

static void
setup_op_mix (void)
{
  enum op_type t;

  if (!ex.can_write)
    op_weight[OP_PWRITE] = 0;
  if (!ex.can_zero)
    op_weight[OP_ZERO] = 0;
  if (!ex.can_trim)
    op_weight[OP_TRIM] = 0;
  if (!ex.can_flush)
    op_weight[OP_FLUSH] = 0;
  if (!ex.can_extents)
    op_weight[OP_BLOCK_STATUS] = 0;
  op_weight_total = 0;
  for (t = 0; t < OP_NR_RANDOM; t++)
    op_weight_total += op_weight[t];
}

static void
print_export_info (void)
{
  printf (PROG ": size=%" PRIu64 " align=%" PRIu64 " max_request=%" PRIu64
          " write=%d flush=%d fua=%d zero=%d trim=%d extents=%d"
          " multi_conn=%d\n",
          ex.size, ex.align, ex.max_request, ex.can_write, ex.can_flush,
          ex.can_fua, ex.can_zero, ex.can_trim, ex.can_extents,
          ex.can_multi_conn);
  if (cfg.connections > 1 && !ex.can_multi_conn)
    printf (PROG ": warning: the server does not advertise multi-conn; "
            "checking consistency across connections anyway\n");
  fflush (stdout);
}

/*----------------------------------------------------------------------
 * Running the workers.
 */

static int
alloc_workers (void)
{
  unsigned i;

  workers = calloc (cfg.connections, sizeof *workers);
  ranges.slots = calloc (cfg.connections, sizeof *ranges.slots);
  if (workers == NULL || ranges.slots == NULL) {
    perror (PROG ": calloc");
    return -1;
  }
  ranges.nr_slots = cfg.connections;
  for (i = 0; i < cfg.connections; i++) {
    workers[i].index = i;
    workers[i].rng = rng_seed (cfg.seed, i);
  }
  return 0;
}

static void
free_workers (void)
{
  unsigned i;

  for (i = 0; workers != NULL && i < cfg.connections; i++) {
    free (workers[i].buf);
    nbd_close (workers[i].nbd);
  }
  free (workers);
  free (ranges.slots);
}

static int
run_workers (void)
{
  unsigned i, started;
  int err, ret = 0;

  for (i = 0; i < cfg.connections; i++) {
    workers[i].buf = malloc (ex.max_request);
    if (workers[i].buf == NULL) {
      perror (PROG ": malloc");
      return -1;
    }
  }

  for (started = 0; started < cfg.connections; started++) {
    err = pthread_create (&workers[started].thread, NULL, worker_run,
                          &workers[started]);
    if (err != 0) {
      fprintf (stderr, PROG ": pthread_create: %s\n", strerror (err));
      atomic_store (&stop, true);
      ret = -1;
      break;
    }
  }
  for (i = 0; i < started; i++)
    pthread_join (workers[i].thread, NULL);
  return ret;
}

static void
shutdown_all (void)
{
  unsigned i;

  for (i = 0; i < cfg.connections; i++) {
    struct op op = { .type = OP_SHUTDOWN, .conn = i };

    if (!workers[i].lost && nbd_aio_is_dead (workers[i].nbd) == 0 &&
        nbd_shutdown (workers[i].nbd, 0) == -1)
      report_nbd_error (&op);
  }
}

static void
print_summary (void)
{
  struct stats t = { 0 };
  unsigned i;

  for (i = 0; i < cfg.connections; i++) {
    const struct stats *s = &workers[i].stats;

    t.ops += s->ops;
    t.reads += s->reads;
    t.writes += s->writes;
    t.zeros += s->zeros;
    t.trims += s->trims;
    t.flushes += s->flushes;
    t.extents += s->extents;
    t.bytes_read += s->bytes_read;
    t.bytes_written += s->bytes_written;
  }
  printf (PROG ": seed=%" PRIu64 " ops=%" PRIu64 " conns=%u"
          " reads=%" PRIu64 " writes=%" PRIu64 " zeros=%" PRIu64
          " trims=%" PRIu64 " flushes=%" PRIu64 " extents=%" PRIu64
          " bytes_read=%" PRIu64 " bytes_written=%" PRIu64
          " bytes_verified=%" PRIu64 " mismatches=%" PRIu64
          " errors=%" PRIu64 "\n",
          cfg.seed, t.ops, cfg.connections, t.reads, t.writes, t.zeros,
          t.trims, t.flushes, t.extents, t.bytes_read, t.bytes_written,
          bytes_verified, atomic_load (&nr_mismatches),
          atomic_load (&nr_errors));
}

/*----------------------------------------------------------------------
 * Command line.
 */

static void
usage (FILE *fp)
{
  fprintf (fp,
"Usage: " PROG " [OPTIONS] URI\n"
"Run random I/O against the NBD export at URI and check every result\n"
"against an in-memory model of the export's contents.\n"
"\n"
"  --ops N            total operations over all connections (default 10000)\n"
"  --connections N    connections, one thread each, 1..%d (default 4)\n"
"  --seed S           random seed (default: time based; always printed)\n"
"  --max-size BYTES   largest request, up to 32M (default 1M)\n"
"  --trim-reads-zero  trimmed bytes must read back as zeroes\n"
"  --model FILE       at the end, write the model's image to FILE\n"
"  --initial FILE     the export's expected initial contents\n"
"                     (default: read the export and take it as truth)\n"
"  --verify-only      compare the export with --initial FILE and exit\n"
"  --quiet            print only the seed, failures and the summary\n"
"  --help             print this help\n"
"\n"
"Exit status: 0 success, 1 mismatch or NBD error, 2 usage error.\n",
           MAX_CONNECTIONS);
}

static void __attribute__ ((noreturn))
usage_error (const char *option, const char *why, const char *arg)
{
  fprintf (stderr, PROG ": %s: %s: %s\n", option, why, arg);
  exit (EXIT_USAGE);
}

/* Parse a decimal number in [MIN, MAX] for OPTION; with SUFFIXES, a
 * trailing K, M or G multiplies by 1024, 1024^2 or 1024^3.
 */
static uint64_t
parse_number (const char *option, const char *arg, uint64_t min,
              uint64_t max, bool suffixes)
{
  char *end, range[64];
  unsigned long long v;
  unsigned shift = 0;

  /* strtoull would quietly accept "-1" and leading spaces. */
  if (arg[0] < '0' || arg[0] > '9')
    usage_error (option, "not a number", arg);
  errno = 0;
  v = strtoull (arg, &end, 10);
  if (suffixes && *end != '\0' && end[1] == '\0') {
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    }
  }
  if (*end != '\0')
    usage_error (option, "not a number", arg);
  snprintf (range, sizeof range, "must be between %" PRIu64 " and %" PRIu64,
            min, max);
  if (errno == ERANGE || v > (max >> shift) || (v << shift) < min)
    usage_error (option, range, arg);
  return (uint64_t) v << shift;
}

static uint64_t
default_seed (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  /* Squeezed through splitmix64 so that runs a second apart differ. */
  return splitmix64 ((uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec +
                     ((uint64_t) getpid () << 32));
}

static void
parse_args (int argc, char *argv[])
{
  enum {
    OPT_OPS = 256, OPT_CONNECTIONS, OPT_SEED, OPT_MAX_SIZE,
    OPT_TRIM_READS_ZERO, OPT_MODEL, OPT_INITIAL, OPT_VERIFY_ONLY,
    OPT_QUIET, OPT_HELP,
  };
  static const struct option long_options[] = {
    { "ops",             required_argument, NULL, OPT_OPS },
    { "connections",     required_argument, NULL, OPT_CONNECTIONS },
    { "seed",            required_argument, NULL, OPT_SEED },
    { "max-size",        required_argument, NULL, OPT_MAX_SIZE },
    { "trim-reads-zero", no_argument,       NULL, OPT_TRIM_READS_ZERO },
    { "model",           required_argument, NULL, OPT_MODEL },
    { "initial",         required_argument, NULL, OPT_INITIAL },
    { "verify-only",     no_argument,       NULL, OPT_VERIFY_ONLY },
    { "quiet",           no_argument,       NULL, OPT_QUIET },
    { "help",            no_argument,       NULL, OPT_HELP },
    { NULL, 0, NULL, 0 },
  };
  bool seed_set = false;
  int c;

  while ((c = getopt_long (argc, argv, "", long_options, NULL)) != -1) {
    switch (c) {
    case OPT_OPS:
      cfg.ops = parse_number ("--ops", optarg, 0, UINT64_MAX / 2, false);
      break;
    case OPT_CONNECTIONS:
      cfg.connections = parse_number ("--connections", optarg,
                                      1, MAX_CONNECTIONS, false);
      break;
    case OPT_SEED:
      cfg.seed = parse_number ("--seed", optarg, 0, UINT64_MAX, false);
      seed_set = true;
      break;
    case OPT_MAX_SIZE:
      cfg.max_size = parse_number ("--max-size", optarg, 1, MAX_REQUEST, true);
      break;
    case OPT_TRIM_READS_ZERO: cfg.trim_reads_zero = true; break;
    case OPT_MODEL:           cfg.model_file = optarg; break;
    case OPT_INITIAL:         cfg.initial_file = optarg; break;
    case OPT_VERIFY_ONLY:     cfg.verify_only = true; break;
    case OPT_QUIET:           cfg.quiet = true; break;
    case OPT_HELP:
      usage (stdout);
      exit (EXIT_SUCCESS);
    default:                    /* getopt_long has said what is wrong */
      exit (EXIT_USAGE);
    }
  }

  if (optind != argc - 1) {
    fprintf (stderr, PROG ": %s (see --help)\n",
             optind == argc ? "missing URI" : "too many arguments");
    exit (EXIT_USAGE);
  }
  cfg.uri = argv[optind];
  if (cfg.verify_only && cfg.initial_file == NULL) {
    fprintf (stderr, PROG ": --verify-only: needs --initial FILE\n");
    exit (EXIT_USAGE);
  }
  if (!seed_set)
    cfg.seed = default_seed ();
}

int
main (int argc, char *argv[])
{
  int status = EXIT_FAILURE;

  parse_args (argc, argv);
  printf (PROG ": seed=%" PRIu64 "\n", cfg.seed);
  fflush (stdout);

  if (alloc_workers () == -1 || connect_all () == -1 ||
      probe_export () == -1 || model_init (ex.size) == -1)
    goto out;
  setup_op_mix ();
  if (!cfg.quiet)
    print_export_info ();

  if (cfg.initial_file) {
    int r = load_initial (cfg.initial_file);

    if (r != 0) {
      status = r;
      goto out;
    }
  }
  else if (sweep_export (OP_LOAD) == -1)
    goto out;

  /* If the export could not even be read, testing it further is moot. */
  if (atomic_load (&nr_reports) == 0) {
    if (!cfg.verify_only && run_workers () == -1)
      goto out;
    if (sweep_export (OP_VERIFY) == -1)
      goto out;
  }
  shutdown_all ();

  if (cfg.model_file && write_model (cfg.model_file) == -1)
    goto out;
  print_summary ();
  if (atomic_load (&nr_mismatches) == 0 && atomic_load (&nr_errors) == 0)
    status = EXIT_SUCCESS;

 out:
  free_workers ();
  model_free ();
  return status;
}
