/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0. */

#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlsave.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "parse.h"
#include "meta.h"

static bool seterr (GError **error, const char *fmt, ...) G_GNUC_PRINTF (2, 3);
static bool
seterr (GError **error, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  g_propagate_error (error, g_error_new_valist (R3MAP_ERROR, EINVAL, fmt, ap));
  va_end (ap);
  return false;
}
#define E(...) seterr (error, __VA_ARGS__)

/* ---- libxml2 --------------------------------------------------------- */

/* libxml2 reports errors through a handler that would print them; keep
 * the last one, to put in the GError. */
static void
keep_error (void *data, const xmlError *err)
{
  char *buf = data;
  if (err && err->message && err->level >= XML_ERR_ERROR)
    snprintf (buf, 256, "line %d: %s", err->line, err->message);
}

xmlDocPtr
r3map_xml_read (const char *xml, size_t len, const char *what,
                GError **error)
{
  char last[256] = "";
  xmlDocPtr doc;

  if (len > INT32_MAX) {
    E ("%s: too large", what);
    return NULL;
  }
  xmlSetStructuredErrorFunc (last, (xmlStructuredErrorFunc) keep_error);
  /* No network, no DTD, no entity expansion: libvirt never sends any. */
  doc = xmlReadMemory (xml, (int) len, "domain.xml", NULL,
                       XML_PARSE_NONET | XML_PARSE_NOWARNING |
                       XML_PARSE_NOERROR);
  xmlSetStructuredErrorFunc (NULL, NULL);
  if (doc == NULL) {
    g_strchomp (last);
    E ("%s: not well-formed XML (%s)", what, last[0] ? last : "empty");
    return NULL;
  }
  return doc;
}

static xmlXPathContextPtr
xpath_new (xmlDocPtr doc)
{
  xmlXPathContextPtr ctx = xmlXPathNewContext (doc);
  if (ctx)
    xmlXPathRegisterNs (ctx, BAD_CAST R3MAP_XMLNS_PREFIX, BAD_CAST R3MAP_XMLNS);
  return ctx;
}

/* The nodes matching EXPR under NODE (a new array, possibly empty). */
static GPtrArray *
find (xmlXPathContextPtr ctx, xmlNodePtr node, const char *expr)
{
  GPtrArray *r = g_ptr_array_new ();
  xmlXPathObjectPtr obj;
  int i;

  ctx->node = node;
  obj = xmlXPathEvalExpression (BAD_CAST expr, ctx);
  if (obj && obj->nodesetval)
    for (i = 0; i < obj->nodesetval->nodeNr; ++i)
      g_ptr_array_add (r, obj->nodesetval->nodeTab[i]);
  xmlXPathFreeObject (obj);
  return r;
}

static xmlNodePtr
find_one (xmlXPathContextPtr ctx, xmlNodePtr node, const char *expr)
{
  g_autoptr(GPtrArray) r = find (ctx, node, expr);
  return r->len ? r->pdata[0] : NULL;
}

/* An attribute or the text of an element, as a g_malloc'd string. */
static char *
attr (xmlNodePtr node, const char *name)
{
  xmlChar *v = xmlGetProp (node, BAD_CAST name);
  char *r = v ? g_strdup ((const char *) v) : NULL;
  xmlFree (v);
  return r;
}

static char *
text (xmlNodePtr node)
{
  xmlChar *v = xmlNodeGetContent (node);
  char *r = g_strdup (v ? (const char *) v : "");
  xmlFree (v);
  return r;
}

char *
r3map_xml_format (xmlDocPtr doc, xmlNodePtr node)
{
  xmlBufferPtr buf = xmlBufferCreate ();
  char *r;

  if (node)
    xmlNodeDump (buf, doc, node, 0, 0);
  else {
    xmlSaveCtxtPtr save = xmlSaveToBuffer (buf, "UTF-8", XML_SAVE_NO_DECL);
    xmlSaveDoc (save, doc);
    xmlSaveClose (save);
  }
  r = g_strndup ((const char *) xmlBufferContent (buf), xmlBufferLength (buf));
  xmlBufferFree (buf);
  return r;
}

/* ---- Checks ---------------------------------------------------------- */

/* Names that become parts of file names or nbdkit module names. */
bool
r3map_valid_name (const char *s)
{
  const char *p;

  if (s == NULL || *s == '\0' || *s == '.' || *s == '-' || strlen (s) > 64)
    return false;
  for (p = s; *p; ++p)
    if (!g_ascii_isalnum (*p) && *p != '-' && *p != '_' && *p != '.')
      return false;
  return true;
}

