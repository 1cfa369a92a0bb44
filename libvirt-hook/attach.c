/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map-libvirt attach: add an r3map disk to a domain's XML file.
 *
 *   virsh dumpxml vm1 > vm1.xml
 *   r3map-libvirt attach --in-place --plugin=r3map-dir --migration \
 *       vm1.xml dir=/var/lib/r3map/vm1-vda size=20G
 *   virsh define vm1.xml
 *
 * It adds two things and changes nothing else: the disk QEMU sees (a
 * <disk type='network'> on the Unix socket the hook serves) under
 * <devices>, and the disk's <r3map:disk> under <metadata>, which is
 * what the hook reads.  New elements are indented like their
 * neighbours, so that a diff shows only them.  Every value is checked
 * with the hook's own checks (meta.c): what attach writes, the hook
 * accepts.
 */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "hook-config.h"
#include "meta.h"
#include "parse.h"
#include "r3map-libvirt.h"

static int
fail (const char *fmt, ...) G_GNUC_PRINTF (1, 2);
static int
fail (const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;

  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  fprintf (stderr, "r3map-libvirt: attach: %s\n", msg);
  return EXIT_FAILURE;
}

static int
depth (xmlNodePtr n)
{
  int d = 0;
  for (; n && n->type == XML_ELEMENT_NODE; n = n->parent)
    d++;
  return d;                     /* the root element is 1 */
}

static xmlNodePtr
blank (const char *before, int level)
{
  g_autofree char *spaces = g_strnfill (level * 2, ' ');
  g_autofree char *s = g_strconcat (before, spaces, NULL);
  return xmlNewText (BAD_CAST s);
}

/* Append CHILD to PARENT, indented as libvirt indents (two spaces a
 * level), before the blank text that indents PARENT's end tag. */
static xmlNodePtr
append (xmlNodePtr parent, xmlNodePtr child)
{
  int level = depth (parent);   /* the child's indentation, in levels */
  xmlNodePtr last = parent->last;

  if (last && last->type == XML_TEXT_NODE && xmlIsBlankNode (last)) {
    xmlAddPrevSibling (last, child);
    xmlAddPrevSibling (child, blank ("\n", level));
  }
  else {
    xmlAddChild (parent, blank ("\n", level));
    xmlAddChild (parent, child);
    xmlAddChild (parent, blank ("\n", level - 1));
  }
  return child;
}

static xmlNodePtr
element (xmlNodePtr parent, xmlNsPtr ns, const char *name, const char *text)
{
  xmlNodePtr n = xmlNewNode (ns, BAD_CAST name);
  if (text)
    xmlNodeAddContent (n, BAD_CAST text);
  return append (parent, n);
}

static void
set (xmlNodePtr n, const char *name, const char *value)
{
  if (value)
    xmlSetProp (n, BAD_CAST name, BAD_CAST value);
}

static xmlNodePtr
first (xmlXPathContextPtr ctx, const char *expr)
{
  xmlXPathObjectPtr obj = xmlXPathEvalExpression (BAD_CAST expr, ctx);
  xmlNodePtr r = NULL;

  if (obj && obj->nodesetval && obj->nodesetval->nodeNr > 0)
    r = obj->nodesetval->nodeTab[0];
  xmlXPathFreeObject (obj);
  return r;
}

static void
remove_node (xmlNodePtr n)
{
  if (n->prev && n->prev->type == XML_TEXT_NODE && xmlIsBlankNode (n->prev)) {
    xmlNodePtr ws = n->prev;
    xmlUnlinkNode (ws);
    xmlFreeNode (ws);
  }
  xmlUnlinkNode (n);
  xmlFreeNode (n);
}

struct opts {
  const char *config, *target, *bus, *socket, *chunk_size, *plugin;
  const char *tls_psk, *tls_username, *pull_priority, *source_copy;
  const char *precopy;
  bool in_place, replace, migration;
};

