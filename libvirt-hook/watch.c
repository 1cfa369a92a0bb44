/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map-libvirt watch: follow libvirt's domain lifecycle events on this
 * host and do, for r3map disks, what must happen at a moment no hook
 * marks:
 *
 *   suspended (migrated)  the source of a live migration paused its
 *                         vCPUs for the last copy of RAM: once the disk
 *                         is quiet, seal it, so that the destination's
 *                         leecher finalizes while RAM is still moving
 *   resumed               a migration was cancelled or failed after the
 *                         seal and the domain runs here again: unseal
 *   suspended (I/O error) just after such an unseal: a write the seal
 *                         refused paused the guest (attach sets
 *                         error_policy='stop'): resume it, QEMU writes
 *                         again
 *   started, resumed      publish in the live XML where each disk is
 *                         seeded (the destination of the next migration
 *                         reads it there); on the destination of a
 *                         migration, only once the guest runs
 *
 * Why not the hook: libvirt calls no hook on the source of a migration
 * until QEMU has gone (stopped end, release end), which is after the
 * destination has resumed the guest; a seal then would hold the
 * guest's disk I/O on the destination for the whole switch-over.  And
 * a hook may not call libvirt (libvirtd waits for it while holding the
 * domain), which publishing needs.  The suspended event arrives when
 * the source stops, before the last RAM copy.
 *
 * A seal refuses later writes, so it waits for the disk to be quiet
 * (no write completed for seal-quiet, bounded by 2 s): QEMU signals the
 * stop before it has drained the requests already issued.  Without
 * this watcher migrations still work: the hook seals at release end,
 * later.
 */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/parser.h>

#include "hook-config.h"
#include "log.h"
#include "meta.h"
#include "parse.h"
#include "r3map-libvirt.h"
#include "server.h"
#include "track-client.h"

#define QUIET_MAX_MS 2000

static struct hook_config *cfg;
/* Domain UUID -> when the watcher last unsealed its disks. */
static GHashTable *unsealed_at;

/* A guest paused by a refused write this long after an unseal is
 * resumed; later, an I/O error is someone else's. */
#define RESUME_WINDOW_US (30 * G_USEC_PER_SEC)
static volatile sig_atomic_t stopping;
static bool closed;

static void
on_signal (int sig)
{
  stopping = 1;
}

/* The control sockets of the disks the hook serves for domain UUID. */
static GPtrArray *
controls (const char *uuid)
{
  g_autofree char *dir = g_build_filename (cfg->run_dir, uuid, NULL);
  GPtrArray *r = g_ptr_array_new_with_free_func (g_free);
  GDir *d = g_dir_open (dir, 0, NULL);
  const char *name;

  while (d && (name = g_dir_read_name (d)) != NULL)
    if (g_str_has_suffix (name, ".ctl"))
      g_ptr_array_add (r, g_build_filename (dir, name, NULL));
  if (d)
    g_dir_close (d);
  return r;
}

static void
seal_all (const char *name, const char *uuid)
{
  g_autoptr(GPtrArray) ctls = controls (uuid);
  g_autofree uint64_t *writes = NULL;
  gint64 start = g_get_monotonic_time (), quiet_since = start;
  GError *err = NULL;
  guint i;

  if (ctls->len == 0)
    return;
  writes = g_new0 (uint64_t, ctls->len);
  /* Until no disk has completed a write for seal-quiet. */
  for (;;) {
    gint64 now = g_get_monotonic_time ();
    bool changed = false;

    for (i = 0; i < ctls->len; ++i) {
      struct track_status st;
      if (track_status (ctls->pdata[i], &st, NULL) && st.writes != writes[i]) {
        writes[i] = st.writes;
        changed = true;
      }
    }
    if (changed)
      quiet_since = now;
    if (now - quiet_since >= (gint64) cfg->seal_quiet_ms * 1000 ||
        now - start >= QUIET_MAX_MS * 1000)
      break;
    g_usleep (5000);
  }
  for (i = 0; i < ctls->len; ++i) {
    uint64_t final;
    if (track_seal (ctls->pdata[i], &final, &err))
      hlog_info ("%s: suspended for migration: sealed %s at write %"
                 G_GUINT64_FORMAT " (%.1f ms after the event)", name,
                 (char *) ctls->pdata[i], final,
                 (g_get_monotonic_time () - start) / 1000.0);
    else {
      hlog_error ("%s: %s", name, err->message);
      g_clear_error (&err);
    }
  }
}

