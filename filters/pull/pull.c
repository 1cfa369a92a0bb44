/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * nbdkit r3map-pull filter: a managed mount.  A local store in front of
 * a remote one, in one of two topologies:
 *
 *   source=URI   the remote is an NBD server reached with libnbd; the
 *                plugin below is the local store (a leecher, or a
 *                managed mount of any NBD server);
 *   cache=FILE   the plugin below is the remote (a slow backend); the
 *                local store is FILE.
 *
 * Everything that moves data is the engine in lib/pull.c; this file
 * turns parameters into its configuration, gives it its two stores,
 * and maps requests and errors.
 *
 * The engine and its threads start in .after_fork, as soon as nbdkit
 * is ready, not at the first client.  They talk to the plugin below
 * through one shared context opened there (nbdkit_next_context_open),
 * not through the clients' contexts, so requests from every connection
 * and from the background threads meet in one chunk map: the filter is
 * safe for multi-conn whatever the plugin is.  The plugin below is
 * called from several threads at once and must allow it (the parallel
 * thread model, as r3map's plugins and nbdkit's file, memory, nbd and
 * S3 plugins do).
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include <glib.h>
#include <libnbd.h>

#include "leech.h"
#include "parse.h"
#include "pull.h"
#include "seeder.h"
#include "store.h"

#define MIN_CHUNK_SIZE (UINT64_C (4) << 10)
#define MAX_CHUNK_SIZE (UINT64_C (64) << 20)
#define DEFAULT_CHUNK_SIZE (UINT64_C (64) << 10)
#define MAX_WORKERS 64

/* Configuration. */
static char *source;            /* topology a */
static char *cache_file;        /* topology b */
static uint64_t chunk_size = DEFAULT_CHUNK_SIZE;
static uint64_t pull_workers = 4;
static uint64_t pull_nice = 0;
static uint64_t pull_delay_ms = 0;
static char *pull_priority;
static char *pull_hints;
static int push = -1;           /* -1: the topology's default */
static uint64_t push_workers = 2;
static uint64_t push_interval_ms = 5000;
static uint64_t retries = 3;
static uint64_t retry_delay_ms = 200;
static char *state_file;
static char *status_file;
static char *identity;
/* A leecher (source= is an r3map-track seeder): see leech.h. */
static int wait_finalize = -1;  /* -1 auto, 0 off, 1 on */
static uint64_t precopy_interval_ms = 500;
static uint64_t converge_threshold = 64;
static uint64_t converge_rounds = 2;
static uint64_t max_rounds = 30;
static bool precopy = true;
static uint64_t source_timeout_ms = 30000;
static bool leeching;           /* decided in .get_ready */

/* Run time, from .after_fork to .cleanup. */
static nbdkit_next *below;      /* the shared context into the plugin */
static struct r3map_store *local;
static struct r3map_pull *pull;
static struct r3map_leech *leech;
static bool writable;

static void
pull_unload (void)
{
  free (source);
  free (cache_file);
  free (pull_priority);
  free (pull_hints);
  free (state_file);
  free (status_file);
  free (identity);
}

static int
config_error (GError *error)
{
  nbdkit_error ("%s", error->message);
  g_error_free (error);
  return -1;
}

static int
set_string (char **where, const char *key, const char *value)
{
  if (*where) {
    nbdkit_error ("%s=%s: %s= was given twice", key, value, key);
    return -1;
  }
  *where = strdup (value);
  if (*where == NULL) {
    nbdkit_error ("strdup: %m");
    return -1;
  }
  return 0;
}

