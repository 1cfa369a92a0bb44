/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Where r3map's own nbdkit modules are, for the nbdkit that seed, leech
 * and migrate start.  They are always given to nbdkit by path, because
 * the directories r3map installs into need not be the ones nbdkit
 * searches (a /usr/local install beside Debian's nbdkit, for one).
 *
 * An r3map run from its build tree (tools/r3map, with the tree's
 * config.status one directory up) uses the modules built in that tree,
 * as the tests and scripts/ do; any other uses the directories chosen
 * at configure time ($plugindir, $filterdir).  The choice is made from
 * where the running program is, not from an environment variable, so
 * that an installed r3map never picks up a stale build tree by
 * accident, and no build path is compiled into the program.
 */

#include <config.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "r3map.h"

/* The build tree this program runs from, or NULL when installed. */
static const char *
build_tree (void)
{
  static char *top;
  static bool done;

  if (!done) {
    g_autofree char *self = g_file_read_link ("/proc/self/exe", NULL);
    g_autofree char *tools = self ? g_path_get_dirname (self) : NULL;
    g_autofree char *base = tools ? g_path_get_basename (tools) : NULL;
    g_autofree char *up = tools ? g_path_get_dirname (tools) : NULL;
    g_autofree char *status = up ?
      g_build_filename (up, "config.status", NULL) : NULL;

    if (base && strcmp (base, "tools") == 0 && access (status, F_OK) == 0)
      top = g_steal_pointer (&up);
    done = true;
  }
  return top;
}

char *
r3map_module_path (const char *kind, const char *name)
{
  g_autofree char *file = g_strdup_printf ("nbdkit-r3map-%s-%s.so",
                                           name, kind);
  const char *top = build_tree ();

  if (top)
    return g_build_filename (top, strcmp (kind, "filter") == 0 ?
                             "filters" : "plugins", name, ".libs", file, NULL);
  return g_build_filename (strcmp (kind, "filter") == 0 ?
                           R3MAP_FILTERDIR : R3MAP_PLUGINDIR, file, NULL);
}

char *
r3map_filter_path (const char *name, const char *cmd)
{
  char *path = r3map_module_path ("filter", name);

  if (access (path, R_OK) == -1) {
    fprintf (stderr, "%s: %s: the r3map-%s filter is not at %s (%s)\n",
             progname, cmd, name, path,
             build_tree () ? "run make first" : "is r3map installed?");
    g_free (path);
    return NULL;
  }
  return path;
}

char *
r3map_plugin_arg (const char *plugin, const char *cmd)
{
  static const char *const ours[] = { "dir", "s3", "redis" };
  const char *name = plugin;
  size_t i;

  if (g_str_has_prefix (name, "r3map-"))
    name += strlen ("r3map-");
  for (i = 0; i < G_N_ELEMENTS (ours); ++i) {
    if (strcmp (name, ours[i]) == 0) {
      char *path = r3map_module_path ("plugin", name);

      if (access (path, R_OK) == -1) {
        fprintf (stderr, "%s: %s: the r3map-%s plugin is not at %s (%s)\n",
                 progname, cmd, name, path,
                 build_tree () ? "run make first" : "is r3map installed?");
        g_free (path);
        return NULL;
      }
      return path;
    }
  }
  /* Any other plugin, by name or by path, is nbdkit's to find. */
  return g_strdup (plugin);
}
