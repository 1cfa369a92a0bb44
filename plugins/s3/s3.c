/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * nbdkit r3map-s3 plugin: a disk stored in S3.
 *
 * Multi-object mode (size= given): object N of the disk is the key
 * KEY/%016x (N in hex, nbdkit-S3-plugin layout), each object-size
 * bytes.  A missing object reads as zeros, and so do the bytes past the
 * end of a short object.  Whole-object writes are a PUT, partial ones
 * a read-modify-write (GET, patch, PUT) under a striped per-object
 * lock; trimming or zeroing whole objects deletes them (DeleteObjects,
 * up to 1000 keys per POST), partial ones are read-modify-writes of
 * zeros.  The objects a request touches are handled concurrently, each
 * on an easy handle of a pool shared by all NBD connections.
 *
 * Single-object mode (no size=): key= is one existing object, served
 * read-only with ranged GETs; its size comes from a HEAD at start.
 *
 * Durability.  A write is acknowledged only once its PUT (or DELETE)
 * got a success answer, i.e. once it is in S3: flush has nothing to do.
 *
 * Secrets (secret key, session token) are never logged.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

#include <curl/curl.h>
#include <glib.h>

#include "parse.h"

#define MIN_OBJECT_SIZE (UINT64_C (4) << 10)
#define MAX_OBJECT_SIZE (UINT64_C (64) << 20)
#define DEFAULT_OBJECT_SIZE (UINT64_C (1) << 20)
#define DEFAULT_CONNECTIONS 64
#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_RETRIES 5
#define DEFAULT_REGION "us-east-1"

/* Keys per DeleteObjects request (the S3 limit). */
#define DELETE_BATCH 1000

/* Object locks for read-modify-write. */
#define OBJECT_LOCKS 1024

/* Largest non-object response body we keep (errors, listings). */
#define MAX_SMALL_BODY (UINT64_C (1) << 20)

/* Configuration. */
static char *bucket;
static char *key;
static uint64_t size;           /* 0: single-object mode until get_ready */
static bool multi;              /* multi-object mode (size= given) */
static uint64_t object_size;    /* 0 until config_complete */
static char *endpoint;          /* NULL: AWS default */
static char *region;
static int addressing = -1;     /* 0 path, 1 virtual, -1 default */
static char *access_key;
static char *secret_key;        /* never logged */
static char *session_token;     /* never logged */
static uint64_t nconns = DEFAULT_CONNECTIONS;
static uint64_t timeout_ms = DEFAULT_TIMEOUT_MS;
static uint64_t retries = DEFAULT_RETRIES;

/* Derived. */
static char *base_url;          /* scheme://host[:port] without '/' */
static char *sigv4;             /* aws:amz:REGION:s3 */
static char *userpwd_user;
static unsigned object_shift;

/* The easy handle pool. */
static CURL **pool;
static size_t npool;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cond = PTHREAD_COND_INITIALIZER;

static pthread_rwlock_t object_locks[OBJECT_LOCKS];

static void
wipe_free (char **s)
{
  if (*s) {
    memset (*s, 0, strlen (*s));
    free (*s);
    *s = NULL;
  }
}

static void
s3_load (void)
{
  size_t i;

  curl_global_init (CURL_GLOBAL_DEFAULT);
  for (i = 0; i < OBJECT_LOCKS; ++i)
    pthread_rwlock_init (&object_locks[i], NULL);
}

static void
s3_unload (void)
{
  size_t i;

  if (pool) {
    for (i = 0; i < npool; ++i)
      curl_easy_cleanup (pool[i]);
  }
  free (pool);
  for (i = 0; i < OBJECT_LOCKS; ++i)
    pthread_rwlock_destroy (&object_locks[i]);
  free (bucket);
  free (key);
  free (endpoint);
  free (region);
  free (access_key);
  wipe_free (&secret_key);
  wipe_free (&session_token);
  free (base_url);
  free (sigv4);
  free (userpwd_user);
  curl_global_cleanup ();
}

static int
config_error (GError *error)
{
  nbdkit_error ("%s", error->message);
  g_error_free (error);
  return -1;
}

static int
set_string (char **dst, const char *k, const char *value, bool secret)
{
  if (value[0] == '\0') {
    nbdkit_error ("%s=: must not be empty", k);
    return -1;
  }
  if (secret)
    wipe_free (dst);
  else
    free (*dst);
  *dst = strdup (value);
  if (*dst == NULL) {
    nbdkit_error ("%s=: %m", k);
    return -1;
  }
  return 0;
}

