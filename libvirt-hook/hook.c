/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map-hook: libvirt's qemu hook for domains whose disks r3map
 * serves.  libvirt runs it (from /etc/libvirt/hooks/qemu.d/) as
 *
 *   r3map-hook DOMAIN OPERATION SUB-OPERATION EXTRA   < domain XML
 *
 * and it acts on four of them (see r3map-hook(1)):
 *
 *   prepare begin   start each disk's nbdkit: a seeder (the plugin under
 *                   r3map-track), or, on the destination of a
 *                   migration, a leecher (r3map-pull from the source's
 *                   seeder, under r3map-track so it can seed again);
 *                   with its TLS gateway if the disk may migrate
 *   release end     stop them, or, on the source of a migration, leave
 *                   a retiring process that stops the seeder once the
 *                   destination has let go of it
 *   migrate begin   (destination) note where the source seeds each
 *                   disk, and print the XML without that note, which
 *                   is only true on the source
 *   anything else   nothing
 *
 * It never calls libvirt (libvirtd is waiting for it, holding the
 * domain: a call back would deadlock), and returns as soon as nbdkit
 * answers.  A failure is one line on stderr, which libvirt shows as the
 * operation's error, and a non-zero exit.
 */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libxml/parser.h>

#include "hook-config.h"
#include "log.h"
#include "meta.h"
#include "parse.h"
#include "pull-state.h"
#include "retire.h"
#include "seeder.h"
#include "server.h"
#include "track-client.h"

/* libvirt's domain XML is far smaller; this bounds a runaway writer. */
#define MAX_XML (64 * 1024 * 1024)

static struct hook_config *cfg;

static void
usage (FILE *fp)
{
  fprintf (fp,
           "usage: r3map-hook [--config=FILE] DOMAIN OPERATION SUB-OPERATION "
           "EXTRA < DOMAIN-XML\n"
           "       r3map-hook --help | --version\n"
           "libvirt's qemu hook for r3map disks: see r3map-hook(1).\n");
}

static char *
read_stdin (size_t *len, GError **error)
{
  g_autoptr(GByteArray) buf = g_byte_array_new ();
  char chunk[65536];
  ssize_t r;

  while ((r = read (STDIN_FILENO, chunk, sizeof chunk)) != 0) {
    if (r == -1) {
      if (errno == EINTR)
        continue;
      g_set_error (error, R3MAP_ERROR, errno, "reading the domain XML on "
                   "stdin: %s", g_strerror (errno));
      return NULL;
    }
    if (buf->len + r > MAX_XML) {
      g_set_error (error, R3MAP_ERROR, EFBIG, "the domain XML on stdin is "
                   "larger than %d bytes", MAX_XML);
      return NULL;
    }
    g_byte_array_append (buf, (guint8 *) chunk, r);
  }
  *len = buf->len;
  g_byte_array_append (buf, (guint8 *) "", 1);
  return (char *) g_byte_array_free (g_steal_pointer (&buf), false);
}

/* ---- Files ----------------------------------------------------------- */

static char *
path (struct r3map_domain *dom, struct r3map_disk *d, const char *suffix)
{
  return server_path (cfg, dom->uuid, d->target, suffix);
}

static bool
make_dir (const char *dir, int mode, GError **error)
{
  if (g_mkdir_with_parents (dir, mode) == -1) {
    g_set_error (error, R3MAP_ERROR, errno, "%s: cannot create: %s", dir,
                 g_strerror (errno));
    return false;
  }
  return true;
}

static void
remove_files (struct r3map_domain *dom, struct r3map_disk *d)
{
  static const char *const suffixes[] = {
    ".pid", ".ctl", ".status", ".gw.pid", ".seed", ".created", ".log",
    ".gw.log", NULL
  };
  size_t i;

  for (i = 0; suffixes[i]; ++i) {
    g_autofree char *p = path (dom, d, suffixes[i]);
    unlink (p);
  }
}

static bool
dir_empty (const char *dir)
{
  GDir *g = g_dir_open (dir, 0, NULL);
  bool empty = g == NULL || g_dir_read_name (g) == NULL;
  if (g)
    g_dir_close (g);
  return empty;
}

/* ---- nbdkit command lines -------------------------------------------- */

static const char *
psk (struct r3map_disk *d)
{
  return d->tls_psk ? d->tls_psk : cfg->tls_psk;
}