/* Is any disk of domain UUID sealed? */
static bool
any_sealed (const char *uuid)
{
  g_autoptr(GPtrArray) ctls = controls (uuid);
  guint i;

  for (i = 0; i < ctls->len; ++i) {
    struct track_status st;
    if (track_status (ctls->pdata[i], &st, NULL) && st.sealed)
      return true;
  }
  return false;
}

static void
unseal_all (const char *name, const char *uuid)
{
  g_autoptr(GPtrArray) ctls = controls (uuid);
  GError *err = NULL;
  guint i;

  for (i = 0; i < ctls->len; ++i) {
    struct track_status st;
    if (!track_status (ctls->pdata[i], &st, NULL) || !st.sealed)
      continue;
    g_hash_table_insert (unsealed_at, g_strdup (uuid),
                         g_memdup2 (&(gint64) { g_get_monotonic_time () },
                                    sizeof (gint64)));
    if (track_unseal (ctls->pdata[i], &err))
      hlog_info ("%s: runs here again: unsealed %s", name,
                 (char *) ctls->pdata[i]);
    else {
      hlog_error ("%s: %s", name, err->message);
      g_clear_error (&err);
    }
  }
}

/* The child element NAME of N, or NULL. */
static xmlNodePtr
child (xmlNodePtr n, const char *name)
{
  for (n = n->children; n; n = n->next)
    if (n->type == XML_ELEMENT_NODE && strcmp ((const char *) n->name, name) == 0)
      return n;
  return NULL;
}

/* Set DISK's <seeder>, drop its <incoming>.  libvirt hands its
 * metadata element back without its namespace, and puts it back when
 * it is set: here the names are plain. */
static void
set_seeder (xmlNodePtr disk, const char *host, unsigned port,
            const char *epoch)
{
  g_autofree char *p = g_strdup_printf ("%u", port);
  xmlNodePtr n;

  if ((n = child (disk, "incoming")) != NULL) {
    xmlUnlinkNode (n);
    xmlFreeNode (n);
  }
  if ((n = child (disk, "seeder")) == NULL)
    n = xmlNewChild (disk, NULL, BAD_CAST "seeder", NULL);
  xmlSetProp (n, BAD_CAST "host", BAD_CAST host);
  xmlSetProp (n, BAD_CAST "port", BAD_CAST p);
  xmlSetProp (n, BAD_CAST "epoch", BAD_CAST epoch);
}

/* Write where each disk is seeded into the domain's live XML.  On a
 * thread: libvirt may make it wait for the domain's current job. */