static int
s3_config (const char *k, const char *value)
{
  GError *error = NULL;

  if (strcmp (k, "bucket") == 0)
    return set_string (&bucket, k, value, false);
  else if (strcmp (k, "key") == 0) {
    if (value[0] == '/') {
      nbdkit_error ("key=%s: must not start with '/'", value);
      return -1;
    }
    return set_string (&key, k, value, false);
  }
  else if (strcmp (k, "size") == 0) {
    if (!r3map_parse_size (k, value, &size, &error))
      return config_error (error);
    if (size == 0) {
      nbdkit_error ("size=%s: the disk must not be empty", value);
      return -1;
    }
    if (size > INT64_MAX) {
      nbdkit_error ("size=%s: size too large", value);
      return -1;
    }
    multi = true;
  }
  else if (strcmp (k, "object-size") == 0) {
    if (!r3map_parse_size (k, value, &object_size, &error))
      return config_error (error);
    if (!r3map_is_power_of_2 (object_size) ||
        object_size < MIN_OBJECT_SIZE || object_size > MAX_OBJECT_SIZE) {
      nbdkit_error ("object-size=%s: must be a power of 2 from 4K to 64M",
                    value);
      return -1;
    }
  }
  else if (strcmp (k, "endpoint") == 0) {
    size_t len = strlen (value);
    if (strncmp (value, "http://", 7) != 0 &&
        strncmp (value, "https://", 8) != 0) {
      nbdkit_error ("endpoint=%s: must start with http:// or https://",
                    value);
      return -1;
    }
    if (set_string (&endpoint, k, value, false) == -1)
      return -1;
    while (len > 8 && endpoint[len - 1] == '/')
      endpoint[--len] = '\0';
    if (strchr (endpoint + 8, '/') || strchr (endpoint, '?')) {
      nbdkit_error ("endpoint=%s: must be http(s)://HOST[:PORT] without "
                    "a path", value);
      return -1;
    }
  }
  else if (strcmp (k, "region") == 0)
    return set_string (&region, k, value, false);
  else if (strcmp (k, "addressing") == 0) {
    if (strcmp (value, "path") == 0)
      addressing = 0;
    else if (strcmp (value, "virtual") == 0)
      addressing = 1;
    else {
      nbdkit_error ("addressing=%s: must be path or virtual", value);
      return -1;
    }
  }
  else if (strcmp (k, "access-key") == 0)
    return set_string (&access_key, k, value, false);
  else if (strcmp (k, "secret-key") == 0 || strcmp (k, "session-token") == 0) {
    /* VALUE, +FILE, - (ask) or -FD, as nbdkit_read_password reads. */
    char **dst = strcmp (k, "secret-key") == 0 ? &secret_key : &session_token;
    char *v = NULL;

    if (nbdkit_read_password (value, &v) == -1)
      return -1;
    if (v == NULL || v[0] == '\0') {
      free (v);
      nbdkit_error ("%s=: must not be empty", k);
      return -1;
    }
    wipe_free (dst);
    *dst = v;
  }
  else if (strcmp (k, "connections") == 0) {
    if (!r3map_parse_uint (k, value, 1, 1024, &nconns, &error))
      return config_error (error);
  }
  else if (strcmp (k, "timeout") == 0) {
    if (!r3map_parse_duration (k, value, &timeout_ms, &error))
      return config_error (error);
    if (timeout_ms == 0 || timeout_ms > UINT64_C (24) * 3600 * 1000) {
      nbdkit_error ("timeout=%s: must be from 1ms to 1d", value);
      return -1;
    }
  }
  else if (strcmp (k, "retries") == 0) {
    if (!r3map_parse_uint (k, value, 0, 20, &retries, &error))
      return config_error (error);
  }
  else {
    nbdkit_error ("unknown parameter '%s'", k);
    return -1;
  }
  return 0;
}

/* Credentials from the shared credentials file, as awscli reads it:
 * $AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, section
 * $AWS_PROFILE or "default".  A file that does not exist is not an
 * error (returns 0 with nothing set); one that cannot be used is. */
static int
read_credentials_file (void)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *file = NULL;
  g_autofree char *ak = NULL;
  g_autofree char *sk = NULL;
  g_autofree char *tok = NULL;
  const char *env, *profile;

  env = getenv ("AWS_SHARED_CREDENTIALS_FILE");
  if (env && *env)
    file = g_strdup (env);
  else {
    const char *home = getenv ("HOME");
    if (home == NULL || *home == '\0')
      return 0;
    file = g_build_filename (home, ".aws", "credentials", NULL);
  }
  if (!g_file_test (file, G_FILE_TEST_EXISTS))
    return 0;
  profile = getenv ("AWS_PROFILE");
  if (profile == NULL || *profile == '\0')
    profile = "default";

  if (!g_key_file_load_from_file (kf, file, G_KEY_FILE_NONE, &error)) {
    nbdkit_error ("%s: cannot read AWS credentials: %s", file,
                  error->message);
    return -1;
  }
  ak = g_key_file_get_string (kf, profile, "aws_access_key_id", NULL);
  sk = g_key_file_get_string (kf, profile, "aws_secret_access_key", NULL);
  tok = g_key_file_get_string (kf, profile, "aws_session_token", NULL);
  if (ak) g_strstrip (ak);
  if (sk) g_strstrip (sk);
  if (tok) g_strstrip (tok);
  if (ak == NULL || sk == NULL || *ak == '\0' || *sk == '\0') {
    if (sk) memset (sk, 0, strlen (sk));
    if (tok) memset (tok, 0, strlen (tok));
    nbdkit_error ("%s: cannot read AWS credentials: profile [%s] lacks "
                  "aws_access_key_id or aws_secret_access_key",
                  file, profile);
    return -1;
  }
  access_key = strdup (ak);
  secret_key = strdup (sk);
  memset (sk, 0, strlen (sk));
  if (tok && *tok)
    session_token = strdup (tok);
  if (tok) memset (tok, 0, strlen (tok));
  if (access_key == NULL || secret_key == NULL) {
    nbdkit_error ("%s: %m", file);
    return -1;
  }
  return 0;
}

static int
get_credentials (void)
{
  const char *ak, *sk, *tok;

  if (access_key || secret_key) {
    if (access_key == NULL || secret_key == NULL) {
      nbdkit_error ("%s: give both access-key= and secret-key=",
                    access_key ? "secret-key=" : "access-key=");
      return -1;
    }
    return 0;
  }
  ak = getenv ("AWS_ACCESS_KEY_ID");
  sk = getenv ("AWS_SECRET_ACCESS_KEY");
  if (ak && *ak && sk && *sk) {
    access_key = strdup (ak);
    secret_key = strdup (sk);
    tok = getenv ("AWS_SESSION_TOKEN");
    if (session_token == NULL && tok && *tok)
      session_token = strdup (tok);
    if (access_key == NULL || secret_key == NULL) {
      nbdkit_error ("AWS_ACCESS_KEY_ID: %m");
      return -1;
    }
    return 0;
  }
  if (read_credentials_file () == -1)
    return -1;
  if (access_key == NULL) {
    nbdkit_error ("access-key=: no credentials: give access-key= and "
                  "secret-key=, set AWS_ACCESS_KEY_ID and "
                  "AWS_SECRET_ACCESS_KEY, or write ~/.aws/credentials");
    return -1;
  }
  return 0;
}