bool
r3map_valid_host (const char *s)
{
  const char *p;

  if (s == NULL || *s == '\0' || *s == '-' || strlen (s) > 255)
    return false;
  for (p = s; *p; ++p)
    if (!g_ascii_isalnum (*p) && !strchr ("-_.:", *p))
      return false;
  return true;
}

static bool
valid_uuid (const char *s)
{
  const char *p;

  if (s == NULL || strlen (s) != 36)
    return false;
  for (p = s; *p; ++p)
    if (!g_ascii_isxdigit (*p) && *p != '-')
      return false;
  return true;
}

/* Parameters the hook sets itself, or that would configure the filters
 * it stacks (nbdkit hands a filter every key it knows). */
bool
r3map_param_reserved (const char *key)
{
  static const char *const reserved[] = {
    "source", "cache", "chunk-size", "pull-workers", "pull-priority",
    "pull-hints", "push", "push-workers", "push-interval", "retries",
    "retry-delay", "state", "status", "identity", "wait-finalize",
    "precopy", "precopy-interval", "converge-threshold", "converge-rounds",
    "max-rounds", "source-timeout", NULL
  };
  size_t i;

  if (g_str_has_prefix (key, "track-"))
    return true;
  for (i = 0; reserved[i]; ++i)
    if (strcmp (key, reserved[i]) == 0)
      return true;
  return false;
}

/* ---- The domain ------------------------------------------------------ */

static void
disk_free (gpointer p)
{
  struct r3map_disk *d = p;

  g_free (d->target);
  g_free (d->socket);
  g_free (d->plugin);
  if (d->params)
    g_ptr_array_unref (d->params);
  g_free (d->dir);
  g_free (d->tls_psk);
  g_free (d->tls_username);
  g_free (d->pull_priority);
  g_free (d->seeder.host);
  g_free (d->incoming.host);
  g_free (d);
}

void
r3map_domain_free (struct r3map_domain *dom)
{
  if (dom == NULL)
    return;
  g_free (dom->name);
  g_free (dom->uuid);
  g_ptr_array_unref (dom->disks);
  g_free (dom);
}

struct r3map_disk *
r3map_domain_disk (struct r3map_domain *dom, const char *target)
{
  guint i;

  for (i = 0; i < dom->disks->len; ++i) {
    struct r3map_disk *d = dom->disks->pdata[i];
    if (strcmp (d->target, target) == 0)
      return d;
  }
  return NULL;
}

/* The <disk> element QEMU sees: an NBD disk on a Unix socket. */
static bool
parse_qemu_disk (xmlXPathContextPtr ctx, xmlNodePtr root,
                 struct r3map_disk *d, GError **error)
{
  g_autofree char *expr =
    g_strdup_printf ("devices/disk[target/@dev='%s']", d->target);
  g_autoptr(GPtrArray) disks = find (ctx, root, expr);
  g_autofree char *type = NULL, *protocol = NULL, *transport = NULL;
  xmlNodePtr disk, source, host;

  if (disks->len == 0)
    return E ("r3map disk %s: the domain has no <disk> with "
              "<target dev='%s'/>", d->target, d->target);
  if (disks->len > 1)
    return E ("r3map disk %s: the domain has %u disks with that target",
              d->target, disks->len);
  disk = disks->pdata[0];
  type = attr (disk, "type");
  source = find_one (ctx, disk, "source");
  protocol = source ? attr (source, "protocol") : NULL;
  host = source ? find_one (ctx, source, "host") : NULL;
  transport = host ? attr (host, "transport") : NULL;
  if (g_strcmp0 (type, "network") != 0 || g_strcmp0 (protocol, "nbd") != 0 ||
      g_strcmp0 (transport, "unix") != 0)
    return E ("r3map disk %s: its <disk> must be <disk type='network'> with "
              "<source protocol='nbd'><host transport='unix' socket='...'/>"
              "</source> (r3map-libvirt attach writes one)", d->target);
  d->geometry = find_one (ctx, disk, "geometry") != NULL;
  d->socket = attr (host, "socket");
  if (d->socket == NULL || d->socket[0] != '/')
    return E ("r3map disk %s: <host socket=...> must be an absolute path",
              d->target);
  if (strlen (d->socket) >= 108)
    return E ("r3map disk %s: socket=%s: too long for a Unix socket",
              d->target, d->socket);
  return true;
}

