/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * nbdkit r3map-redis plugin: a disk stored in Redis as fixed-size chunk
 * keys.
 *
 * Chunk N of the disk is the binary string key PREFIX:%016x (N in hex).
 * A key that does not exist reads as zeros, and so do the bytes past
 * the end of a short string.  Whole-chunk writes are SET, partial ones
 * SETRANGE; trimming or zeroing whole chunks deletes their keys (DEL of
 * many keys at once), partial ones are SETRANGE of zeros.  Block status
 * asks EXISTS of every chunk.
 *
 * Concurrency.  Redis runs each command atomically, and SETRANGE
 * changes only the bytes it is given, so concurrent unaligned writes to
 * one chunk need no read-modify-write and no lock here.  Every command
 * of a request goes, pipelined, on one connection taken from a pool
 * shared by all NBD connections; a pool connection that failed is
 * dropped and made again at its next use.
 *
 * Durability.  Redis acknowledges a write once it is in the server's
 * memory.  Whether it survives a crash of the server depends on the
 * server's persistence settings, which no client command changes:
 * flush therefore has nothing to send.  Only with appendonly yes and
 * appendfsync always is every acknowledged write on the server's disk,
 * so by default (durable=true) the plugin refuses to start against a
 * server configured otherwise (see the man page).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

/* Requests run in parallel, on every connection: see Concurrency. */
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

#include <glib.h>
#include <hiredis.h>

#include "parse.h"

#define MIN_CHUNK_SIZE (UINT64_C (4) << 10)
#define MAX_CHUNK_SIZE (UINT64_C (16) << 20)
#define DEFAULT_CHUNK_SIZE (UINT64_C (64) << 10)
#define DEFAULT_PREFIX "r3map"
#define DEFAULT_CONNECTIONS 4
#define DEFAULT_TIMEOUT_MS 5000

/* Keys per DEL command when trimming many chunks. */
#define DEL_BATCH 512

/* Chunks asked about by one block status request. */
#define EXTENTS_MAX_CHUNKS 8192

/* Configuration, set by .config and fixed from .config_complete on. */
static char *server;
static char *host;              /* TCP: host and port parsed from server= */
static int port;
static bool is_unix;
static uint64_t size;
static char *prefix;
static uint64_t chunk_size = DEFAULT_CHUNK_SIZE;
static uint64_t db;
static char *password;          /* never logged */
static uint64_t nconns = DEFAULT_CONNECTIONS;
static uint64_t timeout_ms = DEFAULT_TIMEOUT_MS;
static bool durable = true;     /* require a server that persists acks */

/* Derived at .config_complete. */
static unsigned chunk_shift;
static char *zeros;             /* chunk_size zero bytes */

/* The connection pool.  A slot with c == NULL connects at its next
 * use; free slots are a stack under pool_lock. */
struct conn {
  redisContext *c;
  bool fresh;                   /* connected for the current request */
};
static struct conn *pool;
static size_t *free_slots;
static size_t nfree;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cond = PTHREAD_COND_INITIALIZER;

static void
redis_unload (void)
{
  size_t i;

  if (pool) {
    for (i = 0; i < nconns; ++i)
      if (pool[i].c)
        redisFree (pool[i].c);
  }
  free (pool);
  free (free_slots);
  free (zeros);
  free (server);
  free (host);
  free (prefix);
  if (password) {
    memset (password, 0, strlen (password));
    free (password);
  }
}

/* Report a parse failure as the one error line of a failed start. */
static int
config_error (GError *error)
{
  nbdkit_error ("%s", error->message);
  g_error_free (error);
  return -1;
}

