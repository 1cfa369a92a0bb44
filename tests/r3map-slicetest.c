/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map-slicetest: drives libr3map for tests/test-slice*.sh.
 *
 *   r3map-slicetest model [OPTIONS] URI MODEL
 *       Maps URI and runs random reads and writes through the region
 *       against a model: MODEL, a file holding what the export holds
 *       at the start, read into memory.  Every read compares the
 *       region with the model.  Options:
 *         --ops=N          operations per thread (default 2000)
 *         --threads=N      threads at once (default 1); each owns the
 *                          pages p with p % N == its number, so they
 *                          share every chunk
 *         --max-len=N      largest read or write (default 3 pages)
 *         --sync-every=N   r3map_sync after every N operations
 *         --random         map with R3MAP_MAP_RANDOM
 *         --seed=N         the random seed (default 1)
 *         --touched=FILE   write the chunks touched (for CHUNK-SIZE
 *                          given by --chunk-size), one a line, sorted
 *         --chunk-size=N   (default 65536)
 *         --out=FILE       write the model as it is at the end
 *         --end=HOW        unmap (default): r3map_unmap, which writes
 *                          back; sync: r3map_sync, then unmap with
 *                          R3MAP_UNMAP_DISCARD; discard: unmap with
 *                          R3MAP_UNMAP_DISCARD and no sync
 *
 *   r3map-slicetest touch [--kill=PID] [--stop=PID] [--after=K] URI OFFSET...
 *       Maps URI read-only and reads a byte at each OFFSET; after the
 *       first K (default 0) sends SIGKILL or SIGSTOP to PID (a server
 *       to lose).  Prints "ok" or "signal NAME at OFFSET" and exits 0
 *       either way; exits 1 if r3map_map failed.
 *
 *   r3map-slicetest lose URI PID
 *       Maps URI, writes a byte, kills PID (the server) and waits for
 *       it to go, then checks that r3map_sync and r3map_unmap fail and
 *       that the region, with the byte, stays until
 *       R3MAP_UNMAP_DISCARD.  One line per check, "ok ..." or "FAIL".
 *
 *   r3map-slicetest errors URI RO-URI EMPTY-URI
 *       The error paths: bad arguments and flags, a read-only export
 *       mapped for writing, an empty export, an address that is not
 *       mapped.  Prints one line per check, "ok ..." or "FAIL ...".
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libr3map.h>

static const char *prog = "r3map-slicetest";
static size_t page;

static void
die (const char *what)
{
  fprintf (stderr, "%s: %s: %s\n", prog, what,
           r3map_get_error () ? r3map_get_error () : strerror (errno));
  exit (EXIT_FAILURE);
}

/* xorshift64*: the same sequence from the same seed everywhere. */
static uint64_t
next_rand (uint64_t *s)
{
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * UINT64_C (2685821657736338717);
}

/* ---------------------------------------------------------------- model */

struct model_args {
  unsigned char *region, *model;
  size_t len;
  unsigned id, nthreads;
  long ops, max_len, sync_every;
  uint64_t seed;
  unsigned char *touched;       /* per page, shared: set only */
  long errors;
};

static void *
model_thread (void *ap)
{
  struct model_args *a = ap;
  uint64_t s = a->seed * 7919 + a->id + 1;
  size_t npages = (a->len + page - 1) / page;
  long i;

  for (i = 0; i < a->ops; i++) {
    /* A page of this thread's, then a range inside it. */
    size_t p = next_rand (&s) % npages;
    size_t off, n, k;
    bool write = next_rand (&s) % 2;

    p -= p % a->nthreads;
    p += a->id;
    if (p >= npages)
      continue;
    off = p * page + next_rand (&s) % page;
    n = 1 + next_rand (&s) % (a->max_len < (long) page ? a->max_len : (long) page);
    if (off + n > a->len)
      n = a->len - off;
    if (off + n > (p + 1) * page)
      n = (p + 1) * page - off;
    a->touched[p] = 1;
    if (write) {
      for (k = 0; k < n; k++)
        a->model[off + k] = next_rand (&s);
      memcpy (a->region + off, a->model + off, n);
    }
    else if (memcmp (a->region + off, a->model + off, n) != 0) {
      fprintf (stderr, "%s: thread %u: read of %zu bytes at %zu differs "
               "from the model\n", prog, a->id, n, off);
      a->errors++;
    }
    if (a->sync_every && (i + 1) % a->sync_every == 0 &&
        r3map_sync (a->region, a->len, 0) == -1)
      die ("r3map_sync");
  }
  return NULL;
}