static int
s3_config_complete (void)
{
  size_t i;

  if (bucket == NULL) {
    nbdkit_error ("bucket=: required parameter missing (the S3 bucket)");
    return -1;
  }
  if (key == NULL) {
    nbdkit_error ("key=: required parameter missing (the object key, "
                  "or the key prefix with size=)");
    return -1;
  }
  if (multi) {
    if (object_size == 0)
      object_size = DEFAULT_OBJECT_SIZE;
    if (size % object_size != 0) {
      nbdkit_error ("object-size=%" PRIu64 ": must divide size=%" PRIu64,
                    object_size, size);
      return -1;
    }
    object_shift = __builtin_ctzll (object_size);
  }
  else if (object_size != 0) {
    nbdkit_error ("object-size=%" PRIu64 ": only with size= (multi-object "
                  "mode)", object_size);
    return -1;
  }
  if (region == NULL && (region = strdup (DEFAULT_REGION)) == NULL) {
    nbdkit_error ("region=: %m");
    return -1;
  }
  if (addressing == -1)
    addressing = endpoint ? 0 : 1;
  if (addressing == 1 && strchr (bucket, '.')) {
    /* Allowed by S3 but breaks TLS wildcard certificates. */
    nbdkit_debug ("bucket=%s: contains '.', virtual addressing may fail "
                  "TLS checks; consider addressing=path", bucket);
  }
  if (get_credentials () == -1)
    return -1;

  if (endpoint == NULL) {
    base_url = g_strdup_printf (addressing ? "https://%s.s3.%s.amazonaws.com"
                                : "https://s3.%s.amazonaws.com",
                                addressing ? bucket : region, region);
  }
  else if (addressing == 1) {
    const char *host = strstr (endpoint, "://") + 3;
    base_url = g_strdup_printf ("%.*s%s.%s", (int) (host - endpoint),
                                endpoint, bucket, host);
  }
  else
    base_url = g_strdup (endpoint);
  sigv4 = g_strdup_printf ("aws:amz:%s:s3", region);
  userpwd_user = g_strdup (access_key);

  npool = nconns;
  pool = calloc (npool, sizeof *pool);
  if (pool == NULL) {
    nbdkit_error ("connections=: %m");
    return -1;
  }
  for (i = 0; i < npool; ++i) {
    pool[i] = curl_easy_init ();
    if (pool[i] == NULL) {
      nbdkit_error ("connections=%zu: curl_easy_init failed", npool);
      return -1;
    }
  }
  nbdkit_debug ("bucket=%s key=%s mode=%s size=%" PRIu64
                " object-size=%" PRIu64 " url=%s region=%s connections=%"
                PRIu64 " timeout=%" PRIu64 "ms retries=%" PRIu64
                " session-token=%s", bucket, key,
                multi ? "multi-object" : "single-object", size, object_size,
                base_url, region, nconns, timeout_ms, retries,
                session_token ? "yes" : "no");
  return 0;
}

#define s3_config_help \
  "bucket=<NAME>       (required) The S3 bucket.\n" \
  "key=<KEY>           (required) The object, or with size= the prefix.\n" \
  "size=<SIZE>         Multi-object mode: the disk size.\n" \
  "object-size=<SIZE>  Object size (power of 2, 4K-64M, default 1M).\n" \
  "endpoint=<URL>      http(s)://HOST[:PORT] (default AWS).\n" \
  "region=<REGION>     The region (default us-east-1).\n" \
  "addressing=path|virtual  Bucket in the path or the host name.\n" \
  "access-key=<ID>     The access key id.\n" \
  "secret-key=<KEY>    The secret access key.\n" \
  "session-token=<TOK> A session token.\n" \
  "connections=<N>     HTTP handles shared by all clients (default 64).\n" \
  "timeout=<DURATION>  Timeout of each request (default 30s).\n" \
  "retries=<N>         Retries of a failed request (default 5)."

static void
s3_dump_plugin (void)
{
  printf ("r3map_version=%s\n", PACKAGE_VERSION);
  printf ("r3map_s3_parameters=bucket,key,size,object-size,endpoint,region,"
          "addressing,access-key,secret-key,session-token,connections,"
          "timeout,retries\n");
  printf ("r3map_s3_default_object_size=%" PRIu64 "\n", DEFAULT_OBJECT_SIZE);
  printf ("r3map_s3_object_size_range=%" PRIu64 "-%" PRIu64 "\n",
          MIN_OBJECT_SIZE, MAX_OBJECT_SIZE);
  printf ("r3map_s3_curl_version=%s\n", curl_version_info (CURLVERSION_NOW)->version);
}

/* --- HTTP ------------------------------------------------------------ */

static CURL *
get_handle (void)
{
  CURL *h;

  pthread_mutex_lock (&pool_lock);
  while (npool == 0)
    pthread_cond_wait (&pool_cond, &pool_lock);
  h = pool[--npool];
  pthread_mutex_unlock (&pool_lock);
  return h;
}

static void
put_handle (CURL *h)
{
  pthread_mutex_lock (&pool_lock);
  pool[npool++] = h;
  pthread_cond_signal (&pool_cond);
  pthread_mutex_unlock (&pool_lock);
}

/* Percent-encode S (RFC 3986 unreserved kept; '/' kept if KEEP_SLASH). */
static char *
uri_encode (const char *s, bool keep_slash)
{
  GString *out = g_string_new (NULL);

  for (; *s; ++s) {
    unsigned char c = *s;
    if (g_ascii_isalnum (c) || c == '-' || c == '_' || c == '.' ||
        c == '~' || (keep_slash && c == '/'))
      g_string_append_c (out, c);
    else
      g_string_append_printf (out, "%%%02X", c);
  }
  return g_string_free (out, FALSE);
}

/* URL of OBJKEY (NULL: the bucket) with QUERY (sorted, key=value). */
static char *
make_url (const char *objkey, const char *query)
{
  g_autofree char *ek = objkey ? uri_encode (objkey, true) : g_strdup ("");
  const char *q = query ? "?" : "", *qs = query ? query : "";

  if (addressing == 1)
    return g_strdup_printf ("%s/%s%s%s", base_url, ek, q, qs);
  if (objkey)
    return g_strdup_printf ("%s/%s/%s%s%s", base_url, bucket, ek, q, qs);
  return g_strdup_printf ("%s/%s%s%s", base_url, bucket, q, qs);
}

struct resp {
  long code;
  char *data;
  size_t len, alloc, max;
  /* If set, a success's body goes straight here (at most MAX bytes),
   * not into DATA: no allocation and no second copy on reads. */
  char *dest;
  int to_dest;                  /* -1 not known yet, 0 no, 1 yes */
  bool too_big;
  int64_t total;                /* from Content-Range, or -1 */
  int64_t clen;                 /* Content-Length (HEAD), or -1 */
  CURL *h;                      /* while a request runs */
};

