/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Parsers for the values users give on command lines and in
 * configuration: sizes, durations, booleans, bounded integers and NBD
 * URIs.  They never abort: bad input fills a GError whose message
 * names the parameter, the value and what was expected, ready to be
 * printed as the one line of a failed start.
 */

#ifndef R3MAP_PARSE_H
#define R3MAP_PARSE_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#define R3MAP_ERROR (r3map_error_quark ())
extern GQuark r3map_error_quark (void);

/* A number of bytes: decimal digits with an optional suffix K, M, G,
 * T, P or E (powers of 1024; lower case accepted, as are the forms
 * "KiB" and "KB", which also mean 1024).  "0" is a valid size. */
extern bool r3map_parse_size (const char *key, const char *value,
                              uint64_t *ret, GError **error);

/* A duration, returned in milliseconds: a number with an optional unit
 * ms, s, m, h or d.  A bare number is seconds. */
extern bool r3map_parse_duration (const char *key, const char *value,
                                  uint64_t *ret_ms, GError **error);

/* 1/0, true/false, yes/no, on/off, in any case. */
extern bool r3map_parse_bool (const char *key, const char *value,
                              bool *ret, GError **error);

/* A decimal integer in [MIN, MAX]. */
extern bool r3map_parse_uint (const char *key, const char *value,
                              uint64_t min, uint64_t max,
                              uint64_t *ret, GError **error);

/* An NBD URI as libnbd and nbdkit spell them (the NBD URI standard):
 *   nbd://HOST[:PORT][/EXPORT]        nbds://... (TLS)
 *   nbd+unix:///[EXPORT]?socket=PATH  nbds+unix:///... (TLS)
 */
struct r3map_nbd_uri {
  bool tls;
  bool is_unix;
  char *host;                   /* TCP only; IPv6 without brackets. */
  unsigned port;                /* TCP only; 10809 if not given. */
  char *socket;                 /* Unix only. */
  char *export_name;            /* "" for the default export. */
};

extern bool r3map_parse_nbd_uri (const char *key, const char *value,
                                 struct r3map_nbd_uri *ret, GError **error);
extern void r3map_nbd_uri_clear (struct r3map_nbd_uri *uri);

static inline bool
r3map_is_power_of_2 (uint64_t v)
{
  return v != 0 && (v & (v - 1)) == 0;
}

#endif /* R3MAP_PARSE_H */