static int
pull_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
             const char *key, const char *value)
{
  GError *error = NULL;
  bool b;

  if (strcmp (key, "source") == 0)
    return set_string (&source, key, value);
  if (strcmp (key, "cache") == 0)
    return set_string (&cache_file, key, value);
  if (strcmp (key, "state") == 0)
    return set_string (&state_file, key, value);
  if (strcmp (key, "status") == 0)
    return set_string (&status_file, key, value);
  if (strcmp (key, "identity") == 0)
    return set_string (&identity, key, value);
  if (strcmp (key, "pull-priority") == 0)
    return set_string (&pull_priority, key, value);
  if (strcmp (key, "pull-hints") == 0)
    return set_string (&pull_hints, key, value);
  if (strcmp (key, "chunk-size") == 0) {
    if (!r3map_parse_size (key, value, &chunk_size, &error))
      return config_error (error);
    if (!r3map_is_power_of_2 (chunk_size) || chunk_size < MIN_CHUNK_SIZE ||
        chunk_size > MAX_CHUNK_SIZE) {
      nbdkit_error ("chunk-size=%s: must be a power of 2 from 4K to 64M",
                    value);
      return -1;
    }
    return 0;
  }
  if (strcmp (key, "pull-workers") == 0)
    return r3map_parse_uint (key, value, 0, MAX_WORKERS, &pull_workers,
                             &error) ? 0 : config_error (error);
  if (strcmp (key, "pull-nice") == 0)
    return r3map_parse_uint (key, value, 0, 19, &pull_nice,
                             &error) ? 0 : config_error (error);
  if (strcmp (key, "push-workers") == 0)
    return r3map_parse_uint (key, value, 1, MAX_WORKERS, &push_workers,
                             &error) ? 0 : config_error (error);
  if (strcmp (key, "retries") == 0)
    return r3map_parse_uint (key, value, 0, 1000, &retries,
                             &error) ? 0 : config_error (error);
  if (strcmp (key, "wait-finalize") == 0) {
    if (strcmp (value, "auto") == 0) {
      wait_finalize = -1;
      return 0;
    }
    if (!r3map_parse_bool (key, value, &b, &error))
      return config_error (error);
    wait_finalize = b;
    return 0;
  }
  if (strcmp (key, "precopy") == 0) {
    if (!r3map_parse_bool (key, value, &b, &error))
      return config_error (error);
    precopy = b;
    return 0;
  }
  if (strcmp (key, "converge-threshold") == 0)
    return r3map_parse_uint (key, value, 0, UINT32_MAX, &converge_threshold,
                             &error) ? 0 : config_error (error);
  if (strcmp (key, "converge-rounds") == 0)
    return r3map_parse_uint (key, value, 1, 1000, &converge_rounds,
                             &error) ? 0 : config_error (error);
  if (strcmp (key, "max-rounds") == 0)
    return r3map_parse_uint (key, value, 1, 100000, &max_rounds,
                             &error) ? 0 : config_error (error);
  if (strcmp (key, "precopy-interval") == 0 ||
      strcmp (key, "source-timeout") == 0 ||
      strcmp (key, "pull-delay") == 0) {
    uint64_t *ms = strcmp (key, "pull-delay") == 0 ? &pull_delay_ms :
      strcmp (key, "source-timeout") == 0 ? &source_timeout_ms :
      &precopy_interval_ms;
    if (!r3map_parse_duration (key, value, ms, &error))
      return config_error (error);
    if (*ms > UINT64_C (86400000)) {
      nbdkit_error ("%s=%s: at most a day", key, value);
      return -1;
    }
    return 0;
  }
  if (strcmp (key, "push") == 0) {
    if (!r3map_parse_bool (key, value, &b, &error))
      return config_error (error);
    push = b;
    return 0;
  }
  if (strcmp (key, "push-interval") == 0 || strcmp (key, "retry-delay") == 0) {
    uint64_t *ms = key[1] == 'u' ? &push_interval_ms : &retry_delay_ms;
    if (!r3map_parse_duration (key, value, ms, &error))
      return config_error (error);
    if (*ms == 0 || *ms > UINT64_C (86400000)) {
      nbdkit_error ("%s=%s: must be more than 0 and at most a day",
                    key, value);
      return -1;
    }
    return 0;
  }
  return next (nxdata, key, value);
}

static int
pull_config_complete (nbdkit_next_config_complete *next,
                      nbdkit_backend *nxdata)
{
  if (source && cache_file) {
    nbdkit_error ("source= and cache= are exclusive: give source=URI to "
                  "pull from an NBD server into the plugin, or cache=FILE "
                  "to pull from the plugin into a file");
    return -1;
  }
  if (!source && !cache_file) {
    nbdkit_error ("source=URI or cache=FILE is required");
    return -1;
  }
  if (source) {
    struct r3map_nbd_uri uri;
    GError *error = NULL;

    if (!r3map_parse_nbd_uri ("source", source, &uri, &error))
      return config_error (error);
    r3map_nbd_uri_clear (&uri);
  }
  if (cache_file && wait_finalize == 1) {
    nbdkit_error ("wait-finalize=on: only with source= (a leecher pulls "
                  "from an r3map-track seeder)");
    return -1;
  }
  if (push == -1)
    push = cache_file != NULL;
  if (identity == NULL) {
    identity = strdup (source ? source : cache_file);
    if (identity == NULL) {
      nbdkit_error ("strdup: %m");
      return -1;
    }
  }
  return next (nxdata);
}

