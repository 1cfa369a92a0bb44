/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Unit tests of lib/seeder.c: the leecher reads exactly what
 * r3map-track writes in a view's export description, and nothing that
 * is not one.  (Talking to a real seeder is tested by the shell tests
 * of migration.) */

#include <config.h>

#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "seeder.h"

static void
test_description (void)
{
  struct r3map_seeder_info info;
  g_autoptr (GError) e = NULL;

  g_assert_true (r3map_seeder_parse_description
                 ("r3map-track epoch=0123456789abcdef seq=42 sealed=no "
                  "chunk-size=65536", &info, &e));
  g_assert_no_error (e);
  g_assert_cmpstr (info.epoch, ==, "0123456789abcdef");
  g_assert_cmpuint (info.seq, ==, 42);
  g_assert_false (info.sealed);
  g_assert_cmpuint (info.chunk_size, ==, 65536);

  g_assert_true (r3map_seeder_parse_description
                 ("r3map-track epoch=ffffffffffffffff seq=18446744073709551615 "
                  "sealed=yes final=7 chunk-size=4096 future=word",
                  &info, &e));
  g_assert_no_error (e);
  g_assert_true (info.sealed);
  g_assert_cmpuint (info.final, ==, 7);
  g_assert_cmpuint (info.seq, ==, UINT64_MAX);
}

static void
test_not_a_description (void)
{
  static const char *const bad[] = {
    "",
    "a disk",
    "r3map-track",
    /* each required word missing in turn */
    "r3map-track seq=1 sealed=no chunk-size=65536",
    "r3map-track epoch=0123456789abcdef sealed=no chunk-size=65536",
    "r3map-track epoch=0123456789abcdef seq=1 chunk-size=65536",
    "r3map-track epoch=0123456789abcdef seq=1 sealed=no",
    /* sealed without its final number */
    "r3map-track epoch=0123456789abcdef seq=1 sealed=yes chunk-size=65536",
    /* malformed values */
    "r3map-track epoch=0123 seq=1 sealed=no chunk-size=65536",
    "r3map-track epoch=0123456789ABCDEF seq=1 sealed=no chunk-size=65536",
    "r3map-track epoch=0123456789abcdef seq=x sealed=no chunk-size=65536",
    "r3map-track epoch=0123456789abcdef seq= sealed=no chunk-size=65536",
    "r3map-track epoch=0123456789abcdef seq=99999999999999999999 sealed=no chunk-size=65536",
    "r3map-track epoch=0123456789abcdef seq=1 sealed=maybe chunk-size=65536",
    "r3map-track epoch=0123456789abcdef seq=1 sealed=no chunk-size=64K",
  };
  size_t i;

  for (i = 0; i < G_N_ELEMENTS (bad); ++i) {
    struct r3map_seeder_info info;
    g_autoptr (GError) e = NULL;

    g_assert_false (r3map_seeder_parse_description (bad[i], &info, &e));
    g_assert_nonnull (e);
  }
  {
    struct r3map_seeder_info info;
    g_autoptr (GError) e = NULL;
    g_assert_false (r3map_seeder_parse_description (NULL, &info, &e));
    g_assert_nonnull (e);
  }
}

int
main (int argc, char *argv[])
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/seeder/description", test_description);
  g_test_add_func ("/seeder/not-a-description", test_not_a_description);
  return g_test_run ();
}