static gpointer
publish (gpointer data)
{
  virDomainPtr dom = data;
  char uuid[VIR_UUID_STRING_BUFLEN];
  const char *name = virDomainGetName (dom);
  g_autofree char *out = NULL;
  char *xml = NULL;
  xmlDocPtr doc = NULL;
  xmlNodePtr root, n;
  GError *err = NULL;
  unsigned count = 0, attempt;

  virDomainGetUUIDString (dom, uuid);
  xml = virDomainGetMetadata (dom, VIR_DOMAIN_METADATA_ELEMENT, R3MAP_XMLNS,
                              VIR_DOMAIN_AFFECT_LIVE);
  if (xml == NULL)              /* not an r3map domain */
    goto out;
  doc = r3map_xml_read (xml, strlen (xml), "r3map metadata", &err);
  if (doc == NULL) {
    hlog_error ("%s: %s", name, err->message);
    goto out;
  }
  root = xmlDocGetRootElement (doc);
  for (n = root->children; n; n = n->next) {
    g_autofree char *target = NULL, *seed = NULL, *host = NULL;
    unsigned port;
    char epoch[17];
    xmlChar *t;

    if (n->type != XML_ELEMENT_NODE ||
        strcmp ((const char *) n->name, "disk") != 0)
      continue;
    t = xmlGetProp (n, BAD_CAST "target");
    target = g_strdup (t ? (const char *) t : "");
    xmlFree (t);
    if (!r3map_valid_name (target))
      continue;
    seed = server_path (cfg, uuid, target, ".seed");
    if (server_read_endpoint (seed, &host, &port, epoch)) {
      set_seeder (n, host, port, epoch);
      count++;
    }
  }
  if (count == 0)
    goto out;
  out = r3map_xml_format (doc, root);
  for (attempt = 0; attempt < 5; ++attempt) {
    if (virDomainSetMetadata (dom, VIR_DOMAIN_METADATA_ELEMENT, out,
                              R3MAP_XMLNS_PREFIX, R3MAP_XMLNS,
                              VIR_DOMAIN_AFFECT_LIVE) == 0) {
      hlog_info ("%s: published where its %u disk%s seeded", name, count,
                 count == 1 ? " is" : "s are");
      goto out;
    }
    g_usleep (500000);
  }
  hlog_error ("%s: cannot publish where its disks are seeded: %s", name,
              virGetLastErrorMessage ());
 out:
  if (err)
    g_error_free (err);
  xmlFreeDoc (doc);
  free (xml);
  virDomainFree (dom);
  return NULL;
}

static void
publish_async (virDomainPtr dom)
{
  GThread *t;

  virDomainRef (dom);
  t = g_thread_new ("publish", publish, dom);
  g_thread_unref (t);
}

/* The guest wrote between its resumption and the unseal, and the write
 * was refused: QEMU paused it (error_policy='stop') and will write
 * again when resumed.  The resumption's event came first, so the disks
 * are unsealed by now.  While a disk is sealed the domain is still
 * migrating (the failed request then goes with it and is written again
 * on the destination): leave it alone. */
static void
resume_after_unseal (virDomainPtr dom, const char *name, const char *uuid)
{
  gint64 *when;

  if (any_sealed (uuid))
    return;
  when = g_hash_table_lookup (unsealed_at, uuid);
  if (when == NULL || g_get_monotonic_time () - *when > RESUME_WINDOW_US)
    return;
  if (virDomainResume (dom) == 0)
    hlog_info ("%s: paused by a write refused before the unseal: resumed, "
               "QEMU writes it again", name);
  else
    hlog_error ("%s: cannot resume after the unseal: %s", name,
                virGetLastErrorMessage ());
}

static int
lifecycle (virConnectPtr conn, virDomainPtr dom, int event, int detail,
           void *opaque)
{
  char uuid[VIR_UUID_STRING_BUFLEN];
  const char *name = virDomainGetName (dom);
  g_autofree char *dir = NULL;

  if (virDomainGetUUIDString (dom, uuid) == -1)
    return 0;
  /* Only domains whose disks the hook serves here. */
  dir = g_build_filename (cfg->run_dir, uuid, NULL);
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR))
    return 0;

  switch (event) {
  case VIR_DOMAIN_EVENT_SUSPENDED:
    if (detail == VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED)
      seal_all (name, uuid);
    else if (detail == VIR_DOMAIN_EVENT_SUSPENDED_IOERROR)
      resume_after_unseal (dom, name, uuid);
    break;
  case VIR_DOMAIN_EVENT_RESUMED:
    unseal_all (name, uuid);
    publish_async (dom);
    break;
  case VIR_DOMAIN_EVENT_STARTED:
    /* An incoming migration is started before the guest resumes: a
     * metadata change then takes a job that libvirt's switch-over waits
     * for, which lengthened the downtime by half a second.  Publish
     * once the guest runs (resumed, above) instead. */
    if (detail != VIR_DOMAIN_EVENT_STARTED_MIGRATED)
      publish_async (dom);
    break;
  default:
    break;
  }
  return 0;
}

static void
on_close (virConnectPtr conn, int reason, void *opaque)
{
  closed = true;
}

static void
tick (int timer, void *opaque)
{
  /* Only wakes the loop up, so that it sees a signal. */
}