static const char *
username (struct r3map_disk *d)
{
  return d->tls_username ? d->tls_username : cfg->tls_username;
}

static GPtrArray *
argv_new (void)
{
  GPtrArray *a = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (a, g_strdup (cfg->nbdkit));
  /* nbdkit forks into the background by itself: its errors at start go
   * to its log file, later ones to syslog.  (In the foreground it ties
   * itself to its parent, the hook, which exits at once.) */
  return a;
}

static void
add (GPtrArray *a, const char *fmt, ...) G_GNUC_PRINTF (2, 3);
static void
add (GPtrArray *a, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_ptr_array_add (a, g_strdup_vprintf (fmt, ap));
  va_end (ap);
}

static bool
run (GPtrArray *a, const char *log, const char *pidfile, const char *socket,
     const char *host, unsigned port, GError **error)
{
  g_autofree char *line = NULL;

  g_ptr_array_add (a, NULL);
  line = g_strjoinv (" ", (char **) a->pdata);
  hlog_info ("starting: %s", line);
  return server_start (cfg, (char **) a->pdata, log, pidfile, socket, host,
                       port, error);
}

/* The disk as QEMU sees it: the plugin under r3map-track, or, when it
 * arrives by migration, under r3map-pull from the source's seeder with
 * r3map-track on top (so that it can be the source of the next one). */
static char *
source_uri (struct r3map_disk *d, const struct r3map_endpoint *ep)
{
  bool v6 = strchr (ep->host, ':') != NULL;
  return g_strdup_printf ("nbds://%s@%s%s%s:%u/?tls-psk-file=%s",
                          username (d), v6 ? "[" : "", ep->host,
                          v6 ? "]" : "", ep->port, psk (d));
}

/* The seeder named in the XML is this run of the source's seeder. */
static bool
check_source (struct r3map_disk *d, const char *uri, GError **error)
{
  struct r3map_seeder_info info;

  if (!r3map_seeder_info (uri, &info, NULL, error)) {
    g_prefix_error (error, "disk %s: the source's seeder: ", d->target);
    return false;
  }
  if (strcmp (info.epoch, d->incoming.epoch) != 0) {
    g_set_error (error, R3MAP_ERROR, ESTALE, "disk %s: the seeder at %s:%u "
                 "is not the one the domain XML names (epoch %s, not %s): "
                 "the XML's note is stale", d->target, d->incoming.host,
                 d->incoming.port, info.epoch, d->incoming.epoch);
    return false;
  }
  if (info.chunk_size != d->chunk_size) {
    g_set_error (error, R3MAP_ERROR, EINVAL, "disk %s: the source tracks "
                 "chunks of %" G_GUINT64_FORMAT " bytes, the XML says %"
                 G_GUINT64_FORMAT, d->target, info.chunk_size, d->chunk_size);
    return false;
  }
  return true;
}