#define pull_config_help \
  "source=<URI>          Pull from this NBD server into the plugin.\n" \
  "cache=<FILE>          Or: pull from the plugin into this file.\n" \
  "chunk-size=<SIZE>     The unit of transfer (power of 2, default 64K).\n" \
  "pull-workers=<N>      Background pull threads (default 4, 0 = none).\n" \
  "pull-nice=<N>         Their nice value, 0-19 (default 0).\n" \
  "pull-delay=<TIME>     They start this long after nbdkit, or a\n" \
  "                      leecher's finalize with precopy=off (0).\n" \
  "pull-priority=<RANGES> Pull these ranges first (eg. 0-64M,-16M).\n" \
  "pull-hints=<FILE>     Pull the ranges listed in FILE first.\n" \
  "push=<BOOL>           Write dirty chunks back (default: off with\n" \
  "                      source=, on with cache=).\n" \
  "push-workers=<N>      Write-back threads (default 2).\n" \
  "push-interval=<TIME>  Write back at least this often (default 5s).\n" \
  "retries=<N>           Retries of a failed remote request (default 3).\n" \
  "retry-delay=<TIME>    First delay between retries (default 200ms).\n" \
  "state=<FILE>          Keep which chunks are local and dirty here.\n" \
  "status=<FILE>         Publish live counters here (r3map status).\n" \
  "identity=<STRING>     Names the remote in the state file.\n" \
  "wait-finalize=<auto|BOOL> Hold clients until the seeder is sealed\n" \
  "                      (default auto: when source= is a seeder).\n" \
  "precopy=<BOOL>        Copy the disk before finalize (default on).\n" \
  "precopy-interval=<TIME> Between pre-copy rounds (default 500ms).\n" \
  "converge-threshold=<N> A small round changes at most N chunks (64).\n" \
  "converge-rounds=<N>   Small rounds in a row to converge (default 2).\n" \
  "max-rounds=<N>        Converge after N rounds anyway (default 30).\n" \
  "source-timeout=<TIME> Source lost this long before finalize: clients\n" \
  "                      get errors (default 30s)."

static int
pull_thread_model (void)
{
  return NBDKIT_THREAD_MODEL_PARALLEL;
}

/* ---- The remote ----------------------------------------------------- */