/* <r3map:seeder host=... port=... epoch=.../>, or <r3map:incoming>. */
static bool
parse_endpoint (xmlXPathContextPtr ctx, xmlNodePtr node, const char *name,
                struct r3map_disk *d, struct r3map_endpoint *ep,
                GError **error)
{
  g_autofree char *expr = g_strdup_printf ("r3map:%s", name);
  g_autofree char *port = NULL, *epoch = NULL;
  xmlNodePtr n = find_one (ctx, node, expr);
  uint64_t v;
  size_t i;

  if (n == NULL)
    return true;
  ep->host = attr (n, "host");
  port = attr (n, "port");
  epoch = attr (n, "epoch");
  if (!r3map_valid_host (ep->host))
    return E ("r3map disk %s: <r3map:%s host='%s'>: not a host name or "
              "address", d->target, name, ep->host ? ep->host : "");
  if (!port || !r3map_parse_uint ("port", port, 1, 65535, &v, NULL))
    return E ("r3map disk %s: <r3map:%s port='%s'>: not a TCP port",
              d->target, name, port ? port : "");
  ep->port = v;
  if (!epoch || strlen (epoch) != 16)
    return E ("r3map disk %s: <r3map:%s epoch='%s'>: not an r3map-track "
              "epoch (16 hex digits)", d->target, name, epoch ? epoch : "");
  for (i = 0; i < 16; ++i)
    if (!g_ascii_isxdigit (epoch[i]))
      return E ("r3map disk %s: <r3map:%s epoch='%s'>: not an r3map-track "
                "epoch (16 hex digits)", d->target, name, epoch);
  memcpy (ep->epoch, epoch, 17);
  return true;
}

static bool
parse_disk (xmlXPathContextPtr ctx, xmlNodePtr root, xmlNodePtr node,
            struct r3map_disk *d, GError **error)
{
  g_autofree char *cs = NULL, *copy = NULL, *precopy = NULL;
  g_autoptr(GPtrArray) params = NULL;
  xmlNodePtr plugin, mig;
  GError *err = NULL;
  guint i;

  d->target = attr (node, "target");
  if (!r3map_valid_name (d->target))
    return E ("<r3map:disk target='%s'>: not a disk target name",
              d->target ? d->target : "");

  cs = attr (node, "chunk-size");
  d->chunk_size = 65536;
  if (cs) {
    if (!r3map_parse_size ("chunk-size", cs, &d->chunk_size, &err)) {
      E ("r3map disk %s: %s", d->target, err->message);
      g_error_free (err);
      return false;
    }
    if (!r3map_is_power_of_2 (d->chunk_size) || d->chunk_size < 4096 ||
        d->chunk_size > 64 * 1024 * 1024)
      return E ("r3map disk %s: chunk-size=%s: must be a power of 2 from 4K "
                "to 64M", d->target, cs);
  }

  plugin = find_one (ctx, node, "r3map:plugin");
  if (plugin == NULL)
    return E ("r3map disk %s: no <r3map:plugin name='...'> element",
              d->target);
  d->plugin = attr (plugin, "name");
  if (!r3map_valid_name (d->plugin))
    return E ("r3map disk %s: <r3map:plugin name='%s'>: not a plugin name "
              "(letters, digits, '-', '_', '.')", d->target,
              d->plugin ? d->plugin : "");
  d->params = g_ptr_array_new_with_free_func (g_free);
  params = find (ctx, plugin, "r3map:param");
  for (i = 0; i < params->len; ++i) {
    g_autofree char *key = attr (params->pdata[i], "name");
    g_autofree char *value = text (params->pdata[i]);

    if (!r3map_valid_name (key))
      return E ("r3map disk %s: <r3map:param name='%s'>: not a parameter "
                "name", d->target, key ? key : "");
    if (r3map_param_reserved (key))
      return E ("r3map disk %s: <r3map:param name='%s'>: set by the hook, "
                "not by the domain", d->target, key);
    if (strcmp (d->plugin, "r3map-dir") == 0 && strcmp (key, "dir") == 0) {
      if (value[0] != '/')
        return E ("r3map disk %s: dir=%s: must be an absolute path",
                  d->target, value);
      g_free (d->dir);
      d->dir = g_strdup (value);
    }
    g_ptr_array_add (d->params, g_strdup_printf ("%s=%s", key, value));
  }

