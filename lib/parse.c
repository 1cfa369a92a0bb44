/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0. */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <strings.h>

#include "parse.h"

G_DEFINE_QUARK (r3map-error-quark, r3map_error)

static bool
fail (GError **error, const char *key, const char *value, const char *why)
{
  g_set_error (error, R3MAP_ERROR, EINVAL, "%s=%s: %s", key, value, why);
  return false;
}

/* Leading decimal digits of S as an unsigned number.  Sets *END past
 * them.  Fails on no digits, a sign, or overflow. */
static bool
parse_digits (const char *s, uint64_t *ret, const char **end)
{
  uint64_t v = 0;
  const char *p = s;

  if (*p < '0' || *p > '9')
    return false;
  for (; *p >= '0' && *p <= '9'; ++p) {
    unsigned d = *p - '0';
    if (v > (UINT64_MAX - d) / 10)
      return false;
    v = v * 10 + d;
  }
  *ret = v;
  *end = p;
  return true;
}

bool
r3map_parse_size (const char *key, const char *value, uint64_t *ret,
                  GError **error)
{
  static const char why[] =
    "not a size (bytes, with an optional K, M, G, T, P or E suffix)";
  static const char units[] = "KMGTPE";
  const char *end, *u;
  uint64_t v;
  unsigned shift = 0;

  if (!parse_digits (value, &v, &end))
    return fail (error, key, value, why);
  if (*end != '\0') {
    u = strchr (units, g_ascii_toupper (*end));
    if (u == NULL)
      return fail (error, key, value, why);
    shift = 10 * (u - units + 1);
    end++;
    if (strcmp (end, "iB") != 0 && strcmp (end, "B") != 0 && *end != '\0')
      return fail (error, key, value, why);
    if (v > (UINT64_MAX >> shift))
      return fail (error, key, value, "size too large");
  }
  /* nbdkit and the NBD protocol use signed 64 bit offsets. */
  if ((v << shift) > INT64_MAX)
    return fail (error, key, value, "size too large");
  *ret = v << shift;
  return true;
}

bool
r3map_parse_duration (const char *key, const char *value, uint64_t *ret_ms,
                      GError **error)
{
  static const struct { const char *unit; uint64_t ms; } units[] = {
    { "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 },
    { "h", 3600000 }, { "d", 86400000 },
  };
  const char *end;
  uint64_t v;
  size_t i;

  if (!parse_digits (value, &v, &end))
    return fail (error, key, value,
                 "not a duration (a number with an optional unit ms, s, m, h or d)");
  for (i = 0; i < G_N_ELEMENTS (units); ++i) {
    if (strcmp (end, units[i].unit) == 0) {
      if (v > UINT64_MAX / units[i].ms)
        return fail (error, key, value, "duration too long");
      *ret_ms = v * units[i].ms;
      return true;
    }
  }
  return fail (error, key, value,
               "not a duration (a number with an optional unit ms, s, m, h or d)");
}

bool
r3map_parse_bool (const char *key, const char *value, bool *ret,
                  GError **error)
{
  static const char *const yes[] = { "1", "true", "yes", "on" };
  static const char *const no[] = { "0", "false", "no", "off" };
  size_t i;

  for (i = 0; i < G_N_ELEMENTS (yes); ++i) {
    if (g_ascii_strcasecmp (value, yes[i]) == 0) {
      *ret = true;
      return true;
    }
    if (g_ascii_strcasecmp (value, no[i]) == 0) {
      *ret = false;
      return true;
    }
  }
  return fail (error, key, value, "not a boolean (on/off, true/false, yes/no, 1/0)");
}

bool
r3map_parse_uint (const char *key, const char *value, uint64_t min,
                  uint64_t max, uint64_t *ret, GError **error)
{
  const char *end;
  uint64_t v;

  if (!parse_digits (value, &v, &end) || *end != '\0')
    return fail (error, key, value, "not a non-negative integer");
  if (v < min || v > max) {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "%s=%s: must be between %" PRIu64 " and %" PRIu64,
                 key, value, min, max);
    return false;
  }
  *ret = v;
  return true;
}

void
r3map_nbd_uri_clear (struct r3map_nbd_uri *uri)
{
  g_free (uri->host);
  g_free (uri->socket);
  g_free (uri->export_name);
  memset (uri, 0, sizeof *uri);
}

bool
r3map_parse_nbd_uri (const char *key, const char *value,
                     struct r3map_nbd_uri *ret, GError **error)
{
  g_autoptr (GUri) uri = NULL;
  g_autoptr (GHashTable) params = NULL;
  g_autoptr (GError) e = NULL;
  struct r3map_nbd_uri u = { 0 };
  const char *scheme, *path, *query, *socket;

  uri = g_uri_parse (value, G_URI_FLAGS_NONE, &e);
  if (uri == NULL)
    return fail (error, key, value, "not a URI");

  scheme = g_uri_get_scheme (uri);
  if (strcmp (scheme, "nbd") == 0 || strcmp (scheme, "nbds") == 0)
    u.is_unix = false;
  else if (strcmp (scheme, "nbd+unix") == 0 || strcmp (scheme, "nbds+unix") == 0)
    u.is_unix = true;
  else
    return fail (error, key, value,
                 "not an NBD URI (nbd://, nbds://, nbd+unix:// or nbds+unix://)");
  u.tls = scheme[3] == 's';

  query = g_uri_get_query (uri);
  if (query != NULL) {
    params = g_uri_parse_params (query, -1, "&", G_URI_PARAMS_NONE, &e);
    if (params == NULL)
      return fail (error, key, value, "bad query string");
  }
  socket = params ? g_hash_table_lookup (params, "socket") : NULL;

  if (u.is_unix) {
    if (g_uri_get_host (uri) != NULL && *g_uri_get_host (uri) != '\0')
      return fail (error, key, value, "a Unix socket URI takes no host");
    if (socket == NULL || *socket == '\0')
      return fail (error, key, value, "missing ?socket=PATH");
  }
  else {
    const char *host = g_uri_get_host (uri);
    int port = g_uri_get_port (uri);

    if (host == NULL || *host == '\0')
      return fail (error, key, value, "missing host");
    if (socket != NULL)
      return fail (error, key, value, "socket= is only for nbd+unix:// URIs");
    if (port == 0 || port > 65535)
      return fail (error, key, value, "bad port");
    u.host = g_strdup (host);
    u.port = port < 0 ? 10809 : (unsigned) port;
  }

  path = g_uri_get_path (uri);
  if (*path == '/')
    path++;
  u.socket = g_strdup (socket);
  u.export_name = g_strdup (path);
  *ret = u;
  return true;
}