static bool
start_disk (struct r3map_domain *dom, struct r3map_disk *d, bool incoming,
            GError **error)
{
  g_autofree char *pidfile = path (dom, d, ".pid");
  g_autofree char *ctl = path (dom, d, ".ctl");
  g_autofree char *log = path (dom, d, ".log");
  g_autofree char *status = path (dom, d, ".status");
  g_autofree char *state = server_state_path (cfg, dom->uuid, d->target);
  g_autofree char *sockdir = g_path_get_dirname (d->socket);
  g_autofree char *uri = NULL;
  g_autoptr(GPtrArray) a = argv_new ();
  guint i;

  if (retire_running (cfg, dom->uuid, d->target)) {
    g_set_error (error, R3MAP_ERROR, EBUSY, "disk %s: it migrated away from "
                 "this host and its seeder is still serving the destination",
                 d->target);
    return false;
  }
  if (server_running (pidfile)) {
    hlog_info ("%s %s: nbdkit already runs, kept", dom->name, d->target);
    return true;
  }
  if (!make_dir (sockdir, 0755, error))
    return false;
  unlink (d->socket);           /* a stale one: nobody serves it */

  if (!incoming) {
    if (g_file_test (state, G_FILE_TEST_EXISTS)) {
      g_set_error (error, R3MAP_ERROR, EIO, "disk %s: the copy on this host "
                   "is incomplete (a migration to this host did not pull "
                   "every chunk; %s records which): it cannot be started "
                   "here", d->target, state);
      return false;
    }
    unlink (status);
  }
  else {
    g_autofree char *created = path (dom, d, ".created");

    if (access (psk (d), R_OK) == -1) {
      g_set_error (error, R3MAP_ERROR, errno, "disk %s: tls-psk=%s: %s",
                   d->target, psk (d), g_strerror (errno));
      return false;
    }
    uri = source_uri (d, &d->incoming);
    if (!check_source (d, uri, error))
      return false;

    /* The local copy starts empty: a directory that holds anything
     * would be trusted for chunks the leecher never fetched. */
    if (d->dir) {
      if (!dir_empty (d->dir)) {
        g_set_error (error, R3MAP_ERROR, EEXIST, "disk %s: dir=%s is not "
                     "empty: an incoming migration needs an empty local "
                     "copy (move the old one away)", d->target, d->dir);
        return false;
      }
      if (!make_dir (d->dir, 0700, error))
        return false;
      g_file_set_contents (created, "", 0, NULL);
    }
    if (!make_dir (cfg->state_dir, 0700, error))
      return false;
    unlink (state);
  }

  /* r3map-track outermost, so that what QEMU writes is numbered and the
   * disk can migrate on; a leecher's r3map-pull below it. */
  add (a, "--filter=%s", hook_config_module (cfg, "r3map-track"));
  if (incoming)
    add (a, "--filter=%s", hook_config_module (cfg, "r3map-pull"));
  add (a, "-U");
  add (a, "%s", d->socket);
  add (a, "-P");
  add (a, "%s", pidfile);
  add (a, "%s", hook_config_module (cfg, d->plugin));
  for (i = 0; i < d->params->len; ++i)
    add (a, "%s", (char *) d->params->pdata[i]);
  if (incoming) {
    add (a, "source=%s", uri);
    add (a, "state=%s", state);
    add (a, "status=%s", status);
    add (a, "chunk-size=%" G_GUINT64_FORMAT, d->chunk_size);
    if (d->pull_priority)
      add (a, "pull-priority=%s", d->pull_priority);
    if (d->no_precopy)
      add (a, "precopy=off");
    add (a, "wait-finalize=on");
  }
  add (a, "track-control=%s", ctl);
  add (a, "track-chunk-size=%" G_GUINT64_FORMAT, d->chunk_size);
  if (!run (a, log, pidfile, d->socket, NULL, 0, error)) {
    g_prefix_error (error, "disk %s: ", d->target);
    return false;
  }
  return true;
}

/* Other hosts' leechers reach the disk through a second nbdkit: TLS is
 * required on TCP, while QEMU's Unix socket has none, and one nbdkit
 * cannot require TLS on one listener only.  It is read-only: a leecher
 * only reads, and nobody else should write the disk from afar. */
static bool
start_gateway (struct r3map_domain *dom, struct r3map_disk *d,
               GError **error)
{
  g_autofree char *pidfile = path (dom, d, ".gw.pid");
  g_autofree char *log = path (dom, d, ".gw.log");
  g_autofree char *seed = path (dom, d, ".seed");
  g_autofree char *ctl = path (dom, d, ".ctl");
  struct track_status st;
  int attempt;

  if (server_running (pidfile))
    return true;
  /* The epoch names this run of the seeder: a destination checks it, so
   * that an old note of where the disk was seeded is never trusted. */
  if (!track_status (ctl, &st, error) || st.epoch[0] == '\0') {
    g_prefix_error (error, "disk %s: ", d->target);
    return false;
  }
  if (access (psk (d), R_OK) == -1) {
    g_set_error (error, R3MAP_ERROR, errno, "disk %s: tls-psk=%s: %s "
                 "(the disk may migrate: its seeder needs the key)",
                 d->target, psk (d), g_strerror (errno));
    return false;
  }
  /* Another domain's hook may take the port between the probe and
   * nbdkit's bind: try again with the next free one. */
  for (attempt = 0; attempt < 3; ++attempt) {
    g_autoptr(GPtrArray) a = argv_new ();
    GError *err = NULL;
    unsigned port;

    if (!server_free_port (cfg, &port, error))
      return false;
    add (a, "-r");
    add (a, "-i");
    add (a, "%s", cfg->seed_listen);
    add (a, "-p");
    add (a, "%u", port);
    add (a, "-P");
    add (a, "%s", pidfile);
    add (a, "--tls=require");
    add (a, "--tls-psk=%s", psk (d));
    add (a, "nbd");
    add (a, "socket=%s", d->socket);
    /* The views are export names: pass the leecher's through. */
    add (a, "dynamic-export=true");
    if (run (a, log, pidfile, NULL, cfg->seed_listen, port, &err))
      return server_write_endpoint (seed, cfg->seed_address, port,
                                    st.epoch, error);
    if (attempt == 2) {
      g_propagate_prefixed_error (error, err, "disk %s: gateway: ",
                                  d->target);
      return false;
    }
    g_error_free (err);
  }
  return false;
}

