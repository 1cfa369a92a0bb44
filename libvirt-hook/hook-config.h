/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * The host's settings for the libvirt hook and the event watcher: where
 * nbdkit and the modules are, where run-time and persistent files go,
 * and how this host's seeders are reached by other hosts.  Everything
 * that is a property of the *host* lives here; everything that is a
 * property of the *domain* lives in its XML (meta.h), so that a domain
 * can move between hosts that keep their files in different places.
 *
 * The file is a GKeyFile (INI), $(sysconfdir)/r3map/libvirt-hook.conf
 * by default; a missing file means every default.  See r3map-hook(1).
 */

#ifndef R3MAP_HOOK_CONFIG_H
#define R3MAP_HOOK_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

struct hook_config {
  char *nbdkit;                 /* the nbdkit program */
  char *run_dir;                /* sockets, pid files, status files */
  char *state_dir;              /* leecher state files (persistent) */
  char *log_file;               /* "" for none */
  char *seed_listen;            /* address the seeders' gateways bind */
  char *seed_address;           /* address other hosts reach them at */
  unsigned port_min, port_max;  /* the gateways' TCP ports */
  char *tls_psk;                /* default PSK file */
  char *tls_username;           /* default PSK user name */
  uint64_t start_timeout_ms;    /* how long nbdkit may take to answer */
  uint64_t retire_grace_ms;     /* a leecher gone this long is done */
  uint64_t retire_timeout_ms;   /* the longest a retiring seeder waits */
  uint64_t seal_quiet_ms;       /* no write for this long before a seal */
  GHashTable *modules;          /* plugin or filter name -> path */
};

/* The default file. */
extern const char *hook_config_default_path (void);

/* Load PATH (the default file if NULL).  A missing default file is not
 * an error; a missing file named explicitly is.  A bad value fails
 * with a message naming the file, the key and why. */
extern struct hook_config *hook_config_load (const char *path,
                                             GError **error);
extern void hook_config_free (struct hook_config *config);

/* What to give nbdkit for the plugin or filter NAME: the path the
 * [modules] group maps it to, or NAME itself (nbdkit then looks in its
 * own plugin or filter directory). */
extern const char *hook_config_module (const struct hook_config *config,
                                       const char *name);

#endif /* R3MAP_HOOK_CONFIG_H */