  mig = find_one (ctx, node, "r3map:migration");
  if (mig) {
    d->migration = true;
    d->tls_psk = attr (mig, "tls-psk");
    d->tls_username = attr (mig, "tls-username");
    d->pull_priority = attr (mig, "pull-priority");
    copy = attr (mig, "source-copy");
    if (copy && strcmp (copy, "remove") != 0 && strcmp (copy, "rename") != 0)
      return E ("r3map disk %s: source-copy='%s': must be 'rename' or "
                "'remove'", d->target, copy);
    d->remove_source = copy && strcmp (copy, "remove") == 0;
    precopy = attr (mig, "precopy");
    if (precopy && strcmp (precopy, "on") != 0 && strcmp (precopy, "off") != 0)
      return E ("r3map disk %s: precopy='%s': must be 'on' or 'off'",
                d->target, precopy);
    d->no_precopy = precopy && strcmp (precopy, "off") == 0;
    if (d->tls_psk && d->tls_psk[0] != '/')
      return E ("r3map disk %s: tls-psk=%s: must be an absolute path",
                d->target, d->tls_psk);
    if (d->tls_username && !r3map_valid_name (d->tls_username))
      return E ("r3map disk %s: tls-username=%s: not a user name",
                d->target, d->tls_username);
  }

  if (!parse_endpoint (ctx, node, "seeder", d, &d->seeder, error) ||
      !parse_endpoint (ctx, node, "incoming", d, &d->incoming, error))
    return false;

  return parse_qemu_disk (ctx, root, d, error);
}

bool
r3map_domain_parse (const char *xml, size_t len, struct r3map_domain **ret,
                    GError **error)
{
  xmlDocPtr doc;
  xmlXPathContextPtr ctx = NULL;
  xmlNodePtr root, meta, n;
  g_autoptr(GPtrArray) disks = NULL;
  struct r3map_domain *dom = NULL;
  bool ok = false;
  guint i;

  *ret = NULL;
  doc = r3map_xml_read (xml, len, "domain XML", error);
  if (doc == NULL)
    return false;
  root = xmlDocGetRootElement (doc);
  if (root == NULL || strcmp ((const char *) root->name, "domain") != 0) {
    E ("domain XML: the root element is not <domain>");
    goto out;
  }
  ctx = xpath_new (doc);
  meta = r3map_xml_metadata (doc);
  if (meta == NULL) {
    ok = true;                  /* not ours */
    goto out;
  }

  dom = g_new0 (struct r3map_domain, 1);
  dom->disks = g_ptr_array_new_with_free_func (disk_free);
  n = find_one (ctx, root, "name");
  dom->name = n ? text (n) : NULL;
  n = find_one (ctx, root, "uuid");
  dom->uuid = n ? text (n) : NULL;
  if (dom->uuid)
    g_strstrip (dom->uuid);
  if (!valid_uuid (dom->uuid)) {
    E ("domain XML: no valid <uuid>");
    goto out;
  }
  disks = find (ctx, meta, "r3map:disk");
  if (disks->len == 0) {
    E ("<r3map:domain>: no <r3map:disk> element");
    goto out;
  }
  for (i = 0; i < disks->len; ++i) {
    struct r3map_disk *d = g_new0 (struct r3map_disk, 1);
    g_ptr_array_add (dom->disks, d);
    if (!parse_disk (ctx, root, disks->pdata[i], d, error))
      goto out;
    if (r3map_domain_disk (dom, d->target) != d) {
      E ("<r3map:domain>: disk %s is named twice", d->target);
      goto out;
    }
  }
  *ret = g_steal_pointer (&dom);
  ok = true;
 out:
  r3map_domain_free (dom);
  xmlXPathFreeContext (ctx);
  xmlFreeDoc (doc);
  return ok;
}

xmlNodePtr
r3map_xml_metadata (xmlDocPtr doc)
{
  xmlXPathContextPtr ctx = xpath_new (doc);
  xmlNodePtr r = find_one (ctx, xmlDocGetRootElement (doc),
                           "/domain/metadata/r3map:domain");
  xmlXPathFreeContext (ctx);
  return r;
}

static void
unlink_tidy (xmlNodePtr n)
{
  /* The indentation before it goes too, so that the XML stays tidy. */
  if (n->prev && n->prev->type == XML_TEXT_NODE && xmlIsBlankNode (n->prev)) {
    xmlNodePtr ws = n->prev;
    xmlUnlinkNode (ws);
    xmlFreeNode (ws);
  }
  xmlUnlinkNode (n);
  xmlFreeNode (n);
}

unsigned
r3map_xml_seeders_incoming (xmlNodePtr meta)
{
  xmlXPathContextPtr ctx = xpath_new (meta->doc);
  g_autoptr(GPtrArray) old = find (ctx, meta, "r3map:disk/r3map:incoming");
  g_autoptr(GPtrArray) r = find (ctx, meta, "r3map:disk/r3map:seeder");
  guint i;

  for (i = 0; i < old->len; ++i)
    unlink_tidy (old->pdata[i]);
  for (i = 0; i < r->len; ++i)
    xmlNodeSetName (r->pdata[i], BAD_CAST "incoming");
  xmlXPathFreeContext (ctx);
  return r->len;
}