static void
stop_disk (struct r3map_domain *dom, struct r3map_disk *d, bool flush)
{
  g_autofree char *pidfile = path (dom, d, ".pid");
  g_autofree char *gw = path (dom, d, ".gw.pid");
  GError *err = NULL;

  server_stop (gw);
  if (flush && server_running (pidfile) &&
      !server_flush (d->socket, 30000, &err)) {
    hlog_error ("%s %s: %s", dom->name, d->target, err->message);
    g_clear_error (&err);
  }
  server_stop (pidfile);
  unlink (d->socket);
}

/* ---- Operations ------------------------------------------------------ */

static int
op_prepare (struct r3map_domain *dom)
{
  g_autofree char *dir = g_build_filename (cfg->run_dir, dom->uuid, NULL);
  GError *err = NULL;
  guint i, started = 0;

  if (!make_dir (dir, 0700, &err))
    goto fail;
  for (i = 0; i < dom->disks->len; ++i, ++started) {
    struct r3map_disk *d = dom->disks->pdata[i];
    bool incoming = d->incoming.host != NULL;

    if (!start_disk (dom, d, incoming, &err) ||
        (d->migration && !start_gateway (dom, d, &err))) {
      started++;
      goto fail;
    }
    if (incoming)
      hlog_info ("%s %s: leeching from %s:%u", dom->name, d->target,
                 d->incoming.host, d->incoming.port);
    else
      hlog_info ("%s %s: serving %s", dom->name, d->target, d->socket);
  }
  return EXIT_SUCCESS;

 fail:
  hlog_error ("domain %s: %s", dom->name, err->message);
  g_error_free (err);
  /* Leave nothing behind: the domain does not start. */
  for (i = 0; i < started; ++i) {
    struct r3map_disk *d = dom->disks->pdata[i];
    g_autofree char *created = path (dom, d, ".created");
    g_autofree char *state = server_state_path (cfg, dom->uuid, d->target);
    bool ours = g_file_test (created, G_FILE_TEST_EXISTS);

    stop_disk (dom, d, false);
    if (ours && d->dir) {
      retire_remove_tree (d->dir);
      unlink (state);
    }
    remove_files (dom, d);
  }
  rmdir (dir);
  return EXIT_FAILURE;
}

/* Copy what nbdkit said into the hook's log before its log goes. */
static void
keep_log (struct r3map_domain *dom, struct r3map_disk *d, const char *suffix)
{
  g_autofree char *log = path (dom, d, suffix);
  g_autofree char *s = NULL;
  g_auto(GStrv) lines = NULL;
  size_t i;

  if (!g_file_get_contents (log, &s, NULL, NULL))
    return;
  lines = g_strsplit (s, "\n", -1);
  for (i = 0; lines[i]; ++i)
    if (*lines[i])
      hlog_info ("%s %s: nbdkit%s: %s", dom->name, d->target,
                 strcmp (suffix, ".log") ? " (gateway)" : "", lines[i]);
}