static int
check (const struct opts *o, char **params, int nparams)
{
  uint64_t cs;
  GError *err = NULL;
  int i;

  if (o->plugin == NULL)
    return fail ("--plugin=NAME is required (for example r3map-dir)");
  if (!r3map_valid_name (o->plugin))
    return fail ("--plugin=%s: not a plugin name (letters, digits, '-', "
                 "'_', '.')", o->plugin);
  if (!r3map_valid_name (o->target))
    return fail ("--target=%s: not a disk target name", o->target);
  if (!r3map_valid_name (o->bus))
    return fail ("--bus=%s: not a bus name", o->bus);
  if (o->socket && (o->socket[0] != '/' || strlen (o->socket) >= 108))
    return fail ("--socket=%s: must be an absolute path shorter than 108 "
                 "bytes", o->socket);
  if (o->chunk_size) {
    if (!r3map_parse_size ("--chunk-size", o->chunk_size, &cs, &err)) {
      fail ("%s", err->message);
      g_error_free (err);
      return EXIT_FAILURE;
    }
    if (!r3map_is_power_of_2 (cs) || cs < 4096 || cs > 64 * 1024 * 1024)
      return fail ("--chunk-size=%s: must be a power of 2 from 4K to 64M",
                   o->chunk_size);
  }
  if (o->tls_psk && o->tls_psk[0] != '/')
    return fail ("--tls-psk=%s: must be an absolute path", o->tls_psk);
  if (o->tls_username && !r3map_valid_name (o->tls_username))
    return fail ("--tls-username=%s: not a user name", o->tls_username);
  if (o->source_copy && strcmp (o->source_copy, "rename") != 0 &&
      strcmp (o->source_copy, "remove") != 0)
    return fail ("--source-copy=%s: must be rename or remove",
                 o->source_copy);
  if (o->precopy && strcmp (o->precopy, "on") != 0 &&
      strcmp (o->precopy, "off") != 0)
    return fail ("--precopy=%s: must be on or off", o->precopy);
  for (i = 0; i < nparams; ++i) {
    const char *eq = strchr (params[i], '=');
    g_autofree char *key = eq ? g_strndup (params[i], eq - params[i]) : NULL;

    if (key == NULL || !r3map_valid_name (key))
      return fail ("%s: plugin parameters are KEY=VALUE", params[i]);
    if (r3map_param_reserved (key))
      return fail ("%s: the hook sets %s itself", params[i], key);
    if (strcmp (o->plugin, "r3map-dir") == 0 && strcmp (key, "dir") == 0 &&
        eq[1] != '/')
      return fail ("%s: must be an absolute path", params[i]);
  }
  return EXIT_SUCCESS;
}

