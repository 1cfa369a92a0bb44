/* An NBD export as memory, checksummed.
 *
 *   checksum URI
 *
 * Maps the export read-only with r3map_map(3) and walks it like an
 * array: each chunk is fetched from the server when the loop first
 * touches it (and, as the walk is sequential, read ahead).  Prints the
 * POSIX checksum of its bytes and their number, as "cksum < FILE"
 * prints them for a file holding the same bytes.
 *
 * Build it against an installed libr3map with
 *   cc checksum.c -o checksum $(pkg-config --cflags --libs libr3map)
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <libr3map.h>

/* The CRC of cksum(1): polynomial 0x04C11DB7, most significant bit
 * first, the length appended, the result inverted. */
static uint32_t table[256];

static void
make_table (void)
{
  uint32_t i, c;
  int k;

  for (i = 0; i < 256; i++) {
    c = i << 24;
    for (k = 0; k < 8; k++)
      c = c & 0x80000000 ? (c << 1) ^ 0x04C11DB7 : c << 1;
    table[i] = c;
  }
}

int
main (int argc, char *argv[])
{
  const unsigned char *p;
  void *addr;
  size_t len, i, n;
  uint32_t crc = 0;

  if (argc != 2) {
    fprintf (stderr, "usage: %s URI\n", argv[0]);
    exit (EXIT_FAILURE);
  }
  if (r3map_map (argv[1], R3MAP_MAP_READONLY, &addr, &len) == -1) {
    fprintf (stderr, "%s: %s\n", argv[0], r3map_get_error ());
    exit (EXIT_FAILURE);
  }

  make_table ();
  p = addr;
  for (i = 0; i < len; i++)
    crc = (crc << 8) ^ table[(crc >> 24) ^ p[i]];
  for (n = len; n > 0; n >>= 8)
    crc = (crc << 8) ^ table[(crc >> 24) ^ (n & 0xff)];
  printf ("%u %zu\n", (unsigned) ~crc, len);

  if (r3map_unmap (addr, len, 0) == -1) {
    fprintf (stderr, "%s: %s\n", argv[0], r3map_get_error ());
    exit (EXIT_FAILURE);
  }
  exit (EXIT_SUCCESS);
}