static int
op_release (struct r3map_domain *dom)
{
  g_autofree char *dir = g_build_filename (cfg->run_dir, dom->uuid, NULL);
  g_autoptr(GPtrArray) retiring = g_ptr_array_new ();
  GError *err = NULL;
  guint i;

  for (i = 0; i < dom->disks->len; ++i) {
    struct r3map_disk *d = dom->disks->pdata[i];
    g_autofree char *pidfile = path (dom, d, ".pid");
    g_autofree char *ctl = path (dom, d, ".ctl");
    g_autofree char *status = path (dom, d, ".status");
    g_autofree char *created = path (dom, d, ".created");
    g_autofree char *seed = path (dom, d, ".seed");
    g_autofree char *state = server_state_path (cfg, dom->uuid, d->target);
    g_autofree char *host = NULL;
    struct r3map_pull_counters c;
    struct track_status st = { .sealed = false };
    bool leecher, running;
    unsigned port = 0, clients = 0;
    char epoch[17];
    uint64_t final;

    if (retire_running (cfg, dom->uuid, d->target))
      continue;
    running = server_running (pidfile) != 0;
    leecher = r3map_pull_status_read (status, &c, NULL);
    if (running) {
      track_status (ctl, &st, NULL);
      if (server_read_endpoint (seed, &host, &port, epoch))
        clients = server_tcp_clients (port);
    }

    if (running && (st.sealed || clients > 0)) {
      /* The domain went to another host, whose leecher pulls the disk
       * from here.  QEMU is gone, so a seal is safe now, and lets the
       * leecher finalize even if the event watcher did not seal. */
      if (!track_seal (ctl, &final, &err)) {
        hlog_error ("%s %s: %s", dom->name, d->target, err->message);
        g_clear_error (&err);
      }
      track_status (ctl, &st, NULL);
      hlog_info ("%s %s: migrated away (sealed at write %" G_GUINT64_FORMAT
                 ", %" G_GUINT64_FORMAT " writes refused after the seal, %u "
                 "leecher connections): the seeder stays until the "
                 "destination lets go", dom->name, d->target, st.final,
                 st.refused, clients);
      g_ptr_array_add (retiring, d);
      continue;
    }

    keep_log (dom, d, ".log");
    keep_log (dom, d, ".gw.log");
    if (leecher && c.leech_finalized_ms == 0) {
      /* An incoming migration that did not happen: the partial copy is
       * nobody's disk. */
      stop_disk (dom, d, false);
      if (d->dir && g_file_test (created, G_FILE_TEST_EXISTS))
        retire_remove_tree (d->dir);
      unlink (state);
      hlog_info ("%s %s: the incoming migration did not finish: leecher "
                 "stopped, partial copy removed", dom->name, d->target);
    }
    else {
      stop_disk (dom, d, running);
      /* A whole copy needs its state no more; a partial one keeps it,
       * and the disk refuses to start here (start_disk). */
      if (leecher && c.chunks_local == c.chunks_total)
        unlink (state);
      else if (leecher)
        hlog_error ("%s %s: stopped before the copy was whole (%"
                    G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " chunks); "
                    "%s keeps track", dom->name, d->target, c.chunks_local,
                    c.chunks_total, state);
      if (running)
        hlog_info ("%s %s: stopped", dom->name, d->target);
    }
    remove_files (dom, d);
  }

  if (retiring->len > 0 && !retire_start (cfg, dom, retiring, &err)) {
    hlog_error ("%s: %s", dom->name, err->message);
    g_error_free (err);
    return EXIT_FAILURE;
  }
  if (retiring->len == 0)
    rmdir (dir);
  return EXIT_SUCCESS;
}

/* On the destination, before anything else: the XML the source sent. */
static int
op_migrate (struct r3map_domain *dom, const char *xml, size_t len)
{
  g_autofree char *out = NULL;
  GError *err = NULL;
  xmlDocPtr doc;
  guint i;

  for (i = 0; i < dom->disks->len; ++i) {
    struct r3map_disk *d = dom->disks->pdata[i];

    if (!d->migration) {
      hlog_error ("domain %s: disk %s has no <r3map:migration>: r3map cannot "
                  "move it (r3map-libvirt attach --migration adds one)",
                  dom->name, d->target);
      return EXIT_FAILURE;
    }
    /* Without a geometry QEMU reads the disk's first sector when it
     * starts, to guess one: on a leecher that read waits for the seal,
     * which waits for this QEMU to start.  The ABI check forbids
     * adding one now. */
    if (!d->geometry) {
      hlog_error ("domain %s: disk %s has no <geometry>: QEMU would read it "
                  "at start, before the migration can finalize (r3map-libvirt "
                  "attach sets one)", dom->name, d->target);
      return EXIT_FAILURE;
    }
    if (d->seeder.host == NULL) {
      hlog_error ("domain %s: the source has not published where it seeds "
                  "disk %s (r3map-libvirt watch does that on the source "
                  "host: is it running?)", dom->name, d->target);
      return EXIT_FAILURE;
    }
  }
  doc = r3map_xml_read (xml, len, "domain XML", &err);
  if (doc == NULL) {
    hlog_error ("domain %s: %s", dom->name, err->message);
    g_error_free (err);
    return EXIT_FAILURE;
  }
  /* Here the source is the seeder of each disk: prepare begin, which
   * gets this XML, starts leechers from it. */
  r3map_xml_seeders_incoming (r3map_xml_metadata (doc));
  out = r3map_xml_format (doc, NULL);
  xmlFreeDoc (doc);
  fputs (out, stdout);
  if (fflush (stdout) == EOF) {
    hlog_error ("domain %s: writing the XML: %s", dom->name,
                g_strerror (errno));
    return EXIT_FAILURE;
  }
  for (i = 0; i < dom->disks->len; ++i) {
    struct r3map_disk *d = dom->disks->pdata[i];
    hlog_info ("%s %s: incoming migration, seeded by %s:%u", dom->name,
               d->target, d->seeder.host, d->seeder.port);
  }
  return EXIT_SUCCESS;
}