/* Topology a: a new connection to source=. */
static struct r3map_store *
open_source (void *opaque)
{
  struct nbd_handle *nbd = nbd_create ();
  struct r3map_store *store;

  if (nbd == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  /* source= is the administrator's: its tls-psk-file= and
   * tls-certificates= may name local files. */
  if (nbd_set_uri_allow_local_file (nbd, true) == -1 ||
      /* The engine never looks at a buffer whose read failed, so the
       * zeroing libnbd does before every read (about 8% of the CPU of
       * a pull) is wasted. */
      nbd_set_pread_initialize (nbd, false) == -1 ||
      r3map_nbd_connect_uri (nbd, source, source_timeout_ms) == -1) {
    int err = errno;
    if (opaque) {               /* the first connection: say why */
      if (err == ETIMEDOUT)
        nbdkit_error ("source=%s: no answer within %" PRIu64 " ms "
                      "(source-timeout=)", source, source_timeout_ms);
      else
        nbdkit_error ("source=%s: connect: %s", source, r3map_nbd_error ());
    }
    nbd_close (nbd);
    errno = err;
    return NULL;
  }
  store = r3map_store_new_nbd (nbd, true);
  if (store == NULL) {
    int err = errno;
    if (opaque)
      nbdkit_error ("source=%s: %s", source, nbd_get_error ());
    nbd_close (nbd);
    errno = err;
  }
  return store;
}

/* Topology b: the plugin below, through the shared context. */
static struct r3map_store *
open_below (void *opaque)
{
  return r3map_store_new_next (below);
}

/* Topology b: the cache file, as large as the remote.  If the state
 * says nothing is local (FRESH), its old contents are dropped. */
static struct r3map_store *
open_cache (uint64_t size, uint64_t *old_size)
{
  struct r3map_store *store;
  struct stat st;
  int fd;

  fd = open (cache_file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1 || fstat (fd, &st) == -1) {
    nbdkit_error ("cache=%s: %m", cache_file);
    goto fail;
  }
  if (!S_ISREG (st.st_mode)) {
    nbdkit_error ("cache=%s: not a regular file", cache_file);
    goto fail;
  }
  *old_size = st.st_size;
  if ((uint64_t) st.st_size < size && ftruncate (fd, size) == -1) {
    nbdkit_error ("cache=%s: cannot extend to %" PRIu64 " bytes: %m",
                  cache_file, size);
    goto fail;
  }
  store = r3map_store_new_fd (fd, true);
  if (store == NULL) {
    nbdkit_error ("cache=%s: %m", cache_file);
    goto fail;
  }
  return store;

 fail:
  if (fd >= 0)
    close (fd);
  return NULL;
}

/* Before nbdkit forks (into the background, or to run --run's
 * command), so that a start that cannot work fails with nbdkit's exit
 * status: the source must answer, and a state file must be this
 * disk's.  The cache file must be usable. */
static int
pull_get_ready (int thread_model)
{
  GError *error = NULL;
  uint64_t size = 0;

  if (source) {
    struct r3map_store *probe = open_source ((void *) 1);
    if (probe == NULL)
      return -1;
    size = probe->size;
    r3map_store_close (probe);
  }
  if (state_file &&
      !r3map_pull_state_check (state_file, size, chunk_size, identity, &error))
    return config_error (error);
  if (source && wait_finalize != 0) {
    /* Is the source a seeder?  Then this is a leecher. */
    struct r3map_seeder_info info;

    r3map_seeder_set_timeout (source_timeout_ms);

    if (r3map_seeder_info (source, &info, NULL, &error))
      leeching = true;
    else if (wait_finalize == 1) {
      nbdkit_error ("wait-finalize=on: source=%s is not an r3map-track "
                    "seeder: %s", source, error->message);
      g_error_free (error);
      return -1;
    }
    else {
      nbdkit_debug ("r3map-pull: source is not a seeder: %s",
                    error->message);
      g_clear_error (&error);
    }
  }
  if (cache_file) {
    int fd = open (cache_file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd == -1) {
      nbdkit_error ("cache=%s: %m", cache_file);
      return -1;
    }
    close (fd);
  }
  return 0;
}

static int
pull_after_fork (nbdkit_backend *backend)
{
  struct r3map_pull_params p = {
    .chunk_size = chunk_size,
    .pull_workers = pull_workers,
    .pull_nice = (int) pull_nice,
    .pull_delay_ms = pull_delay_ms,
    .push_workers = push_workers,
    .push = push,
    .push_interval_ms = push_interval_ms,
    .retries = retries,
    .retry_delay_ms = retry_delay_ms,
    .backoff_max_ms = MAX (retry_delay_ms, 5000),
    .checkpoint_ms = 1000,
    .priority = pull_priority,
    .hints_file = pull_hints,
    .state_file = state_file,
    .status_file = status_file,
    .identity = identity,
  };
  struct r3map_pull_remote remote = { 0 };
  struct r3map_store *first = NULL;
  GError *error = NULL;
  uint64_t size, old_size = 0;

  below = nbdkit_next_context_open (backend, 0, "", 1);
  if (below == NULL) {
    nbdkit_error ("cannot open a context into the plugin");
    return -1;
  }
  if (below->prepare (below) == -1)
    return -1;

  if (source) {
    /* The plugin below is the local store: it must take writes. */
    if (below->can_write (below) != 1) {
      nbdkit_error ("source=%s: the plugin below is read-only, so it "
                    "cannot hold pulled chunks", source);
      return -1;
    }
    local = r3map_store_new_next (below);
    if (local == NULL) {
      nbdkit_error ("the plugin below: cannot get its size: %m");
      return -1;
    }
    first = open_source ((void *) 1);
    if (first == NULL)
      return -1;
    size = first->size;
    remote.open = open_source;
    /* A flush on one connection covers the others only if the server
     * says so. */
    remote.multi_conn = false;
    if (local->size != size) {
      nbdkit_error ("source=%s has %" PRIu64 " bytes but the plugin below "
                    "has %" PRIu64 ": they must be the same size",
                    source, size, local->size);
      r3map_store_close (first);
      return -1;
    }
    writable = true;
  }
  else {
    int64_t s = below->get_size (below);

    if (s == -1)
      return -1;
    size = s;
    writable = !push || below->can_write (below) == 1;
    local = open_cache (size, &old_size);
    if (local == NULL)
      return -1;
    remote.open = open_below;
    remote.multi_conn = true;   /* one context */
  }

  pull = r3map_pull_new (&p, size, local, &remote, first, &error);
  if (pull == NULL)
    return config_error (error);

  if (cache_file) {
    if (r3map_pull_fresh (pull)) {
      /* Nothing in the cache can be trusted: drop it, sparsely. */
      int fd = open (cache_file, O_RDWR | O_CLOEXEC);
      if (fd == -1 || ftruncate (fd, 0) == -1 || ftruncate (fd, size) == -1) {
        nbdkit_error ("cache=%s: %m", cache_file);
        if (fd >= 0)
          close (fd);
        return -1;
      }
      close (fd);
    }
    else if (old_size < size) {
      nbdkit_error ("cache=%s has %" PRIu64 " bytes but state=%s records "
                    "chunks of a %" PRIu64 "-byte disk in it: is it the "
                    "cache of this state file?",
                    cache_file, old_size, state_file, size);
      return -1;
    }
  }

  if (leeching) {
    struct r3map_leech_params lp = {
      .source = source,
      .chunk_size = chunk_size,
      .interval_ms = precopy_interval_ms,
      .threshold = converge_threshold,
      .converge_rounds = converge_rounds,
      .max_rounds = max_rounds,
      .precopy = precopy,
      .source_timeout_ms = source_timeout_ms,
    };
    /* Before the engine fetches anything: see leech.h. */
    leech = r3map_leech_new (&lp, pull, &error);
    if (leech == NULL)
      return config_error (error);
  }
  if (!r3map_pull_start (pull, &error))
    return config_error (error);
  if (leech && !r3map_leech_start (leech, &error))
    return config_error (error);
  nbdkit_debug ("r3map-pull: %" PRIu64 " bytes, chunk %" PRIu64
                ", %s, push %s", size, chunk_size,
                source ? "source=" : "cache=", push ? "on" : "off");
  return 0;
}

static void
pull_cleanup (nbdkit_backend *backend)
{
  r3map_leech_free (leech);
  leech = NULL;
  r3map_pull_free (pull);
  pull = NULL;
  r3map_store_close (local);
  local = NULL;
  if (below) {
    below->finalize (below);
    nbdkit_next_context_close (below);
    below = NULL;
  }
}

/* ---- Connections ---------------------------------------------------- */

static void *
pull_open (nbdkit_next_open *next, nbdkit_context *context,
           int readonly, const char *exportname, int is_tls)
{
  /* The client's own context into the plugin is opened (nbdkit asks
   * for it) but the data goes through the shared one. */
  if (next (context, readonly, exportname) == -1)
    return NULL;
  if (pull == NULL) {
    nbdkit_error ("r3map-pull is not ready");
    return NULL;
  }
  return NBDKIT_HANDLE_NOT_NEEDED;
}

static int64_t
pull_get_size (nbdkit_next *next, void *handle)
{
  return r3map_pull_size (pull);
}

static int
pull_can_write (nbdkit_next *next, void *handle)
{
  return writable;
}

static int
pull_can_flush (nbdkit_next *next, void *handle)
{
  return 1;
}

static int
pull_can_fua (nbdkit_next *next, void *handle)
{
  return NBDKIT_FUA_EMULATE;    /* a flush after the write */
}

static int
pull_can_trim (nbdkit_next *next, void *handle)
{
  return 0;
}

static int
pull_can_zero (nbdkit_next *next, void *handle)
{
  return NBDKIT_ZERO_EMULATE;   /* written as zeros, chunk by chunk */
}

static int
pull_can_fast_zero (nbdkit_next *next, void *handle)
{
  return 0;
}

static int
pull_can_extents (nbdkit_next *next, void *handle)
{
  return 0;                     /* the plugin's would not see our writes */
}

static int
pull_can_multi_conn (nbdkit_next *next, void *handle)
{
  return 1;                     /* one engine for every connection */
}

static int
pull_can_cache (nbdkit_next *next, void *handle)
{
  return NBDKIT_CACHE_NATIVE;   /* NBD_CMD_CACHE pulls the range now */
}

static int
pull_is_rotational (nbdkit_next *next, void *handle)
{
  return 0;
}

static int
pull_block_size (nbdkit_next *next, void *handle,
                 uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
  *minimum = 1;
  *preferred = MIN (MAX (chunk_size, 4096), UINT64_C (32) << 20);
  *maximum = 0xffffffff;
  return 0;
}

static int
fail (const char *what, uint32_t count, uint64_t offset, int *err)
{
  *err = errno ? errno : EIO;
  nbdkit_error ("%s: %" PRIu32 " bytes at %" PRIu64 ": %s", what, count,
                offset, strerror (*err));
  return -1;
}

/* A leecher holds every request until finalize.  It looks every
 * HELD_SLICE_MS whether nbdkit is shutting down (or the client went
 * away): nbdkit waits for the requests in flight before it exits, and
 * a held request would otherwise keep it running until finalize. */
#define HELD_SLICE_MS 200

static int
held (const char *what, int *err)
{
  char why[512];

  if (leech == NULL)
    return 0;
  while (r3map_leech_wait (leech, HELD_SLICE_MS) == -1) {
    if (errno != ETIMEDOUT)
      goto failed;
    /* Returns at once; -1 (ESHUTDOWN) if nbdkit is quitting or the
     * connection is closing. */
    if (nbdkit_nanosleep (0, 0) == -1) {
      *err = ESHUTDOWN;
      return -1;
    }
  }
  return 0;

 failed:
  *err = errno;
  r3map_leech_why (leech, why, sizeof why);
  nbdkit_error ("%s: %s", what, why);
  return -1;
}

static int
pull_pread (nbdkit_next *next, void *handle, void *buf, uint32_t count,
            uint64_t offset, uint32_t flags, int *err)
{
  if (held ("pread", err) == -1)
    return -1;
  if (r3map_pull_pread (pull, buf, count, offset) == -1)
    return fail ("pread", count, offset, err);
  return 0;
}

static int
pull_pwrite (nbdkit_next *next, void *handle, const void *buf,
             uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  if (held ("pwrite", err) == -1)
    return -1;
  if (r3map_pull_pwrite (pull, buf, count, offset) == -1)
    return fail ("pwrite", count, offset, err);
  return 0;
}

static int
pull_flush (nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  if (held ("flush", err) == -1)
    return -1;
  if (r3map_pull_flush (pull) == -1)
    return fail ("flush", 0, 0, err);
  return 0;
}

static int
pull_cache (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
            uint32_t flags, int *err)
{
  if (held ("cache", err) == -1)
    return -1;
  if (r3map_pull_prefetch (pull, count, offset) == -1)
    return fail ("cache", count, offset, err);
  return 0;
}

static struct nbdkit_filter filter = {
  .name              = "r3map-pull",
  .longname          = "r3map pull filter (managed mounts)",
  .unload            = pull_unload,
  .config            = pull_config,
  .config_complete   = pull_config_complete,
  .config_help       = pull_config_help,
  .thread_model      = pull_thread_model,
  .get_ready         = pull_get_ready,
  .after_fork        = pull_after_fork,
  .cleanup           = pull_cleanup,
  .open              = pull_open,
  .get_size          = pull_get_size,
  .block_size        = pull_block_size,
  .can_write         = pull_can_write,
  .can_flush         = pull_can_flush,
  .can_fua           = pull_can_fua,
  .can_trim          = pull_can_trim,
  .can_zero          = pull_can_zero,
  .can_fast_zero     = pull_can_fast_zero,
  .can_extents       = pull_can_extents,
  .can_multi_conn    = pull_can_multi_conn,
  .can_cache         = pull_can_cache,
  .is_rotational     = pull_is_rotational,
  .pread             = pull_pread,
  .pwrite            = pull_pwrite,
  .flush             = pull_flush,
  .cache             = pull_cache,
};

NBDKIT_REGISTER_FILTER (filter)