/* server=HOST[:PORT], [IPV6]:PORT or /UNIX/SOCKET. */
static int
parse_server (const char *value)
{
  const char *colon;
  uint64_t p = 6379;

  free (server);
  free (host);
  host = NULL;
  server = strdup (value);
  if (server == NULL) {
    nbdkit_error ("server=%s: %m", value);
    return -1;
  }
  is_unix = value[0] == '/';
  if (is_unix)
    return 0;

  if (value[0] == '[') {
    const char *end = strchr (value, ']');
    if (end == NULL || (end[1] != '\0' && end[1] != ':'))
      goto bad;
    host = strndup (value + 1, end - value - 1);
    colon = end[1] == ':' ? end + 1 : NULL;
  }
  else {
    colon = strrchr (value, ':');
    if (colon && strchr (value, ':') != colon)
      colon = NULL;             /* a bare IPv6 address */
    host = colon ? strndup (value, colon - value) : strdup (value);
  }
  if (host == NULL) {
    nbdkit_error ("server=%s: %m", value);
    return -1;
  }
  if (host[0] == '\0')
    goto bad;
  if (colon && !r3map_parse_uint ("server", colon + 1, 1, 65535, &p, NULL))
    goto bad;
  port = p;
  return 0;

 bad:
  nbdkit_error ("server=%s: not HOST[:PORT] or the path of a Unix socket",
                value);
  return -1;
}

static int
read_password (const char *file)
{
  g_autofree char *text = NULL;
  g_autoptr (GError) error = NULL;
  size_t len;

  if (!g_file_get_contents (file, &text, &len, &error)) {
    nbdkit_error ("password-file=%s: %s", file, error->message);
    return -1;
  }
  while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
    text[--len] = '\0';
  if (len == 0 || strlen (text) != len) {
    memset (text, 0, len);
    nbdkit_error ("password-file=%s: empty, or not a single line", file);
    return -1;
  }
  if (password) {
    memset (password, 0, strlen (password));
    free (password);
  }
  password = strdup (text);
  memset (text, 0, len);
  if (password == NULL) {
    nbdkit_error ("password-file=%s: %m", file);
    return -1;
  }
  return 0;
}

