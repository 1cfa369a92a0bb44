/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "parse.h"
#include "retire.h"
#include "server.h"

static int
remove_one (const char *path, const struct stat *st, int flag,
            struct FTW *ftw)
{
  if (remove (path) == -1)
    hlog_error ("cannot remove %s: %s", path, g_strerror (errno));
  return 0;
}

void
retire_remove_tree (const char *dir)
{
  nftw (dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

bool
retire_running (const struct hook_config *c, const char *uuid,
                const char *target)
{
  g_autofree char *p = server_path (c, uuid, target, ".retire.pid");
  g_autofree char *s = NULL;
  uint64_t pid;

  return g_file_get_contents (p, &s, NULL, NULL) &&
    r3map_parse_uint ("pid", g_strstrip (s), 2, INT32_MAX, &pid, NULL) &&
    kill ((pid_t) pid, 0) == 0;
}

struct retiring {
  struct r3map_disk *d;
  unsigned port;
  gint64 idle_since;            /* 0: a leecher is connected */
  bool done;
};

static char *
disk_path (const struct hook_config *c, struct r3map_domain *dom,
           struct r3map_disk *d, const char *suffix)
{
  return server_path (c, dom->uuid, d->target, suffix);
}

static void
finish (const struct hook_config *c, struct r3map_domain *dom,
        struct retiring *r, bool let_go)
{
  static const char *const files[] = {
    ".ctl", ".seed", ".status", ".created", ".log", ".gw.log",
    ".retire.pid", NULL
  };
  struct r3map_disk *d = r->d;
  g_autofree char *gw = disk_path (c, dom, d, ".gw.pid");
  g_autofree char *pid = disk_path (c, dom, d, ".pid");
  size_t i;

  server_stop (gw);
  server_stop (pid);
  unlink (d->socket);
  for (i = 0; files[i]; ++i) {
    g_autofree char *p = disk_path (c, dom, d, files[i]);
    unlink (p);
  }
  r->done = true;

  if (!let_go) {
    hlog_error ("%s %s: the destination still pulled the disk after %"
                G_GUINT64_FORMAT " ms (retire-timeout): seeder stopped, the "
                "copy here is left as it is", dom->name, d->target,
                c->retire_timeout_ms);
    return;
  }
  hlog_info ("%s %s: the destination let go of the disk: seeder stopped",
             dom->name, d->target);
  if (d->dir == NULL)
    return;
  if (d->remove_source) {
    retire_remove_tree (d->dir);
    hlog_info ("%s %s: removed the source copy %s", dom->name, d->target,
               d->dir);
  }
  else {
    g_autoptr(GDateTime) now = g_date_time_new_now_local ();
    g_autofree char *stamp = g_date_time_format (now, "%Y%m%d-%H%M%S");
    g_autofree char *aside = g_strdup_printf ("%s.migrated-%s", d->dir, stamp);

    if (rename (d->dir, aside) == -1)
      hlog_error ("%s %s: cannot rename %s to %s: %s", dom->name, d->target,
                  d->dir, aside, g_strerror (errno));
    else
      hlog_info ("%s %s: the source copy, older than the destination's, is "
                 "now %s", dom->name, d->target, aside);
  }
}

static void
retire (const struct hook_config *c, struct r3map_domain *dom,
        struct retiring *all, guint n)
{
  gint64 start = g_get_monotonic_time ();
  gint64 end = start + (gint64) c->retire_timeout_ms * 1000;
  guint i, left = n;

  while (left > 0) {
    gint64 now = g_get_monotonic_time ();

    for (i = 0; i < n; ++i) {
      struct retiring *r = &all[i];

      if (r->done)
        continue;
      if (server_tcp_clients (r->port) > 0)
        r->idle_since = 0;
      else if (r->idle_since == 0)
        r->idle_since = now;
      if (r->idle_since &&
          now - r->idle_since >= (gint64) c->retire_grace_ms * 1000) {
        finish (c, dom, r, true);
        left--;
      }
      else if (now >= end) {
        finish (c, dom, r, false);
        left--;
      }
    }
    g_usleep (200 * 1000);
  }
  {
    g_autofree char *dir = g_build_filename (c->run_dir, dom->uuid, NULL);
    rmdir (dir);
  }
}

bool
retire_start (const struct hook_config *c, struct r3map_domain *dom,
              GPtrArray *disks, GError **error)
{
  g_autofree struct retiring *all = g_new0 (struct retiring, disks->len);
  guint i;
  pid_t pid;

  for (i = 0; i < disks->len; ++i) {
    struct r3map_disk *d = disks->pdata[i];
    g_autofree char *seed = disk_path (c, dom, d, ".seed");
    g_autofree char *host = NULL;
    char epoch[17];

    all[i].d = d;
    /* No gateway: nobody can be pulling; the wait ends at once. */
    if (!server_read_endpoint (seed, &host, &all[i].port, epoch))
      all[i].port = 0;
  }

  pid = fork ();
  if (pid == -1) {
    g_set_error (error, R3MAP_ERROR, errno, "fork: %s", g_strerror (errno));
    return false;
  }
  if (pid == 0) {
    int null = open ("/dev/null", O_RDWR);

    /* libvirtd waits for the hook's stdout and stderr to close. */
    setsid ();
    if (null < 0 || dup2 (null, 0) < 0 || dup2 (null, 1) < 0 ||
        dup2 (null, 2) < 0)
      _exit (1);
    for (i = 0; i < disks->len; ++i) {
      g_autofree char *p = disk_path (c, dom, all[i].d, ".retire.pid");
      g_autofree char *s = g_strdup_printf ("%d\n", (int) getpid ());
      g_file_set_contents (p, s, -1, NULL);
    }
    retire (c, dom, all, disks->len);
    _exit (0);
  }
  return true;
}
