/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Unit tests of lib/parse.c: every parser accepts what it documents and
 * turns everything else into an error naming the parameter. */

#include <config.h>

#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "parse.h"

static void
test_size (void)
{
  static const struct { const char *in; uint64_t out; } good[] = {
    { "0", 0 }, { "512", 512 }, { "4k", 4096 }, { "4K", 4096 },
    { "64KiB", 65536 }, { "64KB", 65536 }, { "1M", 1 << 20 },
    { "2G", UINT64_C (2) << 30 }, { "16T", UINT64_C (16) << 40 },
    { "1P", UINT64_C (1) << 50 }, { "4E", UINT64_C (4) << 60 },
    { "9223372036854775807", INT64_MAX },
  };
  static const char *const bad[] = {
    "", "-1", "+1", "1.5G", "G", "1X", "1Gx", "1 G", "0x10", "8E",
    "9223372036854775808", "99999999999999999999", "18446744073709551616K",
  };
  size_t i;

  for (i = 0; i < G_N_ELEMENTS (good); ++i) {
    g_autoptr (GError) e = NULL;
    uint64_t v = 1234;
    g_assert_true (r3map_parse_size ("size", good[i].in, &v, &e));
    g_assert_no_error (e);
    g_assert_cmpuint (v, ==, good[i].out);
  }
  for (i = 0; i < G_N_ELEMENTS (bad); ++i) {
    g_autoptr (GError) e = NULL;
    uint64_t v = 1234;
    g_assert_false (r3map_parse_size ("size", bad[i], &v, &e));
    g_assert_nonnull (e);
    /* The message names the parameter and the value. */
    g_assert_true (g_str_has_prefix (e->message, "size="));
    g_assert_nonnull (strstr (e->message, bad[i]));
    g_assert_cmpuint (v, ==, 1234);
  }
}

static void
test_duration (void)
{
  static const struct { const char *in; uint64_t ms; } good[] = {
    { "0", 0 }, { "5", 5000 }, { "250ms", 250 }, { "30s", 30000 },
    { "2m", 120000 }, { "1h", 3600000 }, { "1d", 86400000 },
  };
  static const char *const bad[] = { "", "-5", "5x", "1.5s", "s", "5 s" };
  size_t i;

  for (i = 0; i < G_N_ELEMENTS (good); ++i) {
    g_autoptr (GError) e = NULL;
    uint64_t v;
    g_assert_true (r3map_parse_duration ("timeout", good[i].in, &v, &e));
    g_assert_cmpuint (v, ==, good[i].ms);
  }
  for (i = 0; i < G_N_ELEMENTS (bad); ++i) {
    g_autoptr (GError) e = NULL;
    uint64_t v;
    g_assert_false (r3map_parse_duration ("timeout", bad[i], &v, &e));
    g_assert_true (g_str_has_prefix (e->message, "timeout="));
  }
}

static void
test_bool (void)
{
  static const char *const yes[] = { "1", "true", "YES", "On" };
  static const char *const no[] = { "0", "False", "no", "OFF" };
  static const char *const bad[] = { "", "2", "maybe", "onn" };
  size_t i;
  bool b;

  for (i = 0; i < G_N_ELEMENTS (yes); ++i) {
    g_assert_true (r3map_parse_bool ("push", yes[i], &b, NULL));
    g_assert_true (b);
    g_assert_true (r3map_parse_bool ("push", no[i], &b, NULL));
    g_assert_false (b);
  }
  for (i = 0; i < G_N_ELEMENTS (bad); ++i) {
    g_autoptr (GError) e = NULL;
    g_assert_false (r3map_parse_bool ("push", bad[i], &b, &e));
    g_assert_true (g_str_has_prefix (e->message, "push="));
  }
}

static void
test_uint (void)
{
  g_autoptr (GError) e = NULL;
  uint64_t v;

  g_assert_true (r3map_parse_uint ("n", "4", 1, 8, &v, NULL));
  g_assert_cmpuint (v, ==, 4);
  g_assert_false (r3map_parse_uint ("n", "0", 1, 8, &v, &e));
  g_assert_cmpstr (e->message, ==, "n=0: must be between 1 and 8");
  g_clear_error (&e);
  g_assert_false (r3map_parse_uint ("n", "9", 1, 8, &v, NULL));
  g_assert_false (r3map_parse_uint ("n", "-1", 0, 8, &v, NULL));
  g_assert_false (r3map_parse_uint ("n", "4x", 0, 8, &v, NULL));
}

static void
test_nbd_uri (void)
{
  struct r3map_nbd_uri u;
  static const char *const bad[] = {
    "", "not a uri", "http://host/", "nbd://", "nbd:///export",
    "nbd+unix:///export", "nbd+unix://host/?socket=/s",
    "nbd://host:99999/", "nbd://host/?socket=/s",
  };
  size_t i;

  g_assert_true (r3map_parse_nbd_uri ("source", "nbd://example.com", &u, NULL));
  g_assert_false (u.tls);
  g_assert_false (u.is_unix);
  g_assert_cmpstr (u.host, ==, "example.com");
  g_assert_cmpuint (u.port, ==, 10809);
  g_assert_cmpstr (u.export_name, ==, "");
  r3map_nbd_uri_clear (&u);

  g_assert_true (r3map_parse_nbd_uri ("source", "nbds://[::1]:10810/vm1", &u, NULL));
  g_assert_true (u.tls);
  g_assert_cmpstr (u.host, ==, "::1");
  g_assert_cmpuint (u.port, ==, 10810);
  g_assert_cmpstr (u.export_name, ==, "vm1");
  r3map_nbd_uri_clear (&u);

  g_assert_true (r3map_parse_nbd_uri ("source",
                                      "nbd+unix:///disk?socket=/run/r3map/vm1.sock",
                                      &u, NULL));
  g_assert_true (u.is_unix);
  g_assert_false (u.tls);
  g_assert_cmpstr (u.socket, ==, "/run/r3map/vm1.sock");
  g_assert_cmpstr (u.export_name, ==, "disk");
  r3map_nbd_uri_clear (&u);

  g_assert_true (r3map_parse_nbd_uri ("source", "nbds+unix://?socket=/s", &u, NULL));
  g_assert_true (u.tls);
  g_assert_cmpstr (u.export_name, ==, "");
  r3map_nbd_uri_clear (&u);

  for (i = 0; i < G_N_ELEMENTS (bad); ++i) {
    g_autoptr (GError) e = NULL;
    g_assert_false (r3map_parse_nbd_uri ("source", bad[i], &u, &e));
    g_assert_true (g_str_has_prefix (e->message, "source="));
  }
}

int
main (int argc, char *argv[])
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/parse/size", test_size);
  g_test_add_func ("/parse/duration", test_duration);
  g_test_add_func ("/parse/bool", test_bool);
  g_test_add_func ("/parse/uint", test_uint);
  g_test_add_func ("/parse/nbd-uri", test_nbd_uri);
  return g_test_run ();
}