static int
redis_config (const char *key, const char *value)
{
  GError *error = NULL;

  if (strcmp (key, "server") == 0)
    return parse_server (value);
  else if (strcmp (key, "size") == 0) {
    if (!r3map_parse_size (key, value, &size, &error))
      return config_error (error);
    if (size == 0) {
      nbdkit_error ("size=%s: the disk must not be empty", value);
      return -1;
    }
    if (size > INT64_MAX) {
      nbdkit_error ("size=%s: size too large", value);
      return -1;
    }
  }
  else if (strcmp (key, "key") == 0) {
    if (value[0] == '\0') {
      nbdkit_error ("key=: the key prefix must not be empty");
      return -1;
    }
    free (prefix);
    prefix = strdup (value);
    if (prefix == NULL) {
      nbdkit_error ("key=%s: %m", value);
      return -1;
    }
  }
  else if (strcmp (key, "chunk-size") == 0) {
    if (!r3map_parse_size (key, value, &chunk_size, &error))
      return config_error (error);
    if (!r3map_is_power_of_2 (chunk_size) ||
        chunk_size < MIN_CHUNK_SIZE || chunk_size > MAX_CHUNK_SIZE) {
      nbdkit_error ("chunk-size=%s: must be a power of 2 from 4K to 16M",
                    value);
      return -1;
    }
  }
  else if (strcmp (key, "db") == 0) {
    if (!r3map_parse_uint (key, value, 0, INT32_MAX, &db, &error))
      return config_error (error);
  }
  else if (strcmp (key, "password-file") == 0)
    return read_password (value);
  else if (strcmp (key, "connections") == 0) {
    if (!r3map_parse_uint (key, value, 1, 1024, &nconns, &error))
      return config_error (error);
  }
  else if (strcmp (key, "durable") == 0) {
    if (!r3map_parse_bool (key, value, &durable, &error))
      return config_error (error);
  }
  else if (strcmp (key, "timeout") == 0) {
    if (!r3map_parse_duration (key, value, &timeout_ms, &error))
      return config_error (error);
    if (timeout_ms == 0 || timeout_ms > UINT64_C (24) * 3600 * 1000) {
      nbdkit_error ("timeout=%s: must be from 1ms to 1d", value);
      return -1;
    }
  }
  else {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

static int
redis_config_complete (void)
{
  const char *env;
  size_t i;

  if (server == NULL) {
    nbdkit_error ("server=: required parameter missing (HOST[:PORT] or "
                  "the path of a Unix socket)");
    return -1;
  }
  if (size == 0) {
    nbdkit_error ("size=: required parameter missing (the disk size)");
    return -1;
  }
  if (prefix == NULL) {
    prefix = strdup (DEFAULT_PREFIX);
    if (prefix == NULL) {
      nbdkit_error ("key=: %m");
      return -1;
    }
  }
  if (password == NULL && (env = getenv ("REDISCLI_AUTH")) && *env) {
    password = strdup (env);
    if (password == NULL) {
      nbdkit_error ("REDISCLI_AUTH: %m");
      return -1;
    }
  }

  chunk_shift = __builtin_ctzll (chunk_size);
  zeros = calloc (1, chunk_size);
  pool = calloc (nconns, sizeof *pool);
  free_slots = calloc (nconns, sizeof *free_slots);
  if (zeros == NULL || pool == NULL || free_slots == NULL) {
    nbdkit_error ("server=%s: %m", server);
    return -1;
  }
  for (i = 0; i < nconns; ++i)
    free_slots[i] = nconns - 1 - i;
  nfree = nconns;
  nbdkit_debug ("server=%s key=%s size=%" PRIu64 " chunk-size=%" PRIu64
                " db=%" PRIu64 " connections=%" PRIu64 " timeout=%" PRIu64
                "ms auth=%s", server, prefix, size, chunk_size, db, nconns,
                timeout_ms, password ? "yes" : "no");
  return 0;
}

#define redis_config_help \
  "server=<HOST:PORT|SOCKET> (required) The Redis server.\n" \
  "size=<SIZE>         (required) The disk size.\n" \
  "key=<PREFIX>        The prefix of the chunk keys (default r3map).\n" \
  "chunk-size=<SIZE>   The chunk size (power of 2, 4K-16M, default 64K).\n" \
  "db=<N>              The Redis database number (default 0).\n" \
  "password-file=<FILE> A file holding the Redis password.\n" \
  "connections=<N>     Connections to the server (default 4).\n" \
  "durable=<BOOL>      Require appendonly yes, appendfsync always (default true).\n" \
  "timeout=<DURATION>  Timeout of each command (default 5s)."

static void
redis_dump_plugin (void)
{
  printf ("r3map_version=%s\n", PACKAGE_VERSION);
  printf ("r3map_redis_parameters=server,size,key,chunk-size,db,"
          "password-file,connections,timeout,durable\n");
  printf ("r3map_redis_default_chunk_size=%" PRIu64 "\n", DEFAULT_CHUNK_SIZE);
  printf ("r3map_redis_chunk_size_range=%" PRIu64 "-%" PRIu64 "\n",
          MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
  printf ("r3map_redis_hiredis_version=%d.%d.%d\n",
          HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
}

/* Connect, authenticate, select the database and ping.  On failure returns
 * NULL with the reason in ERR. */
static redisContext *
connect_one (char *err, size_t errlen)
{
  struct timeval tv = {
    .tv_sec = timeout_ms / 1000,
    .tv_usec = (timeout_ms % 1000) * 1000,
  };
  redisContext *c;
  redisReply *r;

  if (is_unix)
    c = redisConnectUnixWithTimeout (server, tv);
  else
    c = redisConnectWithTimeout (host, port, tv);
  if (c == NULL) {
    snprintf (err, errlen, "out of memory");
    return NULL;
  }
  if (c->err) {
    snprintf (err, errlen, "%s", c->errstr);
    goto fail;
  }
  if (redisSetTimeout (c, tv) != REDIS_OK) {
    snprintf (err, errlen, "cannot set the timeout: %s", c->errstr);
    goto fail;
  }
  if (password) {
    const char *argv[] = { "AUTH", password };
    size_t lens[] = { 4, strlen (password) };

    r = redisCommandArgv (c, 2, argv, lens);
    if (r == NULL) {
      snprintf (err, errlen, "AUTH: %s", c->errstr);
      goto fail;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      snprintf (err, errlen, "AUTH: %s", r->str);
      freeReplyObject (r);
      goto fail;
    }
    freeReplyObject (r);
  }
  if (db != 0) {
    char n[32];
    const char *argv[] = { "SELECT", n };
    size_t lens[] = { 6, 0 };

    lens[1] = snprintf (n, sizeof n, "%" PRIu64, db);
    r = redisCommandArgv (c, 2, argv, lens);
    if (r == NULL) {
      snprintf (err, errlen, "SELECT %s: %s", n, c->errstr);
      goto fail;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      snprintf (err, errlen, "db=%s: %s", n, r->str);
      freeReplyObject (r);
      goto fail;
    }
    freeReplyObject (r);
  }
  /* Check that the server answers commands (it may want a password
   * that was not given, or be loading its data). */
  r = redisCommand (c, "PING");
  if (r == NULL) {
    snprintf (err, errlen, "PING: %s", c->errstr);
    goto fail;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    snprintf (err, errlen, "%s", r->str);
    freeReplyObject (r);
    goto fail;
  }
  freeReplyObject (r);
  return c;

 fail:
  redisFree (c);
  return NULL;
}

/* Take a connection from the pool, connected.  NULL (with the reason
 * in ERR) if the server cannot be reached. */
static struct conn *
pool_get (char *err, size_t errlen)
{
  struct conn *cn;

  pthread_mutex_lock (&pool_lock);
  while (nfree == 0)
    pthread_cond_wait (&pool_cond, &pool_lock);
  cn = &pool[free_slots[--nfree]];
  pthread_mutex_unlock (&pool_lock);

  cn->fresh = false;
  if (cn->c == NULL) {
    cn->c = connect_one (err, errlen);
    cn->fresh = true;
  }
  if (cn->c == NULL) {
    pthread_mutex_lock (&pool_lock);
    free_slots[nfree++] = cn - pool;
    pthread_cond_signal (&pool_cond);
    pthread_mutex_unlock (&pool_lock);
    return NULL;
  }
  return cn;
}

/* Give a connection back; a broken one is closed, to be made again at
 * its next use. */
static void
pool_put (struct conn *cn, bool broken)
{
  if (broken && cn->c) {
    redisFree (cn->c);
    cn->c = NULL;
  }
  pthread_mutex_lock (&pool_lock);
  free_slots[nfree++] = cn - pool;
  pthread_cond_signal (&pool_cond);
  pthread_mutex_unlock (&pool_lock);
}

/* CONFIG GET NAME on C into VALUE.  On failure returns -1 with the
 * reason in ERR. */
static int
config_get (redisContext *c, const char *name, char *value, size_t len,
            char *err, size_t errlen)
{
  const char *argv[] = { "CONFIG", "GET", name };
  size_t lens[] = { 6, 3, strlen (name) };
  redisReply *r = redisCommandArgv (c, 3, argv, lens);
  int ret = -1;

  if (r == NULL)
    snprintf (err, errlen, "CONFIG GET %s: %s", name, c->errstr);
  else if (r->type == REDIS_REPLY_ERROR)
    snprintf (err, errlen, "CONFIG GET %s: %s", name, r->str);
  else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
           r->element[1]->type != REDIS_REPLY_STRING)
    snprintf (err, errlen, "CONFIG GET %s: unexpected answer", name);
  else {
    snprintf (value, len, "%s", r->element[1]->str);
    ret = 0;
  }
  if (r)
    freeReplyObject (r);
  return ret;
}

/* durable=true: a write Redis acknowledged must survive a crash of the
 * server, which only appendonly yes with appendfsync always gives
 * (Redis then writes and fsyncs its append-only file before it sends
 * the replies of a batch of commands). */
static int
check_durable (redisContext *c)
{
  char aof[32], fsync[32], err[256];

  if (config_get (c, "appendonly", aof, sizeof aof, err, sizeof err) == -1 ||
      config_get (c, "appendfsync", fsync, sizeof fsync,
                  err, sizeof err) == -1) {
    nbdkit_error ("durable=true: server=%s: cannot read the server's "
                  "persistence settings (%s): give durable=false to run "
                  "without the guarantee", server, err);
    return -1;
  }
  if (strcmp (aof, "yes") != 0 || strcmp (fsync, "always") != 0) {
    nbdkit_error ("durable=true: server=%s has appendonly %s, appendfsync "
                  "%s: writes it acknowledges may be lost if it stops; "
                  "set appendonly yes and appendfsync always there, or "
                  "give durable=false", server, aof, fsync);
    return -1;
  }
  return 0;
}

/* Connect once before serving, so that a server that cannot be used
 * is a clear error at start and not the failure of the first request. */
static int
redis_get_ready (void)
{
  char err[256];
  struct conn *cn = pool_get (err, sizeof err);
  int ret = 0;

  if (cn == NULL) {
    nbdkit_error ("server=%s: cannot connect: %s", server, err);
    return -1;
  }
  if (durable)
    ret = check_durable (cn->c);
  pool_put (cn, false);
  return ret;
}

static void *
redis_open (int readonly)
{
  return NBDKIT_HANDLE_NOT_NEEDED;
}

static int64_t
redis_get_size (void *handle)
{
  return size;
}

static int
redis_can_multi_conn (void *handle)
{
  return 1;
}

static int
redis_can_trim (void *handle)
{
  return 1;
}

static int
redis_can_zero (void *handle)
{
  return 1;
}

static int
redis_can_flush (void *handle)
{
  return 1;
}

static int
redis_can_fua (void *handle)
{
  return NBDKIT_FUA_NONE;
}

static int
redis_can_extents (void *handle)
{
  return 1;
}

/* A request: COUNT bytes at OFFSET, cut at chunk boundaries into
 * pieces.  Piece I is in chunk FIRST + I. */
struct request {
  uint64_t offset, count, first;
  char *rbuf;                   /* pread */
  const char *wbuf;             /* pwrite */
  GArray *zcmds;                /* zero/trim: struct zcmd */
  uint64_t *exists;             /* extents: per chunk, 0 or 1 */
};

static uint64_t
npieces (const struct request *rq)
{
  return ((rq->offset + rq->count - 1) >> chunk_shift) - rq->first + 1;
}

static void
piece (const struct request *rq, uint64_t i, uint64_t *chunk,
       uint64_t *off, uint64_t *n, uint64_t *bufpos)
{
  uint64_t c = rq->first + i;
  uint64_t start = MAX (rq->offset, c << chunk_shift);
  uint64_t end = MIN (rq->offset + rq->count, (c + 1) << chunk_shift);

  *chunk = c;
  *off = start - (c << chunk_shift);
  *n = end - start;
  *bufpos = start - rq->offset;
}

#define KEY_MAX 1024

static size_t
key_name (uint64_t chunk, char *key, size_t len)
{
  int r = snprintf (key, len, "%s:%016" PRIx64, prefix, chunk);
  return MIN ((size_t) r, len - 1);
}

/* Append command I of the request; REDIS_OK or REDIS_ERR. */
typedef int (*append_fn) (redisContext *c, struct request *rq, uint64_t i);
/* Take the (non-error) reply to command I; -1 if it is not the
 * expected kind. */
typedef int (*reply_fn) (redisReply *r, struct request *rq, uint64_t i);

/* Run NCMDS commands pipelined on one pool connection.  A connection
 * that was already open and fails without timing out (the server was
 * restarted meanwhile) is made again and the request sent once more:
 * every command used here can be repeated harmlessly.  Errors are
 * reported, with errno set to EIO. */
static int
execute (const char *what, struct request *rq, uint64_t ncmds,
         append_fn append, reply_fn take)
{
  char err[512];
  int attempt;

  for (attempt = 0; ; ++attempt) {
    struct conn *cn = pool_get (err, sizeof err);
    char *reply_error = NULL;
    bool fresh, timed_out;
    uint64_t i;

    if (cn == NULL) {
      nbdkit_error ("%s: server=%s: cannot connect: %s", what, server, err);
      errno = EIO;
      return -1;
    }
    for (i = 0; i < ncmds; ++i)
      if (append (cn->c, rq, i) != REDIS_OK)
        goto broken;
    for (i = 0; i < ncmds; ++i) {
      void *v = NULL;
      redisReply *r;

      if (redisGetReply (cn->c, &v) != REDIS_OK || v == NULL) {
        free (reply_error);
        goto broken;
      }
      r = v;
      if (r->type == REDIS_REPLY_ERROR) {
        if (reply_error == NULL)
          reply_error = strndup (r->str, r->len);
      }
      else if (take (r, rq, i) == -1 && reply_error == NULL)
        reply_error = strdup ("unexpected reply from the server");
      freeReplyObject (r);
    }
    pool_put (cn, false);
    if (reply_error) {
      nbdkit_error ("%s: server=%s: %s", what, server, reply_error);
      free (reply_error);
      errno = EIO;
      return -1;
    }
    return 0;

  broken:
    timed_out = errno == EAGAIN || errno == EWOULDBLOCK;
    if (timed_out)
      snprintf (err, sizeof err, "no reply within the timeout");
    else
      snprintf (err, sizeof err, "%s",
                cn->c->errstr[0] ? cn->c->errstr : "connection lost");
    fresh = cn->fresh;
    pool_put (cn, true);
    if (fresh || timed_out || attempt > 0) {
      nbdkit_error ("%s: server=%s: %s", what, server, err);
      errno = EIO;
      return -1;
    }
    nbdkit_debug ("%s: server=%s: %s: reconnecting", what, server, err);
  }
}

static int
append_getrange (redisContext *c, struct request *rq, uint64_t i)
{
  uint64_t chunk, off, n, pos;
  char key[KEY_MAX], a[24], b[24];
  const char *argv[4] = { "GETRANGE", key, a, b };
  size_t lens[4] = { 8 };

  piece (rq, i, &chunk, &off, &n, &pos);
  lens[1] = key_name (chunk, key, sizeof key);
  lens[2] = snprintf (a, sizeof a, "%" PRIu64, off);
  lens[3] = snprintf (b, sizeof b, "%" PRIu64, off + n - 1);
  return redisAppendCommandArgv (c, 4, argv, lens);
}

static int
take_getrange (redisReply *r, struct request *rq, uint64_t i)
{
  uint64_t chunk, off, n, pos, got;

  piece (rq, i, &chunk, &off, &n, &pos);
  if (r->type != REDIS_REPLY_STRING)
    return -1;
  /* A missing key, or bytes past the end of a short one: zeros. */
  got = MIN ((uint64_t) r->len, n);
  memcpy (rq->rbuf + pos, r->str, got);
  memset (rq->rbuf + pos + got, 0, n - got);
  return 0;
}

static int
redis_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  struct request rq = {
    .offset = offset, .count = count, .first = offset >> chunk_shift,
    .rbuf = buf,
  };

  return execute ("pread", &rq, npieces (&rq),
                  append_getrange, take_getrange);
}

/* Whole chunks are SET (the last chunk of a ragged disk is whole when
 * written to the end of the disk); parts are SETRANGE. */
static int
append_set (redisContext *c, struct request *rq, uint64_t i)
{
  uint64_t chunk, off, n, pos;
  char key[KEY_MAX], a[24];
  const char *argv[4] = { "SET", key, NULL, NULL };
  size_t lens[4] = { 3 };

  piece (rq, i, &chunk, &off, &n, &pos);
  lens[1] = key_name (chunk, key, sizeof key);
  if (off == 0 && (n == chunk_size || (chunk << chunk_shift) + n == size)) {
    argv[2] = rq->wbuf + pos;
    lens[2] = n;
    return redisAppendCommandArgv (c, 3, argv, lens);
  }
  argv[0] = "SETRANGE";
  lens[0] = 8;
  argv[2] = a;
  lens[2] = snprintf (a, sizeof a, "%" PRIu64, off);
  argv[3] = rq->wbuf + pos;
  lens[3] = n;
  return redisAppendCommandArgv (c, 4, argv, lens);
}

static int
take_any (redisReply *r, struct request *rq, uint64_t i)
{
  return 0;
}

static int
redis_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset,
              uint32_t flags)
{
  struct request rq = {
    .offset = offset, .count = count, .first = offset >> chunk_shift,
    .wbuf = buf,
  };

  return execute ("pwrite", &rq, npieces (&rq), append_set, take_any);
}

/* Zero/trim commands: a DEL of NKEYS whole chunks from CHUNK, or a
 * SETRANGE of N zeros at OFF in CHUNK. */
struct zcmd {
  bool del;
  uint64_t chunk, nkeys, off, n;
};

static int
append_zero (redisContext *c, struct request *rq, uint64_t i)
{
  const struct zcmd *z = &g_array_index (rq->zcmds, struct zcmd, i);
  char key[KEY_MAX], a[24];

  if (z->del) {
    const char **argv = malloc ((z->nkeys + 1) * sizeof *argv);
    size_t *lens = malloc ((z->nkeys + 1) * sizeof *lens);
    char *keys = malloc (z->nkeys * KEY_MAX);
    uint64_t k;
    int r = REDIS_ERR;

    if (argv && lens && keys) {
      argv[0] = "DEL";
      lens[0] = 3;
      for (k = 0; k < z->nkeys; ++k) {
        argv[k + 1] = keys + k * KEY_MAX;
        lens[k + 1] = key_name (z->chunk + k, keys + k * KEY_MAX, KEY_MAX);
      }
      r = redisAppendCommandArgv (c, z->nkeys + 1, argv, lens);
    }
    else
      errno = ENOMEM;
    free (argv);
    free (lens);
    free (keys);
    return r;
  }
  else {
    const char *argv[4] = { "SETRANGE", key, a, zeros };
    size_t lens[4] = { 8 };

    lens[1] = key_name (z->chunk, key, sizeof key);
    lens[2] = snprintf (a, sizeof a, "%" PRIu64, z->off);
    lens[3] = z->n;
    return redisAppendCommandArgv (c, 4, argv, lens);
  }
}

/* Zero and trim are the same operation: whole chunks are deleted, and
 * parts of chunks are overwritten with zeros (creating the key if it
 * did not exist: a key of zeros reads the same as a missing one). */
static int
zero_or_trim (const char *what, uint32_t count, uint64_t offset)
{
  struct request rq = {
    .offset = offset, .count = count, .first = offset >> chunk_shift,
  };
  uint64_t i, np = npieces (&rq);
  int r;

  rq.zcmds = g_array_new (FALSE, FALSE, sizeof (struct zcmd));
  for (i = 0; i < np; ++i) {
    uint64_t chunk, off, n, pos;
    struct zcmd z = { 0 };

    piece (&rq, i, &chunk, &off, &n, &pos);
    if (off == 0 && (n == chunk_size || (chunk << chunk_shift) + n == size)) {
      struct zcmd *last = rq.zcmds->len == 0 ? NULL :
        &g_array_index (rq.zcmds, struct zcmd, rq.zcmds->len - 1);
      if (last && last->del && last->nkeys < DEL_BATCH &&
          last->chunk + last->nkeys == chunk) {
        last->nkeys++;
        continue;
      }
      z.del = true;
      z.chunk = chunk;
      z.nkeys = 1;
    }
    else {
      z.chunk = chunk;
      z.off = off;
      z.n = n;
    }
    g_array_append_val (rq.zcmds, z);
  }
  r = execute (what, &rq, rq.zcmds->len, append_zero, take_any);
  g_array_free (rq.zcmds, TRUE);
  return r;
}

static int
redis_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  /* Zeroing part of a chunk is a write of zeros: not fast. */
  if (flags & NBDKIT_FLAG_FAST_ZERO) {
    errno = ENOTSUP;
    return -1;
  }
  return zero_or_trim ("zero", count, offset);
}