static void
resp_reset (struct resp *r, size_t max)
{
  r->code = 0;
  r->len = 0;
  r->max = max;
  r->to_dest = -1;
  r->too_big = false;
  r->total = -1;
  r->clen = -1;
}

static void
resp_free (struct resp *r)
{
  free (r->data);
  r->data = NULL;
}

static size_t
write_cb (char *ptr, size_t sz, size_t n, void *opaque)
{
  struct resp *r = opaque;
  size_t len = sz * n;

  if (r->dest && r->to_dest == -1) {
    long code = 0;
    curl_easy_getinfo (r->h, CURLINFO_RESPONSE_CODE, &code);
    r->to_dest = code >= 200 && code < 300;
  }
  if (r->to_dest == 1) {
    if (r->len + len > r->max) {
      r->too_big = true;
      return 0;
    }
    memcpy (r->dest + r->len, ptr, len);
    r->len += len;
    return len;
  }
  if (r->len + len > r->max) {
    long code = 0;

    /* MAX bounds the data of a success; an error's XML body is kept
     * up to MAX_SMALL_BODY. */
    curl_easy_getinfo (r->h, CURLINFO_RESPONSE_CODE, &code);
    if ((code >= 200 && code < 300) || r->len + len > MAX_SMALL_BODY) {
      r->too_big = code >= 200 && code < 300;
      return 0;
    }
  }
  if (r->len + len > r->alloc) {
    size_t na = r->alloc ? r->alloc : 4096;
    char *p;
    while (na < r->len + len)
      na *= 2;

    p = realloc (r->data, na);
    if (p == NULL)
      return 0;
    r->data = p;
    r->alloc = na;
  }
  memcpy (r->data + r->len, ptr, len);
  r->len += len;
  return len;
}

static size_t
header_cb (char *ptr, size_t sz, size_t n, void *opaque)
{
  struct resp *r = opaque;
  size_t len = sz * n;
  char line[256];

  if (len < sizeof line) {
    memcpy (line, ptr, len);
    line[len] = '\0';
    if (g_ascii_strncasecmp (line, "content-range:", 14) == 0) {
      const char *slash = strchr (line, '/');
      if (slash && slash[1] >= '0' && slash[1] <= '9')
        r->total = g_ascii_strtoll (slash + 1, NULL, 10);
    }
    else if (g_ascii_strncasecmp (line, "content-length:", 15) == 0)
      r->clen = g_ascii_strtoll (line + 15, NULL, 10);
  }
  return len;
}

/* The S3 error code in an XML error body, for messages. */
static void
s3_error_code (const struct resp *r, char *buf, size_t buflen)
{
  const char *p = NULL, *e = NULL;

  buf[0] = '\0';
  if (r->data && r->len > 0) {
    g_autofree char *s = g_strndup (r->data, r->len);
    p = strstr (s, "<Code>");
    if (p)
      e = strstr (p, "</Code>");
    if (p && e)
      snprintf (buf, buflen, " %.*s", (int) (e - p - 6), p + 6);
  }
}

struct request {
  const char *method;           /* GET HEAD PUT DELETE POST */
  const char *objkey;           /* NULL: the bucket */
  const char *query;
  const char *range;            /* "A-B" or NULL */
  const char *body;
  size_t body_len;
  const char *content_md5;
  size_t max;                   /* largest body kept */
};

static int64_t
now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run RQ, retrying connection failures and 5xx answers with
 * exponential backoff.  Returns 0 with R->code set (any answer but a
 * 5xx after the last try), or -1 with errno set and the error logged
 * (WHAT names the operation). */
