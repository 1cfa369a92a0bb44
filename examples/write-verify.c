/* Write through memory, verify from another process.
 *
 *   write-verify URI OFFSET TEXT
 *
 * Maps the export with r3map_map(3), copies TEXT into the region at
 * OFFSET, and sends it to the server with r3map_sync(3).  Then it runs
 * itself again as a separate process ("write-verify --check URI
 * OFFSET TEXT"), which maps the export afresh, read-only, and compares
 * the bytes at OFFSET with TEXT.  Exits 0 if they match.
 *
 * The child does not inherit the parent's region (libr3map maps it
 * MADV_DONTFORK): what it reads comes from the server, so it sees
 * TEXT only if the sync really wrote it.
 *
 * Build it against an installed libr3map with
 *   cc write-verify.c -o write-verify $(pkg-config --cflags --libs libr3map)
 */

#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <libr3map.h>

extern char **environ;

static void
die (const char *prog)
{
  fprintf (stderr, "%s: %s\n", prog, r3map_get_error ());
  exit (EXIT_FAILURE);
}

/* OFFSET and TEXT must fit in the export. */
static size_t
parse_offset (const char *prog, const char *s, const char *text, size_t len)
{
  char *end;
  unsigned long long v;

  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno || *end || end == s || v > len || strlen (text) > len - v) {
    fprintf (stderr, "%s: OFFSET %s: not a number, or TEXT does not fit "
             "in the %zu bytes of the export\n", prog, s, len);
    exit (EXIT_FAILURE);
  }
  return v;
}

static int
check (const char *prog, const char *uri, const char *off_s, const char *text)
{
  void *addr;
  size_t len, off;
  int ok;

  if (r3map_map (uri, R3MAP_MAP_READONLY, &addr, &len) == -1)
    die (prog);
  off = parse_offset (prog, off_s, text, len);
  ok = memcmp ((char *) addr + off, text, strlen (text)) == 0;
  if (!ok)
    fprintf (stderr, "%s: the other process reads '%.*s' at %zu, not '%s'\n",
             prog, (int) strlen (text), (char *) addr + off, off, text);
  if (r3map_unmap (addr, len, 0) == -1)
    die (prog);
  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}

int
main (int argc, char *argv[])
{
  char *child_argv[] = { argv[0], "--check", NULL, NULL, NULL, NULL };
  void *addr;
  size_t len, off;
  pid_t pid;
  int status, e;

  if (argc == 5 && strcmp (argv[1], "--check") == 0)
    exit (check (argv[0], argv[2], argv[3], argv[4]));
  if (argc != 4) {
    fprintf (stderr, "usage: %s URI OFFSET TEXT\n", argv[0]);
    exit (EXIT_FAILURE);
  }

  if (r3map_map (argv[1], 0, &addr, &len) == -1)
    die (argv[0]);
  off = parse_offset (argv[0], argv[2], argv[3], len);
  memcpy ((char *) addr + off, argv[3], strlen (argv[3]));
  if (r3map_sync (addr, len, 0) == -1)
    die (argv[0]);

  /* The region stays mapped while the other process checks: the
   * server, not this process, is what it reads. */
  child_argv[2] = argv[1];
  child_argv[3] = argv[2];
  child_argv[4] = argv[3];
  e = posix_spawn (&pid, "/proc/self/exe", NULL, NULL, child_argv, environ);
  if (e != 0) {
    fprintf (stderr, "%s: cannot run the checking process: %s\n",
             argv[0], strerror (e));
    exit (EXIT_FAILURE);
  }
  if (waitpid (pid, &status, 0) == -1) {
    perror ("waitpid");
    exit (EXIT_FAILURE);
  }
  if (r3map_unmap (addr, len, 0) == -1)
    die (argv[0]);
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
    exit (EXIT_FAILURE);
  printf ("wrote %zu bytes at %zu; another process read them back\n",
          strlen (argv[3]), off);
  exit (EXIT_SUCCESS);
}