static int
redis_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return zero_or_trim ("trim", count, offset);
}

/* Every write was acknowledged by the server before it was
 * acknowledged to the client, and no Redis command makes the server
 * persist it: there is nothing to send.  With durable=true (checked at
 * start) the server persisted it before acknowledging it.  See
 * Durability in the man page. */
static int
redis_flush (void *handle, uint32_t flags)
{
  return 0;
}

static int
append_exists (redisContext *c, struct request *rq, uint64_t i)
{
  char key[KEY_MAX];
  const char *argv[2] = { "EXISTS", key };
  size_t lens[2] = { 6 };

  lens[1] = key_name (rq->first + i, key, sizeof key);
  return redisAppendCommandArgv (c, 2, argv, lens);
}

static int
take_exists (redisReply *r, struct request *rq, uint64_t i)
{
  if (r->type != REDIS_REPLY_INTEGER)
    return -1;
  rq->exists[i] = r->integer != 0;
  return 0;
}

static int
redis_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
               struct nbdkit_extents *extents)
{
  struct request rq = {
    .offset = offset, .count = count, .first = offset >> chunk_shift,
  };
  uint64_t i, n = npieces (&rq);
  int r = 0;

  /* nbdkit accepts fewer extents than asked for, as long as the first
   * byte is described: long requests are answered in parts. */
  if (flags & NBDKIT_FLAG_REQ_ONE)
    n = 1;
  n = MIN (n, EXTENTS_MAX_CHUNKS);
  rq.exists = calloc (n, sizeof *rq.exists);
  if (rq.exists == NULL) {
    nbdkit_error ("extents: %m");
    return -1;
  }
  if (execute ("extents", &rq, n, append_exists, take_exists) == -1) {
    free (rq.exists);
    return -1;
  }
  for (i = 0; i < n && r == 0; ++i) {
    uint64_t chunk, off, len, pos;
    uint32_t type = rq.exists[i] ? 0 : NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;

    piece (&rq, i, &chunk, &off, &len, &pos);
    r = nbdkit_add_extent (extents, offset + pos, len, type);
  }
  free (rq.exists);
  return r;
}

static struct nbdkit_plugin plugin = {
  .name              = "r3map-redis",
  .longname          = "r3map disk in Redis",
  .version           = PACKAGE_VERSION,
  .unload            = redis_unload,
  .config            = redis_config,
  .config_complete   = redis_config_complete,
  .config_help       = redis_config_help,
  .magic_config_key  = "server",
  .dump_plugin       = redis_dump_plugin,
  .get_ready         = redis_get_ready,
  .open              = redis_open,
  .get_size          = redis_get_size,
  .can_multi_conn    = redis_can_multi_conn,
  .can_trim          = redis_can_trim,
  .can_zero          = redis_can_zero,
  .can_flush         = redis_can_flush,
  .can_fua           = redis_can_fua,
  .can_extents       = redis_can_extents,
  .pread             = redis_pread,
  .pwrite            = redis_pwrite,
  .flush             = redis_flush,
  .trim              = redis_trim,
  .zero              = redis_zero,
  .extents           = redis_extents,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)