static int
s3_do (const char *what, const struct request *rq, struct resp *r)
{
  g_autofree char *url = make_url (rq->objkey, rq->query);
  uint64_t attempt;
  unsigned delay_ms = 100;
  char errbuf[CURL_ERROR_SIZE];
  CURLcode res = CURLE_OK;
  int64_t t0 = now_ms ();

  for (attempt = 0;; ++attempt) {
    struct curl_slist *hdrs = NULL, *tmp;
    CURL *h;
    g_autofree char *tokhdr = NULL, *md5hdr = NULL;
    bool ok_list = true;

    resp_reset (r, rq->max);
    tmp = curl_slist_append (hdrs, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    ok_list &= tmp != NULL; if (tmp) hdrs = tmp;
    if (session_token) {
      tokhdr = g_strdup_printf ("x-amz-security-token: %s", session_token);
      tmp = curl_slist_append (hdrs, tokhdr);
      ok_list &= tmp != NULL; if (tmp) hdrs = tmp;
      memset (tokhdr, 0, strlen (tokhdr));
    }
    if (rq->content_md5) {
      md5hdr = g_strdup_printf ("Content-MD5: %s", rq->content_md5);
      tmp = curl_slist_append (hdrs, md5hdr);
      ok_list &= tmp != NULL; if (tmp) hdrs = tmp;
    }
    if (strcmp (rq->method, "POST") == 0) {
      tmp = curl_slist_append (hdrs, "Content-Type: application/xml");
      ok_list &= tmp != NULL; if (tmp) hdrs = tmp;
    }
    if (!ok_list) {
      curl_slist_free_all (hdrs);
      nbdkit_error ("%s: bucket=%s: out of memory", what, bucket);
      errno = ENOMEM;
      return -1;
    }

    h = get_handle ();
    r->h = h;
    curl_easy_reset (h);
    errbuf[0] = '\0';
    curl_easy_setopt (h, CURLOPT_URL, url);
    curl_easy_setopt (h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt (h, CURLOPT_AWS_SIGV4, sigv4);
    curl_easy_setopt (h, CURLOPT_USERNAME, userpwd_user);
    curl_easy_setopt (h, CURLOPT_PASSWORD, secret_key);
    curl_easy_setopt (h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt (h, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
    curl_easy_setopt (h, CURLOPT_CONNECTTIMEOUT_MS, (long) timeout_ms);
    curl_easy_setopt (h, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt (h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt (h, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt (h, CURLOPT_HEADERDATA, r);
    if (rq->range)
      curl_easy_setopt (h, CURLOPT_RANGE, rq->range);
    if (strcmp (rq->method, "HEAD") == 0)
      curl_easy_setopt (h, CURLOPT_NOBODY, 1L);
    else if (strcmp (rq->method, "GET") != 0) {
      if (strcmp (rq->method, "POST") != 0)
        curl_easy_setopt (h, CURLOPT_CUSTOMREQUEST, rq->method);
      if (rq->body) {
        curl_easy_setopt (h, CURLOPT_POSTFIELDSIZE_LARGE,
                          (curl_off_t) rq->body_len);
        curl_easy_setopt (h, CURLOPT_POSTFIELDS, rq->body);
      }
    }
    res = curl_easy_perform (h);
    curl_easy_getinfo (h, CURLINFO_RESPONSE_CODE, &r->code);
    r->h = NULL;
    /* Drop the secret from the handle while it sits in the pool. */
    curl_easy_setopt (h, CURLOPT_PASSWORD, NULL);
    curl_easy_setopt (h, CURLOPT_HTTPHEADER, NULL);
    put_handle (h);
    curl_slist_free_all (hdrs);

    if (r->too_big)
      return 0;
    if (res == CURLE_OK && r->code < 500)
      return 0;
    if (res == CURLE_OPERATION_TIMEDOUT) {
      nbdkit_error ("%s: bucket=%s key=%s: timed out after %" PRIu64 " ms",
                    what, bucket, rq->objkey ? rq->objkey : "(bucket)", timeout_ms);
      errno = ETIMEDOUT;
      return -1;
    }
    if (attempt >= retries)
      break;
    {
      char why[64];
      if (res == CURLE_OK)
        snprintf (why, sizeof why, "HTTP %ld", r->code);
      else
        snprintf (why, sizeof why, "%s", curl_easy_strerror (res));
      nbdkit_debug ("%s: bucket=%s key=%s: %s, retrying in %u ms", what,
                    bucket, rq->objkey ? rq->objkey : "", why, delay_ms);
    }
    g_usleep ((gulong) delay_ms * 1000);
    if (delay_ms < 10000)
      delay_ms *= 2;
  }

  if (res == CURLE_OK) {
    char code[128];
    s3_error_code (r, code, sizeof code);
    nbdkit_error ("%s: bucket=%s key=%s: HTTP %ld%s after %" PRIu64
                  " tries in %" PRId64 " ms", what, bucket,
                  rq->objkey ? rq->objkey : "(bucket)", r->code, code, attempt + 1,
                  now_ms () - t0);
  }
  else
    nbdkit_error ("%s: bucket=%s key=%s: %s after %" PRIu64 " tries in %"
                  PRId64 " ms", what, bucket, rq->objkey ? rq->objkey : "(bucket)",
                  errbuf[0] ? errbuf : curl_easy_strerror (res),
                  attempt + 1, now_ms () - t0);
  errno = EIO;
  return -1;
}

/* An HTTP answer that is not a success: log it, set errno. */
static int
http_error (const char *what, const char *objkey, struct resp *r)
{
  char code[128];

  s3_error_code (r, code, sizeof code);
  if (r->code == 403) {
    nbdkit_error ("%s: bucket=%s%s%s: access denied (HTTP 403%s): "
                  "check the credentials and permissions", what, bucket,
                  objkey ? " key=" : "", objkey ? objkey : "", code);
    errno = EPERM;
  }
  else {
    nbdkit_error ("%s: bucket=%s%s%s: HTTP %ld%s", what, bucket,
                  objkey ? " key=" : "", objkey ? objkey : "", r->code, code);
    errno = EIO;
  }
  return -1;
}

static void
object_key (uint64_t n, char *buf, size_t len)
{
  snprintf (buf, len, "%s/%016" PRIx64, key, n);
}

#define OBJKEY_MAX 1100

static pthread_rwlock_t *
object_lock (uint64_t n)
{
  return &object_locks[n % OBJECT_LOCKS];
}

/* GET bytes [OFF, OFF+LEN) of object N (LEN == object_size: the whole
 * object) into BUF.  A missing object, or bytes past the end of a short
 * one, read as zeros. */
static int
object_read_unlocked (const char *what, uint64_t n, char *buf, uint64_t off,
                      uint64_t len)
{
  char k[OBJKEY_MAX];
  char range[64];
  struct resp r = { 0 };
  struct request rq = { .method = "GET", .objkey = k, .max = len };
  int ret = -1;

  object_key (n, k, sizeof k);
  if (len < object_size) {
    /* s3rver takes "bytes=A-0" for "bytes=A-": ask for one more byte. */
    uint64_t last = off + len - 1 > 0 ? off + len - 1 : 1;
    snprintf (range, sizeof range, "%" PRIu64 "-%" PRIu64, off, last);
    rq.range = range;
    rq.max = last - off + 1;
  }
  if (rq.max == len) {
    r.dest = buf;
    r.to_dest = -1;
  }
  if (s3_do (what, &rq, &r) == -1)
    goto out;
  if (r.too_big || (r.total >= 0 && (uint64_t) r.total > object_size)) {
    nbdkit_error ("%s: bucket=%s key=%s: the object is larger than "
                  "object-size=%" PRIu64, what, bucket, k, object_size);
    nbdkit_debug ("HTTP %ld, %zu bytes of at most %zu, total %" PRId64,
                  r.code, r.len, r.max, r.total);
    errno = EIO;
    goto out;
  }
  if (r.code == 404 || r.code == 416) {
    /* Missing, or shorter than OFF. */
    memset (buf, 0, len);
    ret = 0;
    goto out;
  }
  if ((r.code == 206 && rq.range) || (r.code == 200 && !rq.range)) {
    size_t got = r.len < len ? r.len : len;
    if (r.to_dest != 1)
      memcpy (buf, r.data, got);
    memset (buf + got, 0, len - got);
    ret = 0;
    goto out;
  }
  if (r.code == 200 && rq.range) {
    /* The server ignored the range: it sent the whole object. */
    nbdkit_error ("%s: bucket=%s key=%s: the server ignored the Range "
                  "header", what, bucket, k);
    errno = EIO;
    goto out;
  }
  http_error (what, k, &r);
 out:
  resp_free (&r);
  return ret;
}

/* Reads take the object's lock shared, so that they never see a
 * read-modify-write of this process half done (S3 PUTs are atomic,
 * but not those of every S3-compatible server). */
static int
object_read (const char *what, uint64_t n, char *buf, uint64_t off,
             uint64_t len)
{
  pthread_rwlock_t *lock = object_lock (n);
  int ret;

  pthread_rwlock_rdlock (lock);
  ret = object_read_unlocked (what, n, buf, off, len);
  pthread_rwlock_unlock (lock);
  return ret;
}

static int
object_put (const char *what, uint64_t n, const char *buf)
{
  char k[OBJKEY_MAX];
  struct resp r = { 0 };
  struct request rq = {
    .method = "PUT", .objkey = k, .body = buf, .body_len = object_size,
    .max = MAX_SMALL_BODY,
  };
  int ret = -1;

  object_key (n, k, sizeof k);
  if (s3_do (what, &rq, &r) == 0) {
    if (r.code == 200)
      ret = 0;
    else
      http_error (what, k, &r);
  }
  resp_free (&r);
  return ret;
}

/* Write BUF (NULL: zeros) at [OFF, OFF+LEN) of object N. */
static int
object_write (const char *what, uint64_t n, const char *buf, uint64_t off,
              uint64_t len)
{
  pthread_rwlock_t *lock = object_lock (n);
  char *obj;
  int ret = -1;

  if (buf && off == 0 && len == object_size) {
    pthread_rwlock_wrlock (lock);
    ret = object_put (what, n, buf);
    pthread_rwlock_unlock (lock);
    return ret;
  }
  obj = malloc (object_size);
  if (obj == NULL) {
    nbdkit_error ("%s: %m", what);
    return -1;
  }
  pthread_rwlock_wrlock (lock);
  if (object_read_unlocked (what, n, obj, 0, object_size) == 0) {
    if (buf)
      memcpy (obj + off, buf, len);
    else
      memset (obj + off, 0, len);
    ret = object_put (what, n, obj);
  }
  pthread_rwlock_unlock (lock);
  free (obj);
  return ret;
}

/* Delete objects [FIRST, FIRST+COUNT) (COUNT <= DELETE_BATCH) with one
 * DeleteObjects request. */
static int
objects_delete (const char *what, uint64_t first, uint64_t count)
{
  GString *xml = g_string_new ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
                               "<Delete><Quiet>true</Quiet>");
  g_autofree char *md5 = NULL;
  guint8 digest[16];
  gsize dlen = sizeof digest;
  GChecksum *ck;
  struct resp r = { 0 };
  struct request rq = {
    .method = "POST", .query = "delete=", .max = MAX_SMALL_BODY,
  };
  char k[OBJKEY_MAX];
  uint64_t i;
  int ret = -1;

  for (i = 0; i < count; ++i) {
    g_autofree char *esc = NULL;
    object_key (first + i, k, sizeof k);
    esc = g_markup_escape_text (k, -1);
    g_string_append_printf (xml, "<Object><Key>%s</Key></Object>", esc);
  }
  g_string_append (xml, "</Delete>");
  ck = g_checksum_new (G_CHECKSUM_MD5);
  g_checksum_update (ck, (const guchar *) xml->str, xml->len);
  g_checksum_get_digest (ck, digest, &dlen);
  g_checksum_free (ck);
  md5 = g_base64_encode (digest, dlen);
  rq.body = xml->str;
  rq.body_len = xml->len;
  rq.content_md5 = md5;

  object_key (first, k, sizeof k);
  if (s3_do (what, &rq, &r) == 0) {
    if (r.code != 200)
      http_error (what, k, &r);
    else if (r.data && g_strstr_len (r.data, r.len, "<Error>")) {
      char code[128];
      s3_error_code (&r, code, sizeof code);
      nbdkit_error ("%s: bucket=%s key=%s: DeleteObjects failed for some "
                    "objects:%s", what, bucket, k, code);
      errno = EIO;
    }
    else
      ret = 0;
  }
  resp_free (&r);
  g_string_free (xml, TRUE);
  return ret;
}

/* --- Running the objects of a request concurrently -------------------- */

struct job;
typedef int (*job_fn) (struct job *job, uint64_t i);

struct job {
  job_fn fn;
  uint64_t n;                   /* tasks 0..n-1 */
  uint64_t next;
  int err;                      /* first errno, 0 if none */
  pthread_mutex_t lock;
  /* The request. */
  const char *what;
  char *buf;
  uint64_t offset, count;
  uint64_t first_obj;
};

static void *
job_worker (void *opaque)
{
  struct job *job = opaque;

  for (;;) {
    uint64_t i;
    int failed;

    pthread_mutex_lock (&job->lock);
    failed = job->err;
    i = job->next++;
    pthread_mutex_unlock (&job->lock);
    if (failed || i >= job->n)
      break;
    if (job->fn (job, i) == -1) {
      int e = errno ? errno : EIO;
      pthread_mutex_lock (&job->lock);
      if (job->err == 0)
        job->err = e;
      pthread_mutex_unlock (&job->lock);
    }
  }
  return NULL;
}

static int
job_run (struct job *job)
{
  size_t nthreads, i, started = 0;
  pthread_t *threads = NULL;

  pthread_mutex_init (&job->lock, NULL);
  job->next = 0;
  job->err = 0;
  nthreads = job->n < nconns ? job->n : nconns;
  if (nthreads > 1) {
    threads = calloc (nthreads - 1, sizeof *threads);
    for (i = 0; threads && i < nthreads - 1; ++i) {
      if (pthread_create (&threads[i], NULL, job_worker, job) != 0)
        break;
      started++;
    }
  }
  job_worker (job);
  for (i = 0; i < started; ++i)
    pthread_join (threads[i], NULL);
  free (threads);
  pthread_mutex_destroy (&job->lock);
  if (job->err) {
    errno = job->err;
    return -1;
  }
  return 0;
}

/* The part of object FIRST_OBJ+I that the request covers. */
static void
job_span (struct job *job, uint64_t i, uint64_t *obj, uint64_t *off,
          uint64_t *len, uint64_t *bufoff)
{
  uint64_t o = job->first_obj + i;
  uint64_t start = o << object_shift;
  uint64_t end = start + object_size;
  uint64_t a = job->offset > start ? job->offset : start;
  uint64_t b = job->offset + job->count < end ? job->offset + job->count : end;

  *obj = o;
  *off = a - start;
  *len = b - a;
  *bufoff = a - job->offset;
}

static void
job_init (struct job *job, const char *what, void *buf, uint64_t count,
          uint64_t offset)
{
  memset (job, 0, sizeof *job);
  job->what = what;
  job->buf = buf;
  job->offset = offset;
  job->count = count;
  job->first_obj = offset >> object_shift;
  job->n = ((offset + count - 1) >> object_shift) - job->first_obj + 1;
}

/* --- Callbacks ------------------------------------------------------- */

/* At start: check that the endpoint answers, the credentials are right
 * and the bucket exists; in single-object mode, get the size. */
static int
s3_get_ready (void)
{
  struct resp r = { 0 };
  int ret = -1;

  if (multi) {
    /* HEAD of the bucket: one cheap request checks the endpoint, the
     * credentials and the bucket. */
    struct request rq = { .method = "HEAD", .max = MAX_SMALL_BODY };

    if (s3_do ("start", &rq, &r) == -1)
      goto out;
    if (r.code == 200)
      ret = 0;
    else if (r.code == 404)
      nbdkit_error ("bucket=%s: not found (HTTP 404)", bucket);
    else
      http_error ("start", NULL, &r);
  }
  else {
    struct request rq = {
      .method = "HEAD", .objkey = key, .max = MAX_SMALL_BODY,
    };
    if (s3_do ("start", &rq, &r) == -1)
      goto out;
    if (r.code == 200 && r.clen > 0) {
      size = r.clen;
      ret = 0;
    }
    else if (r.code == 200)
      nbdkit_error ("bucket=%s key=%s: the object is empty (give size= "
                    "for a multi-object disk)", bucket, key);
    else if (r.code == 404)
      nbdkit_error ("bucket=%s key=%s: no such object or bucket (give "
                    "size= for a multi-object disk)", bucket, key);
    else
      http_error ("start", key, &r);
  }
 out:
  resp_free (&r);
  return ret;
}

static void *
s3_open (int readonly)
{
  return NBDKIT_HANDLE_NOT_NEEDED;
}

static int64_t
s3_get_size (void *handle)
{
  return size;
}

static int
s3_can_write (void *handle)
{
  return multi;
}

static int
s3_can_multi_conn (void *handle)
{
  return 1;
}

static int
s3_can_trim (void *handle)
{
  return multi;
}

static int
s3_can_zero (void *handle)
{
  return multi;
}

static int
s3_can_flush (void *handle)
{
  return 1;
}

static int
s3_can_fua (void *handle)
{
  /* Every write is in S3 when it is acknowledged. */
  return NBDKIT_FUA_NATIVE;
}

static int
pread_one (struct job *job, uint64_t i)
{
  uint64_t obj, off, len, bufoff;

  job_span (job, i, &obj, &off, &len, &bufoff);
  return object_read (job->what, obj, job->buf + bufoff, off, len);
}

/* Single-object mode: ranged GETs of at most this much, concurrently. */
#define SINGLE_PIECE (UINT64_C (4) << 20)

static int
pread_single (struct job *job, uint64_t i)
{
  uint64_t off = job->offset + i * SINGLE_PIECE;
  uint64_t len = job->offset + job->count - off;
  char range[64];
  struct resp r = { 0 };
  struct request rq = {
    .method = "GET", .objkey = key, .range = range, .max = SINGLE_PIECE,
  };
  int ret = -1;

  if (len > SINGLE_PIECE)
    len = SINGLE_PIECE;
  snprintf (range, sizeof range, "%" PRIu64 "-%" PRIu64, off, off + len - 1);
  rq.max = len;
  r.dest = job->buf + (off - job->offset);
  if (s3_do (job->what, &rq, &r) == -1)
    goto out;
  if (r.code == 206 && r.len == len && r.to_dest == 1 &&
      (r.total < 0 || (uint64_t) r.total == size)) {
    ret = 0;
  }
  else if (r.code == 206 || r.code == 200 || r.code == 416 || r.too_big) {
    nbdkit_error ("pread: bucket=%s key=%s: the object changed size "
                  "(was %" PRIu64 " bytes)", bucket, key, size);
    errno = EIO;
  }
  else
    http_error (job->what, key, &r);
 out:
  resp_free (&r);
  return ret;
}

static int
s3_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
          uint32_t flags)
{
  struct job job;

  if (count == 0)
    return 0;
  if (!multi) {
    memset (&job, 0, sizeof job);
    job.what = "pread";
    job.buf = buf;
    job.offset = offset;
    job.count = count;
    job.n = (count + SINGLE_PIECE - 1) / SINGLE_PIECE;
    job.fn = pread_single;
    return job_run (&job);
  }
  job_init (&job, "pread", buf, count, offset);
  job.fn = pread_one;
  return job_run (&job);
}

static int
pwrite_one (struct job *job, uint64_t i)
{
  uint64_t obj, off, len, bufoff;

  job_span (job, i, &obj, &off, &len, &bufoff);
  return object_write (job->what, obj, job->buf + bufoff, off, len);
}

static int
s3_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset,
           uint32_t flags)
{
  struct job job;

  if (count == 0)
    return 0;
  job_init (&job, "pwrite", (void *) buf, count, offset);
  job.fn = pwrite_one;
  return job_run (&job);
}

/* Zero/trim: tasks are the partial edge objects (RMW of zeros) and
 * batches of up to DELETE_BATCH whole objects. */
struct zero_plan {
  uint64_t whole_first, whole_count;   /* objects deleted */
  uint64_t nbatches;
  uint64_t edges[2];
  uint64_t nedges;
};

static int
zero_one (struct job *job, uint64_t i)
{
  const struct zero_plan *p = (const void *) job->buf;

  if (i < p->nedges) {
    uint64_t o = p->edges[i];
    uint64_t start = o << object_shift;
    uint64_t a = job->offset > start ? job->offset : start;
    uint64_t b = job->offset + job->count < start + object_size ?
      job->offset + job->count : start + object_size;
    return object_write (job->what, o, NULL, a - start, b - a);
  }
  else {
    uint64_t bi = i - p->nedges;
    uint64_t first = p->whole_first + bi * DELETE_BATCH;
    uint64_t n = p->whole_first + p->whole_count - first;
    uint64_t j;
    int ret;

    if (n > DELETE_BATCH)
      n = DELETE_BATCH;
    /* Take the locks of the objects so that a concurrent
     * read-modify-write of one of them in this process is ordered.
     * Stripes are taken in ascending order (no deadlock between
     * batches). */
    bool take[OBJECT_LOCKS] = { false };
    for (j = 0; j < n; ++j)
      take[(first + j) % OBJECT_LOCKS] = true;
    for (j = 0; j < OBJECT_LOCKS; ++j)
      if (take[j])
        pthread_rwlock_wrlock (&object_locks[j]);
    ret = objects_delete (job->what, first, n);
    for (j = 0; j < OBJECT_LOCKS; ++j)
      if (take[j])
        pthread_rwlock_unlock (&object_locks[j]);
    return ret;
  }
}

static int
do_zero (const char *what, uint32_t count, uint64_t offset)
{
  struct zero_plan plan = { 0 };
  struct job job;
  uint64_t first = offset >> object_shift;
  uint64_t last = (offset + count - 1) >> object_shift;
  uint64_t wf, wend;                     /* whole objects [wf, wend) */

  if (count == 0)
    return 0;
  wf = first;
  wend = last + 1;
  if (offset & (object_size - 1)) {
    plan.edges[plan.nedges++] = first;
    wf = first + 1;
  }
  if ((offset + count) & (object_size - 1)) {
    if (plan.nedges == 0 || last != first)
      plan.edges[plan.nedges++] = last;
    wend = last;
  }
  if (wf < wend) {
    plan.whole_first = wf;
    plan.whole_count = wend - wf;
    plan.nbatches = (plan.whole_count + DELETE_BATCH - 1) / DELETE_BATCH;
  }
  job_init (&job, what, &plan, count, offset);
  job.n = plan.nedges + plan.nbatches;
  job.fn = zero_one;
  return job_run (&job);
}

static int
s3_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return do_zero ("trim", count, offset);
}

static int
s3_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return do_zero ("zero", count, offset);
}

/* --- Block status ---------------------------------------------------- */

/* Keys per ListObjectsV2 answer (the S3 limit). */
#define LIST_MAX_KEYS 1000

static int
s3_can_extents (void *handle)
{
  return multi;
}

/* Which of the objects from OFFSET on exist, with ONE ListObjectsV2
 * request: start-after the object before, at most LIST_MAX_KEYS keys,
 * "/" as delimiter so that keys below KEY/x/ are not counted.  A
 * missing object is a hole that reads as zeros.  Past LIST_MAX_KEYS
 * objects the answer is shorter than asked (NBD allows it), so the
 * cost of a block status request is bounded by one request. */
static int
s3_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
            struct nbdkit_extents *extents)
{
  uint64_t first = offset >> object_shift;
  uint64_t last = (offset + count - 1) >> object_shift;
  uint64_t n = last - first + 1, i;
  g_autofree char *prefix = g_strdup_printf ("%s/", key);
  g_autofree char *eprefix = uri_encode (prefix, false);
  g_autofree char *estart = NULL, *query = NULL;
  g_autofree bool *present = NULL;
  struct resp r = { 0 };
  struct request rq = { .method = "GET", .max = MAX_SMALL_BODY };
  const char *p, *end;
  int ret = -1;

  if (n > LIST_MAX_KEYS)
    n = LIST_MAX_KEYS;
  if (first > 0) {
    char k[OBJKEY_MAX];
    object_key (first - 1, k, sizeof k);
    estart = uri_encode (k, false);
  }
  /* SigV4 wants the parameters sorted and encoded. */
  query = g_strdup_printf ("delimiter=%%2F&list-type=2&max-keys=%" PRIu64
                           "&prefix=%s%s%s", n, eprefix,
                           estart ? "&start-after=" : "",
                           estart ? estart : "");
  rq.query = query;
  if (s3_do ("extents", &rq, &r) == -1)
    goto out;
  if (r.code != 200 || r.too_big) {
    if (r.too_big) {
      nbdkit_error ("extents: bucket=%s key=%s: listing larger than %"
                    PRIu64 " bytes", bucket, prefix, MAX_SMALL_BODY);
      errno = EIO;
    }
    else
      http_error ("extents", prefix, &r);
    goto out;
  }

  present = g_new0 (bool, n);
  p = r.data;
  end = r.data + r.len;
  while (p && p < end) {
    const char *k = g_strstr_len (p, end - p, "<Key>"), *ke;
    char hex[17];
    uint64_t obj;

    if (k == NULL)
      break;
    k += 5;
    ke = g_strstr_len (k, end - k, "</Key>");
    if (ke == NULL)
      break;
    p = ke + 6;
    /* KEY/ then 16 lowercase hex digits: anything else is not ours. */
    if (ke - k < 17 || ke[-17] != '/')
      continue;
    memcpy (hex, ke - 16, 16);
    hex[16] = '\0';
    if (strspn (hex, "0123456789abcdef") != 16)
      continue;
    obj = g_ascii_strtoull (hex, NULL, 16);
    if (obj >= first && obj - first < n)
      present[obj - first] = true;
  }

  for (i = 0; i < n; ++i) {
    uint32_t type = present[i] ? 0 : NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
    if (nbdkit_add_extent (extents, (first + i) << object_shift,
                           object_size, type) == -1)
      goto out;
  }
  ret = 0;
 out:
  resp_free (&r);
  return ret;
}

static int
s3_flush (void *handle, uint32_t flags)
{
  /* Every write was acknowledged only after S3 acknowledged it. */
  return 0;
}

static struct nbdkit_plugin plugin = {
  .name              = "r3map-s3",
  .longname          = "r3map disk in S3",
  .version           = PACKAGE_VERSION,
  .load              = s3_load,
  .unload            = s3_unload,
  .config            = s3_config,
  .config_complete   = s3_config_complete,
  .config_help       = s3_config_help,
  .dump_plugin       = s3_dump_plugin,
  .get_ready         = s3_get_ready,
  .open              = s3_open,
  .get_size          = s3_get_size,
  .can_write         = s3_can_write,
  .can_multi_conn    = s3_can_multi_conn,
  .can_trim          = s3_can_trim,
  .can_zero          = s3_can_zero,
  .can_flush         = s3_can_flush,
  .can_fua           = s3_can_fua,
  .can_extents       = s3_can_extents,
  .pread             = s3_pread,
  .pwrite            = s3_pwrite,
  .flush             = s3_flush,
  .trim              = s3_trim,
  .zero              = s3_zero,
  .extents           = s3_extents,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)