int
main (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "config",  required_argument, NULL, 'c' },
    { "help",    no_argument,       NULL, 'h' },
    { "version", no_argument,       NULL, 'V' },
    { NULL, 0, NULL, 0 }
  };
  const char *config_path = NULL, *op, *subop;
  g_autofree char *xml = NULL;
  struct r3map_domain *dom = NULL;
  GError *err = NULL;
  size_t len = 0;
  int opt, status;

  /* "+": stop at the first argument, the domain, whatever it looks like. */
  while ((opt = getopt_long (argc, argv, "+c:h", long_options, NULL)) != -1) {
    switch (opt) {
    case 'c':
      config_path = optarg;
      break;
    case 'h':
      usage (stdout);
      return EXIT_SUCCESS;
    case 'V':
      printf ("r3map-hook %s\n", PACKAGE_VERSION);
      return EXIT_SUCCESS;
    default:
      usage (stderr);
      return 2;
    }
  }
  if (argc - optind != 4) {
    fprintf (stderr, "r3map-hook: expected 4 arguments (DOMAIN OPERATION "
             "SUB-OPERATION EXTRA), as libvirt passes them, got %d\n",
             argc - optind);
    usage (stderr);
    return 2;
  }
  op = argv[optind + 1];
  subop = argv[optind + 2];

  /* Read all of stdin whatever the operation: libvirt writes the XML to
   * every hook, and a hook that does not read it makes that fail. */
  xml = read_stdin (&len, &err);
  if (xml == NULL) {
    fprintf (stderr, "r3map-hook: %s\n", err->message);
    g_error_free (err);
    return EXIT_FAILURE;
  }
  /* libvirt adds operations over time: unknown ones are not ours. */
  if (!((strcmp (op, "prepare") == 0 && strcmp (subop, "begin") == 0) ||
        (strcmp (op, "release") == 0 && strcmp (subop, "end") == 0) ||
        (strcmp (op, "migrate") == 0 && strcmp (subop, "begin") == 0)))
    return EXIT_SUCCESS;

  cfg = hook_config_load (config_path, &err);
  if (cfg == NULL) {
    fprintf (stderr, "r3map-hook: %s\n", err->message);
    g_error_free (err);
    return EXIT_FAILURE;
  }
  hlog_open ("r3map-hook", cfg->log_file);
  if (!r3map_domain_parse (xml, len, &dom, &err)) {
    hlog_error ("domain %s: %s %s: %s", argv[optind], op, subop,
                err->message);
    g_error_free (err);
    status = EXIT_FAILURE;
    goto out;
  }
  if (dom == NULL) {            /* no r3map metadata: not ours */
    status = EXIT_SUCCESS;
    goto out;
  }
  if (dom->name == NULL)
    dom->name = g_strdup (argv[optind]);

  if (strcmp (op, "prepare") == 0)
    status = op_prepare (dom);
  else if (strcmp (op, "release") == 0)
    status = op_release (dom);
  else
    status = op_migrate (dom, xml, len);

 out:
  r3map_domain_free (dom);
  hook_config_free (cfg);
  hlog_close ();
  xmlCleanupParser ();
  return status;
}
