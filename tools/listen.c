/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * Where a seeder or a leecher started by the r3map command listens:
 * the options, as nbdkit spells them (-U, -p, --ip for nbdkit's -i,
 * --tls...), turned into nbdkit's arguments and into the NBD URI its
 * clients use.  Nothing is reimplemented: nbdkit checks what it alone
 * can (the certificates, the PSK keys), these only check what would
 * otherwise give a URI that cannot work.
 */

#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib.h>

#include "parse.h"
#include "r3map.h"

void
r3map_listen_clear (struct r3map_listen *l)
{
  g_free (l->unix_socket);
  g_free (l->port);
  g_free (l->ip);
  g_free (l->tls_psk);
  g_free (l->tls_certificates);
  memset (l, 0, sizeof *l);
}

static char *
absolute (const char *path)
{
  return g_canonicalize_filename (path, NULL);
}

int
r3map_listen_option (struct r3map_listen *l, int opt, const char *arg,
                     const char *cmd)
{
  g_autoptr (GError) error = NULL;
  uint64_t port;

  switch (opt) {
  case OPT_UNIX:
    g_free (l->unix_socket);
    l->unix_socket = absolute (arg);
    return 1;
  case OPT_PORT:
    if (!r3map_parse_uint ("--port", arg, 1, 65535, &port, &error)) {
      fprintf (stderr, "%s: %s: %s\n", progname, cmd, error->message);
      return -1;
    }
    g_free (l->port);
    l->port = g_strdup_printf ("%u", (unsigned) port);
    return 1;
  case OPT_IP:
    g_free (l->ip);
    l->ip = g_strdup (arg);
    return 1;
  case OPT_TLS:
    if (strcmp (arg, "off") != 0 && strcmp (arg, "on") != 0 &&
        strcmp (arg, "require") != 0) {
      fprintf (stderr, "%s: %s: --tls=%s: must be off, on or require\n",
               progname, cmd, arg);
      return -1;
    }
    l->tls = strcmp (arg, "off") == 0 ? "off" :
      strcmp (arg, "on") == 0 ? "on" : "require";
    return 1;
  case OPT_TLS_PSK:
    g_free (l->tls_psk);
    l->tls_psk = absolute (arg);
    return 1;
  case OPT_TLS_CERTIFICATES:
    g_free (l->tls_certificates);
    l->tls_certificates = absolute (arg);
    return 1;
  case OPT_TLS_VERIFY_PEER:
    l->tls_verify_peer = true;
    return 1;
  default:
    return 0;
  }
}

bool
r3map_listen_check (struct r3map_listen *l, const char *cmd)
{
  if (l->unix_socket && (l->port || l->ip)) {
    fprintf (stderr, "%s: %s: --unix and --port/--ip: give a Unix socket "
             "or a TCP address, not both\n", progname, cmd);
    return false;
  }
  if (l->tls_psk && l->tls_certificates) {
    fprintf (stderr, "%s: %s: --tls-psk and --tls-certificates: give one "
             "of the two\n", progname, cmd);
    return false;
  }
  if (l->tls && strcmp (l->tls, "off") == 0 &&
      (l->tls_psk || l->tls_certificates || l->tls_verify_peer)) {
    fprintf (stderr, "%s: %s: --tls=off: TLS keys or certificates are "
             "given, but TLS is off\n", progname, cmd);
    return false;
  }
  /* Keys given: a server that would also take clients without them
   * would make the keys pointless.  --tls=on says otherwise. */
  if (!l->tls && (l->tls_psk || l->tls_certificates))
    l->tls = "require";
  if (!l->unix_socket && !l->port)
    l->port = g_strdup ("10809");
  if (l->unix_socket && !r3map_unix_socket_free (l->unix_socket, "--unix", cmd))
    return false;
  return true;
}

/* nbdkit does not remove its socket when it exits, and does not bind
 * over one: a socket left by a server that is gone is removed, as
 * r3map-track does with its control socket; one that a live server
 * listens on is an error. */
