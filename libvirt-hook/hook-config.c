/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0. */

#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"
#include "hook-config.h"

#define GROUP "hook"

const char *
hook_config_default_path (void)
{
  return SYSCONFDIR "/r3map/libvirt-hook.conf";
}

static bool
get_string (GKeyFile *kf, const char *key, char **ret)
{
  g_autofree char *v = g_key_file_get_string (kf, GROUP, key, NULL);

  if (v == NULL)
    return false;
  g_free (*ret);
  *ret = g_strstrip (g_steal_pointer (&v));
  return true;
}

static bool
get_duration (GKeyFile *kf, const char *path, const char *key,
              uint64_t *ret, GError **error)
{
  g_autofree char *v = g_key_file_get_string (kf, GROUP, key, NULL);
  GError *err = NULL;

  if (v == NULL)
    return true;
  if (!r3map_parse_duration (key, g_strstrip (v), ret, &err)) {
    g_set_error (error, R3MAP_ERROR, EINVAL, "%s: %s", path, err->message);
    g_error_free (err);
    return false;
  }
  return true;
}

/* "10810-10899" or a single port. */
static bool
get_ports (GKeyFile *kf, const char *path, struct hook_config *c,
           GError **error)
{
  g_autofree char *v = g_key_file_get_string (kf, GROUP, "seed-ports", NULL);
  g_auto(GStrv) parts = NULL;
  uint64_t lo, hi;

  if (v == NULL)
    return true;
  g_strstrip (v);
  parts = g_strsplit (v, "-", 2);
  if (!r3map_parse_uint ("seed-ports", parts[0], 1, 65535, &lo, NULL) ||
      (parts[1] && !r3map_parse_uint ("seed-ports", parts[1], 1, 65535,
                                      &hi, NULL)) ||
      (parts[1] && hi < lo)) {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "%s: seed-ports=%s: not a port or a range of ports "
                 "(for example 10810-10899)", path, v);
    return false;
  }
  c->port_min = lo;
  c->port_max = parts[1] ? hi : lo;
  return true;
}

struct hook_config *
hook_config_load (const char *path, GError **error)
{
  struct hook_config *c = g_new0 (struct hook_config, 1);
  g_autoptr(GKeyFile) kf = g_key_file_new ();
  g_auto(GStrv) keys = NULL;
  GError *err = NULL;
  bool explicit = path != NULL;
  size_t i;

  c->nbdkit = g_strdup (NBDKIT_PATH);
  c->run_dir = g_strdup ("/run/r3map");
  c->state_dir = g_strdup (LOCALSTATEDIR "/lib/r3map");
  c->log_file = g_strdup (LOCALSTATEDIR "/log/r3map/libvirt-hook.log");
  c->seed_listen = g_strdup ("0.0.0.0");
  c->seed_address = g_strdup (g_get_host_name ());
  c->port_min = 10810;
  c->port_max = 10899;
  c->tls_psk = g_strdup (SYSCONFDIR "/r3map/keys.psk");
  c->tls_username = g_strdup ("r3map");
  c->start_timeout_ms = 30000;
  c->retire_grace_ms = 10000;
  c->retire_timeout_ms = 3600000;
  c->seal_quiet_ms = 50;
  c->modules = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);

  if (path == NULL)
    path = hook_config_default_path ();
  if (!g_key_file_load_from_file (kf, path, G_KEY_FILE_NONE, &err)) {
    if (!explicit && g_error_matches (err, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
      g_error_free (err);
      return c;
    }
    g_set_error (error, R3MAP_ERROR, EINVAL, "%s: %s", path, err->message);
    g_error_free (err);
    hook_config_free (c);
    return NULL;
  }

  get_string (kf, "nbdkit", &c->nbdkit);
  get_string (kf, "run-dir", &c->run_dir);
  get_string (kf, "state-dir", &c->state_dir);
  get_string (kf, "log-file", &c->log_file);
  get_string (kf, "seed-listen", &c->seed_listen);
  get_string (kf, "seed-address", &c->seed_address);
  get_string (kf, "tls-psk", &c->tls_psk);
  get_string (kf, "tls-username", &c->tls_username);
  if (!get_ports (kf, path, c, error) ||
      !get_duration (kf, path, "start-timeout", &c->start_timeout_ms, error) ||
      !get_duration (kf, path, "retire-grace", &c->retire_grace_ms, error) ||
      !get_duration (kf, path, "retire-timeout", &c->retire_timeout_ms, error) ||
      !get_duration (kf, path, "seal-quiet", &c->seal_quiet_ms, error)) {
    hook_config_free (c);
    return NULL;
  }
  /* Relative paths would depend on libvirtd's working directory. */
  if (c->run_dir[0] != '/' || c->state_dir[0] != '/') {
    g_set_error (error, R3MAP_ERROR, EINVAL,
                 "%s: run-dir and state-dir must be absolute paths", path);
    hook_config_free (c);
    return NULL;
  }

  keys = g_key_file_get_keys (kf, "modules", NULL, NULL);
  for (i = 0; keys && keys[i]; ++i) {
    char *v = g_key_file_get_string (kf, "modules", keys[i], NULL);
    if (v)
      g_hash_table_insert (c->modules, g_strdup (keys[i]), g_strstrip (v));
  }
  return c;
}

void
hook_config_free (struct hook_config *c)
{
  if (c == NULL)
    return;
  g_free (c->nbdkit);
  g_free (c->run_dir);
  g_free (c->state_dir);
  g_free (c->log_file);
  g_free (c->seed_listen);
  g_free (c->seed_address);
  g_free (c->tls_psk);
  g_free (c->tls_username);
  g_hash_table_unref (c->modules);
  g_free (c);
}

const char *
hook_config_module (const struct hook_config *c, const char *name)
{
  const char *path = g_hash_table_lookup (c->modules, name);
  return path ? path : name;
}