int
cmd_attach (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "config",        required_argument, NULL, 'c' },
    { "in-place",      no_argument,       NULL, 'i' },
    { "replace",       no_argument,       NULL, 'r' },
    { "target",        required_argument, NULL, 't' },
    { "bus",           required_argument, NULL, 'b' },
    { "socket",        required_argument, NULL, 's' },
    { "chunk-size",    required_argument, NULL, 'C' },
    { "plugin",        required_argument, NULL, 'p' },
    { "migration",     no_argument,       NULL, 'm' },
    { "tls-psk",       required_argument, NULL, 'k' },
    { "tls-username",  required_argument, NULL, 'u' },
    { "pull-priority", required_argument, NULL, 'P' },
    { "source-copy",   required_argument, NULL, 'S' },
    { "precopy",       required_argument, NULL, 'o' },
    { "help",          no_argument,       NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  struct opts o = { .target = "vda", .bus = "virtio" };
  struct hook_config *cfg = NULL;
  g_autofree char *xml = NULL, *out = NULL, *socket = NULL, *expr = NULL;
  xmlDocPtr doc = NULL;
  xmlXPathContextPtr ctx = NULL;
  xmlNodePtr root, uuid_node, devices, meta, rdom, n, disk, plugin, old;
  xmlNsPtr ns;
  g_autofree char *uuid = NULL, *cyls = NULL;
  uint64_t size = 0;
  GError *err = NULL;
  const char *file;
  gsize len;
  int opt, i, status = EXIT_FAILURE;

  while ((opt = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
    switch (opt) {
    case 'c': o.config = optarg; break;
    case 'i': o.in_place = true; break;
    case 'r': o.replace = true; break;
    case 't': o.target = optarg; break;
    case 'b': o.bus = optarg; break;
    case 's': o.socket = optarg; break;
    case 'C': o.chunk_size = optarg; break;
    case 'p': o.plugin = optarg; break;
    case 'm': o.migration = true; break;
    case 'k': o.tls_psk = optarg; o.migration = true; break;
    case 'u': o.tls_username = optarg; o.migration = true; break;
    case 'P': o.pull_priority = optarg; o.migration = true; break;
    case 'S': o.source_copy = optarg; o.migration = true; break;
    case 'o': o.precopy = optarg; o.migration = true; break;
    case 'h': usage (stdout); return EXIT_SUCCESS;
    default: usage (stderr); return 2;
    }
  }
  if (optind >= argc) {
    fail ("give the domain's XML file (virsh dumpxml DOMAIN > FILE)");
    return 2;
  }
  file = argv[optind];
  if (check (&o, argv + optind + 1, argc - optind - 1) != EXIT_SUCCESS)
    return 2;

  cfg = hook_config_load (o.config, &err);
  if (cfg == NULL) {
    fail ("%s", err->message);
    goto out;
  }
  if (!g_file_get_contents (file, &xml, &len, &err)) {
    fail ("%s", err->message);
    goto out;
  }
  doc = r3map_xml_read (xml, len, file, &err);
  if (doc == NULL) {
    fail ("%s", err->message);
    goto out;
  }
  root = xmlDocGetRootElement (doc);
  if (root == NULL || strcmp ((const char *) root->name, "domain") != 0) {
    fail ("%s: not a libvirt domain XML (no <domain>)", file);
    goto out;
  }
  ctx = xmlXPathNewContext (doc);
  xmlXPathRegisterNs (ctx, BAD_CAST R3MAP_XMLNS_PREFIX, BAD_CAST R3MAP_XMLNS);

  /* The hook names its files after the domain's UUID. */
  uuid_node = first (ctx, "/domain/uuid");
  if (uuid_node == NULL) {
    fail ("%s: the domain has no <uuid> (virsh dumpxml of a defined "
          "domain has one)", file);
    goto out;
  }
  {
    xmlChar *u = xmlNodeGetContent (uuid_node);
    uuid = g_strstrip (g_strdup ((const char *) u));
    xmlFree (u);
  }
  if (!r3map_valid_name (uuid)) {
    fail ("%s: <uuid>%s</uuid> is not a UUID", file, uuid);
    goto out;
  }
  devices = first (ctx, "/domain/devices");
  if (devices == NULL) {
    fail ("%s: the domain has no <devices>", file);
    goto out;
  }

  /* <metadata><r3map:domain xmlns:r3map=...> */
  meta = first (ctx, "/domain/metadata");
  if (meta == NULL)
    meta = element (root, NULL, "metadata", NULL);
  rdom = first (ctx, "/domain/metadata/r3map:domain");
  if (rdom == NULL) {
    rdom = xmlNewNode (NULL, BAD_CAST "domain");
    ns = xmlNewNs (rdom, BAD_CAST R3MAP_XMLNS, BAD_CAST R3MAP_XMLNS_PREFIX);
    xmlSetNs (rdom, ns);
    append (meta, rdom);
  }
  ns = rdom->ns;

  g_free (expr);
  expr = g_strdup_printf ("/domain/metadata/r3map:domain/r3map:disk"
                          "[@target='%s']", o.target);
  old = first (ctx, expr);
  if (old && !o.replace) {
    fail ("%s: disk %s already has r3map metadata (--replace replaces it)",
          file, o.target);
    goto out;
  }
  if (old)
    remove_node (old);
  n = element (rdom, ns, "disk", NULL);
  set (n, "target", o.target);
  set (n, "chunk-size", o.chunk_size);
  plugin = element (n, ns, "plugin", NULL);
  set (plugin, "name", o.plugin);
  for (i = optind + 1; i < argc; ++i) {
    const char *eq = strchr (argv[i], '=');
    g_autofree char *key = g_strndup (argv[i], eq - argv[i]);
    xmlNodePtr p = xmlNewNode (ns, BAD_CAST "param");

    if (strcmp (key, "size") == 0)
      r3map_parse_size ("size", eq + 1, &size, NULL);

    /* Text through the escaping API: a value may hold '<' or '&'. */
    xmlNodeAddContent (p, BAD_CAST (eq + 1));
    set (p, "name", key);
    append (plugin, p);
  }
  if (o.migration) {
    xmlNodePtr m = element (n, ns, "migration", NULL);
    set (m, "tls-psk", o.tls_psk);
    set (m, "tls-username", o.tls_username);
    set (m, "pull-priority", o.pull_priority);
    set (m, "source-copy", o.source_copy);
    set (m, "precopy", o.precopy);
  }

  /* 16 heads of 63 sectors; as many cylinders as fit (QEMU's limit is
   * 65535), 16383 if the size is not a parameter. */
  cyls = g_strdup_printf ("%" G_GUINT64_FORMAT, size ?
                          CLAMP (size / (16 * 63 * 512), 1, 65535) : 16383);

  /* The disk QEMU sees. */
  g_free (expr);
  expr = g_strdup_printf ("/domain/devices/disk[target/@dev='%s']", o.target);
  old = first (ctx, expr);
  if (old && !o.replace) {
    fail ("%s: the domain already has a disk %s (--replace replaces it)",
          file, o.target);
    goto out;
  }
  socket = o.socket ? g_strdup (o.socket)
    : g_strdup_printf ("%s/%s/%s.sock", cfg->run_dir, uuid, o.target);
  if (strlen (socket) >= 108) {
    fail ("%s: too long for a Unix socket (give --socket=)", socket);
    goto out;
  }
  disk = xmlNewNode (NULL, BAD_CAST "disk");
  set (disk, "type", "network");
  set (disk, "device", "disk");
  if (old) {
    /* In place, so that the order of the disks (and so the guest's
     * device names) stays. */
    xmlReplaceNode (old, disk);
    xmlFreeNode (old);
  }
  else {
    /* After the last disk, or at the end of <devices>. */
    xmlNodePtr last = NULL, c;
    for (c = devices->children; c; c = c->next)
      if (c->type == XML_ELEMENT_NODE && strcmp ((const char *) c->name,
                                                 "disk") == 0)
        last = c;
    if (last) {
      xmlAddNextSibling (last, disk);
      xmlAddPrevSibling (disk, blank ("\n", depth (devices)));
    }
    else
      append (devices, disk);
  }
  n = element (disk, NULL, "driver", NULL);
  set (n, "name", "qemu");
  set (n, "type", "raw");
  set (n, "cache", "none");
  /* A write refused by a sealed source (a migration cancelled after
   * the seal, before the watcher unsealed) pauses the guest instead of
   * failing in it; the watcher resumes it, and QEMU writes again. */
  set (n, "error_policy", "stop");
  n = element (disk, NULL, "source", NULL);
  set (n, "protocol", "nbd");
  n = element (n, NULL, "host", NULL);
  set (n, "transport", "unix");
  set (n, "socket", socket);
  n = element (disk, NULL, "target", NULL);
  set (n, "dev", o.target);
  set (n, "bus", o.bus);
  /* Without a geometry QEMU reads the first sector when it starts, to
   * guess one; on the destination of a migration that read would wait
   * for the migration to end.  Guests of virtio and SCSI disks take it
   * only as a hint. */
  n = element (disk, NULL, "geometry", NULL);
  set (n, "cyls", cyls);
  set (n, "heads", "16");
  set (n, "secs", "63");

  /* What the hook will make of it: a last check. */
  out = r3map_xml_format (doc, NULL);
  {
    struct r3map_domain *dom = NULL;
    if (!r3map_domain_parse (out, strlen (out), &dom, &err)) {
      fail ("%s", err->message);
      goto out;
    }
    r3map_domain_free (dom);
  }
  if (o.in_place) {
    if (!g_file_set_contents (file, out, -1, &err)) {
      fail ("%s", err->message);
      goto out;
    }
  }
  else
    fputs (out, stdout);
  status = EXIT_SUCCESS;

 out:
  if (err)
    g_error_free (err);
  xmlXPathFreeContext (ctx);
  xmlFreeDoc (doc);
  hook_config_free (cfg);
  xmlCleanupParser ();
  return status;
}