static int
cmd_model (int argc, char *argv[])
{
  static const struct option opts[] = {
    { "ops", required_argument, NULL, 'o' },
    { "threads", required_argument, NULL, 't' },
    { "max-len", required_argument, NULL, 'l' },
    { "sync-every", required_argument, NULL, 'S' },
    { "random", no_argument, NULL, 'r' },
    { "seed", required_argument, NULL, 's' },
    { "touched", required_argument, NULL, 'T' },
    { "chunk-size", required_argument, NULL, 'c' },
    { "out", required_argument, NULL, 'O' },
    { "end", required_argument, NULL, 'e' },
    { NULL, 0, NULL, 0 }
  };
  const char *end = "unmap";
  long ops = 2000, max_len = -1, sync_every = 0, chunk = 65536;
  unsigned nthreads = 1, flags = 0, i;
  uint64_t seed = 1;
  const char *touched_file = NULL, *out_file = NULL;
  struct model_args *args;
  pthread_t *threads;
  unsigned char *model, *touched;
  void *addr;
  size_t len, p;
  long errors = 0;
  FILE *fp;
  int c;

  while ((c = getopt_long (argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'o': ops = atol (optarg); break;
    case 't': nthreads = atoi (optarg); break;
    case 'l': max_len = atol (optarg); break;
    case 'S': sync_every = atol (optarg); break;
    case 'r': flags |= R3MAP_MAP_RANDOM; break;
    case 's': seed = strtoull (optarg, NULL, 0); break;
    case 'T': touched_file = optarg; break;
    case 'c': chunk = atol (optarg); break;
    case 'O': out_file = optarg; break;
    case 'e': end = optarg; break;
    default: exit (2);
    }
  }
  if (argc - optind != 2 || nthreads < 1 || chunk < (long) page ||
      (strcmp (end, "unmap") && strcmp (end, "sync") && strcmp (end, "discard"))) {
    fprintf (stderr, "%s: model: bad arguments\n", prog);
    exit (2);
  }
  if (max_len < 1)
    max_len = 3 * page;

  if (r3map_map (argv[optind], flags, &addr, &len) == -1)
    die ("r3map_map");
  model = malloc (len);
  touched = calloc ((len + page - 1) / page, 1);
  fp = fopen (argv[optind + 1], "rb");
  if (model == NULL || touched == NULL || fp == NULL ||
      fread (model, 1, len, fp) != len)
    die (argv[optind + 1]);
  fclose (fp);

  args = calloc (nthreads, sizeof *args);
  threads = calloc (nthreads, sizeof *threads);
  for (i = 0; i < nthreads; i++) {
    args[i] = (struct model_args) {
      .region = addr, .model = model, .len = len, .id = i,
      .nthreads = nthreads, .ops = ops, .max_len = max_len,
      .sync_every = sync_every, .seed = seed, .touched = touched,
    };
    if (pthread_create (&threads[i], NULL, model_thread, &args[i]) != 0)
      die ("pthread_create");
  }
  for (i = 0; i < nthreads; i++) {
    pthread_join (threads[i], NULL);
    errors += args[i].errors;
  }
  /* A last read of everything touched, after all the threads. */
  for (p = 0; p < (len + page - 1) / page; p++) {
    size_t n = p * page + page <= len ? page : len - p * page;

    if (touched[p] &&
        memcmp ((char *) addr + p * page, model + p * page, n) != 0) {
      fprintf (stderr, "%s: page %zu differs from the model at the end\n",
               prog, p);
      errors++;
    }
  }
  if (strcmp (end, "sync") == 0 && r3map_sync (addr, len, 0) == -1)
    die ("r3map_sync");
  if (r3map_unmap (addr, len, strcmp (end, "unmap") == 0
                   ? 0 : R3MAP_UNMAP_DISCARD) == -1)
    die ("r3map_unmap");

  if (touched_file) {
    long last = -1;

    fp = fopen (touched_file, "w");
    if (fp == NULL)
      die (touched_file);
    for (p = 0; p < (len + page - 1) / page; p++)
      if (touched[p] && (long) (p * page / chunk) != last) {
        last = p * page / chunk;
        fprintf (fp, "%ld\n", last);
      }
    fclose (fp);
  }
  if (out_file) {
    fp = fopen (out_file, "wb");
    if (fp == NULL || fwrite (model, 1, len, fp) != len || fclose (fp) != 0)
      die (out_file);
  }
  free (model);
  free (touched);
  free (args);
  free (threads);
  if (errors) {
    fprintf (stderr, "%s: %ld reads differed from the model\n", prog, errors);
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}

/* ---------------------------------------------------------------- touch */

static sigjmp_buf touch_env;

static void
on_signal (int sig)
{
  siglongjmp (touch_env, sig);
}

static int
cmd_touch (int argc, char *argv[])
{
  static const struct option opts[] = {
    { "kill", required_argument, NULL, 'k' },
    { "stop", required_argument, NULL, 's' },
    { "after", required_argument, NULL, 'a' },
    { NULL, 0, NULL, 0 }
  };
  struct sigaction sa = { .sa_handler = on_signal };
  volatile pid_t kill_pid = 0, stop_pid = 0;
  volatile int i;
  volatile int after = 0;
  void *addr;
  size_t len;
  int c, sig;

  while ((c = getopt_long (argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'k': kill_pid = atoi (optarg); break;
    case 's': stop_pid = atoi (optarg); break;
    case 'a': after = atoi (optarg); break;
    default: exit (2);
    }
  }
  if (argc - optind < 2) {
    fprintf (stderr, "%s: touch: bad arguments\n", prog);
    exit (2);
  }
  if (r3map_map (argv[optind], R3MAP_MAP_READONLY, &addr, &len) == -1)
    die ("r3map_map");

  sigemptyset (&sa.sa_mask);
  sigaction (SIGBUS, &sa, NULL);
  sigaction (SIGSEGV, &sa, NULL);
  for (i = optind + 1; i < argc; i++) {
    size_t off = strtoull (argv[i], NULL, 0);

    if (i - optind - 1 == after) {
      if (kill_pid > 0)
        kill (kill_pid, SIGKILL);
      if (stop_pid > 0)
        kill (stop_pid, SIGSTOP);
    }
    if (off >= len) {
      fprintf (stderr, "%s: touch: %zu is past the end\n", prog, off);
      exit (2);
    }
    sig = sigsetjmp (touch_env, 1);
    if (sig != 0) {
      printf ("signal %s at %zu\n", sig == SIGBUS ? "SIGBUS" : "SIGSEGV", off);
      /* The region cannot be unmapped cleanly with a failed page in a
       * sync; discard, there is nothing to write. */
      r3map_unmap (addr, len, R3MAP_UNMAP_DISCARD);
      return EXIT_SUCCESS;
    }
    (void) *(volatile char *) ((char *) addr + off);
  }
  printf ("ok\n");
  if (r3map_unmap (addr, len, 0) == -1)
    die ("r3map_unmap");
  return EXIT_SUCCESS;
}

/* ---------------------------------------------------------------- lose */

static int failures;

static void
expect (bool cond, const char *what, int want_errno);

static int
cmd_lose (int argc, char *argv[])
{
  pid_t pid;
  void *addr;
  size_t len;
  int i;

  if (argc != 3) {
    fprintf (stderr, "%s: lose: bad arguments\n", prog);
    exit (2);
  }
  pid = atoi (argv[2]);
  if (r3map_map (argv[1], 0, &addr, &len) == -1)
    die ("r3map_map");
  memcpy (addr, "x", 1);
  kill (pid, SIGKILL);
  for (i = 0; i < 500 && kill (pid, 0) == 0; i++)
    usleep (10000);
  expect (r3map_sync (addr, len, 0) == -1, "sync fails without the server", 0);
  printf ("# %s\n", r3map_get_error ());
  expect (r3map_unmap (addr, len, 0) == -1, "so does unmap", 0);
  expect (*(char *) addr == 'x', "the region stays, with the write", 0);
  expect (r3map_unmap (addr, len, R3MAP_UNMAP_DISCARD) == 0,
          "R3MAP_UNMAP_DISCARD unmaps it", 0);
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* ---------------------------------------------------------------- errors */

static void
expect (bool cond, const char *what, int want_errno)
{
  const char *msg = r3map_get_error ();

  if (cond && (want_errno == 0 || errno == want_errno))
    printf ("ok %s\n", what);
  else {
    printf ("FAIL %s: errno %d (%s), last message: %s\n", what, errno,
            strerror (errno), msg ? msg : "(none)");
    failures++;
  }
}

static int
cmd_errors (int argc, char *argv[])
{
  void *addr = NULL, *a2;
  size_t len = 0, l2;
  int x;

  if (argc != 4) {
    fprintf (stderr, "%s: errors: bad arguments\n", prog);
    exit (2);
  }
  expect (r3map_map (NULL, 0, &addr, &len) == -1, "NULL uri", EINVAL);
  expect (r3map_map (argv[1], 0x100, &addr, &len) == -1 &&
          strstr (r3map_get_error (), "flags"), "unknown flag", EINVAL);
  expect (r3map_map ("nbd+unix:///?socket=/nonexistent/sock", 0,
                     &addr, &len) == -1 &&
          strstr (r3map_get_error (), "/nonexistent/sock"),
          "no server", 0);
  expect (r3map_map (argv[2], 0, &addr, &len) == -1 &&
          strstr (r3map_get_error (), "R3MAP_MAP_READONLY"),
          "read-only export mapped for writing", EACCES);
  expect (r3map_map (argv[3], 0, &addr, &len) == -1 &&
          strstr (r3map_get_error (), "empty"), "empty export", EINVAL);
  expect (r3map_sync (&x, sizeof x, 0) == -1, "sync of unmapped memory",
          EINVAL);
  expect (r3map_unmap (&x, sizeof x, 0) == -1, "unmap of unmapped memory",
          EINVAL);

  if (r3map_map (argv[1], 0, &addr, &len) == -1)
    die ("r3map_map");
  expect (r3map_sync (addr, len, 0x8) == -1, "sync with an unknown flag",
          EINVAL);
  expect (r3map_sync ((char *) addr + page, len, 0) == -1,
          "sync past the end", EINVAL);
  expect (r3map_unmap ((char *) addr + page, len - page, 0) == -1,
          "unmap of a part", EINVAL);
  /* Two mappings of one export are independent regions. */
  expect (r3map_map (argv[1], R3MAP_MAP_READONLY, &a2, &l2) == 0 &&
          a2 != addr && l2 == len, "a second mapping", 0);
  expect (r3map_unmap (a2, l2, 0) == 0, "unmap the second", 0);
  expect (r3map_unmap (addr, len, 0) == 0, "unmap the first", 0);
  expect (r3map_unmap (addr, len, 0) == -1, "unmap twice", EINVAL);
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}

int
main (int argc, char *argv[])
{
  page = sysconf (_SC_PAGESIZE);
  if (argc >= 2 && strcmp (argv[1], "model") == 0)
    return cmd_model (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "touch") == 0)
    return cmd_touch (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "lose") == 0)
    return cmd_lose (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "errors") == 0)
    return cmd_errors (argc - 1, argv + 1);
  fprintf (stderr, "usage: %s model|touch|lose|errors ... (see the source)\n",
           prog);
  return 2;
}