bool
r3map_unix_socket_free (const char *path, const char *option, const char *cmd)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  struct stat st;
  int fd, r;

  if (strlen (path) >= sizeof addr.sun_path) {
    fprintf (stderr, "%s: %s: %s=%s: too long for a Unix socket\n",
             progname, cmd, option, path);
    return false;
  }
  if (lstat (path, &st) == -1)
    return true;
  if (!S_ISSOCK (st.st_mode)) {
    fprintf (stderr, "%s: %s: %s=%s: exists and is not a socket\n",
             progname, cmd, option, path);
    return false;
  }
  strcpy (addr.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  r = fd >= 0 ? connect (fd, (struct sockaddr *) &addr, sizeof addr) : -1;
  if (fd >= 0)
    close (fd);
  if (r == 0) {
    fprintf (stderr, "%s: %s: %s=%s: in use by another server\n",
             progname, cmd, option, path);
    return false;
  }
  if (unlink (path) == -1 && errno != ENOENT) {
    fprintf (stderr, "%s: %s: %s=%s: %s\n", progname, cmd, option, path,
             g_strerror (errno));
    return false;
  }
  return true;
}

void
r3map_listen_args (const struct r3map_listen *l, GPtrArray *args)
{
  if (l->unix_socket) {
    g_ptr_array_add (args, g_strdup ("-U"));
    g_ptr_array_add (args, g_strdup (l->unix_socket));
  }
  else {
    g_ptr_array_add (args, g_strdup ("-p"));
    g_ptr_array_add (args, g_strdup (l->port));
    if (l->ip) {
      g_ptr_array_add (args, g_strdup ("-i"));
      g_ptr_array_add (args, g_strdup (l->ip));
    }
  }
  if (l->tls)
    g_ptr_array_add (args, g_strdup_printf ("--tls=%s", l->tls));
  if (l->tls_psk)
    g_ptr_array_add (args, g_strdup_printf ("--tls-psk=%s", l->tls_psk));
  if (l->tls_certificates)
    g_ptr_array_add (args, g_strdup_printf ("--tls-certificates=%s",
                                            l->tls_certificates));
  if (l->tls_verify_peer)
    g_ptr_array_add (args, g_strdup ("--tls-verify-peer"));
}

/* The user name of the first key of a PSK file (psktool's
 * "username:hexkey" lines): libnbd sends the login name unless the URI
 * names one, and a leecher on another host has another login. */
static char *
psk_username (const char *file, const char *cmd)
{
  g_autofree char *line = NULL;
  size_t len = 0;
  FILE *fp = fopen (file, "r");

  if (fp == NULL) {
    fprintf (stderr, "%s: %s: --tls-psk=%s: %s\n", progname, cmd, file,
             g_strerror (errno));
    return NULL;
  }
  while (getline (&line, &len, fp) != -1) {
    char *colon = strchr (line, ':');
    if (colon && colon > line) {
      *colon = '\0';
      fclose (fp);
      return g_uri_escape_string (line, NULL, FALSE);
    }
  }
  fclose (fp);
  fprintf (stderr, "%s: %s: --tls-psk=%s: no \"username:key\" line "
           "(psktool -u NAME -p FILE makes one)\n", progname, cmd, file);
  return NULL;
}

char *
r3map_listen_uri (const struct r3map_listen *l, const char *cmd)
{
  bool tls = l->tls && strcmp (l->tls, "off") != 0;
  g_autofree char *user = NULL, *host = NULL;
  g_autoptr (GString) query = g_string_new ("");

  if (l->tls_psk) {
    g_autofree char *file = g_uri_escape_string (l->tls_psk, "/", FALSE);
    user = psk_username (l->tls_psk, cmd);
    if (user == NULL)
      return NULL;
    g_string_append_printf (query, "tls-psk-file=%s", file);
  }
  if (l->unix_socket) {
    g_autofree char *sock = g_uri_escape_string (l->unix_socket, "/", FALSE);
    return g_strdup_printf ("nbd%s+unix://%s%s/?socket=%s%s%s",
                            tls ? "s" : "", user ? user : "", user ? "@" : "",
                            sock, query->len ? "&" : "", query->str);
  }
  if (l->ip)
    host = strchr (l->ip, ':') ? g_strdup_printf ("[%s]", l->ip)
      : g_strdup (l->ip);
  else
    /* nbdkit listens on every address: the name of this host is the
     * one a leecher elsewhere can use. */
    host = g_strdup (g_get_host_name ());
  return g_strdup_printf ("nbd%s://%s%s%s:%s/%s%s",
                          tls ? "s" : "", user ? user : "", user ? "@" : "",
                          host, l->port, query->len ? "?" : "", query->str);
}