static int
watch (const char *uri)
{
  virConnectPtr conn;
  virDomainPtr *doms = NULL;
  int id, timer, n, i;

  conn = virConnectOpen (uri);
  if (conn == NULL) {
    hlog_error ("cannot connect to %s: %s", uri ? uri : "the default URI",
                virGetLastErrorMessage ());
    return -1;
  }
  closed = false;
  virConnectSetKeepAlive (conn, 5, 3);
  virConnectRegisterCloseCallback (conn, on_close, NULL, NULL);
  id = virConnectDomainEventRegisterAny (conn, NULL,
                                         VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                         VIR_DOMAIN_EVENT_CALLBACK (lifecycle),
                                         NULL, NULL);
  if (id == -1) {
    hlog_error ("cannot register for domain events: %s",
                virGetLastErrorMessage ());
    virConnectClose (conn);
    return -1;
  }
  hlog_info ("watching %s", uri ? uri : "the default URI");

  /* Domains started before the watcher. */
  n = virConnectListAllDomains (conn, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
  for (i = 0; i < n; ++i) {
    publish_async (doms[i]);
    virDomainFree (doms[i]);
  }
  free (doms);

  timer = virEventAddTimeout (200, tick, NULL, NULL);
  while (!stopping && !closed)
    if (virEventRunDefaultImpl () < 0)
      break;
  virEventRemoveTimeout (timer);
  virConnectDomainEventDeregisterAny (conn, id);
  virConnectUnregisterCloseCallback (conn, on_close);
  virConnectClose (conn);
  return stopping ? 0 : -1;
}

/* libvirt's own messages go to our log, not to stderr. */
static void
quiet (void *data, virErrorPtr err)
{
}

int
cmd_watch (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "config",   required_argument, NULL, 'c' },
    { "connect",  required_argument, NULL, 'C' },
    { "pid-file", required_argument, NULL, 'p' },
    { "help",     no_argument,       NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  const char *config = NULL, *uri = NULL, *pidfile = NULL;
  struct sigaction sa = { .sa_handler = on_signal };
  GError *err = NULL;
  unsigned backoff = 1;
  int opt;

  while ((opt = getopt_long (argc, argv, "c:h", long_options, NULL)) != -1) {
    switch (opt) {
    case 'c': config = optarg; break;
    case 'C': uri = optarg; break;
    case 'p': pidfile = optarg; break;
    case 'h': usage (stdout); return EXIT_SUCCESS;
    default: usage (stderr); return 2;
    }
  }
  if (optind != argc) {
    usage (stderr);
    return 2;
  }
  cfg = hook_config_load (config, &err);
  if (cfg == NULL) {
    fprintf (stderr, "r3map-libvirt: watch: %s\n", err->message);
    g_error_free (err);
    return EXIT_FAILURE;
  }
  hlog_open ("r3map-libvirt watch", cfg->log_file);
  if (pidfile) {
    g_autofree char *s = g_strdup_printf ("%d\n", (int) getpid ());
    if (!g_file_set_contents (pidfile, s, -1, &err)) {
      hlog_error ("--pid-file=%s: %s", pidfile, err->message);
      g_error_free (err);
      return EXIT_FAILURE;
    }
  }
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGINT, &sa, NULL);
  signal (SIGPIPE, SIG_IGN);
  virSetErrorFunc (NULL, quiet);
  unsealed_at = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  if (virEventRegisterDefaultImpl () == -1) {
    hlog_error ("cannot set up libvirt's event loop");
    return EXIT_FAILURE;
  }

  /* libvirtd restarts (upgrades, reloads): reconnect, with a backoff. */
  while (!stopping) {
    if (watch (uri) == 0)
      break;
    if (stopping)
      break;
    hlog_info ("connection lost: again in %u s", backoff);
    g_usleep (backoff * G_USEC_PER_SEC);
    backoff = MIN (backoff * 2, 30);
  }
  hlog_info ("stopped");
  g_hash_table_unref (unsealed_at);
  if (pidfile)
    unlink (pidfile);
  hook_config_free (cfg);
  hlog_close ();
  xmlCleanupParser ();
  return EXIT_SUCCESS;
}
