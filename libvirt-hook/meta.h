/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * A domain's r3map configuration, as its libvirt XML carries it: the
 * <r3map:domain> element under <metadata>, in the namespace
 * R3MAP_XMLNS, with one <r3map:disk> per disk that r3map serves, and
 * that disk's own <disk type='network'> element (an NBD disk on a Unix
 * socket), which QEMU sees.  The format is documented in
 * r3map-hook(1), DOMAIN XML.
 *
 * Only what carries r3map metadata is looked at; the rest of the XML
 * is never changed.  Every value that ends up in a file name or on
 * nbdkit's command line is checked here, so that a bad domain XML
 * fails with a message naming the element and never reaches a
 * command.
 */

#ifndef R3MAP_HOOK_META_H
#define R3MAP_HOOK_META_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <libxml/tree.h>

#define R3MAP_XMLNS "urn:r3map:libvirt:1"
#define R3MAP_XMLNS_PREFIX "r3map"

struct r3map_disk {
  char *target;                 /* <target dev=...>: vda */
  char *socket;                 /* the NBD disk's Unix socket */
  bool geometry;                /* the <disk> has a <geometry> */
  uint64_t chunk_size;
  char *plugin;                 /* nbdkit plugin name */
  GPtrArray *params;            /* "key=value" for the plugin */
  char *dir;                    /* r3map-dir's dir=, or NULL */
  bool migration;               /* <r3map:migration> present */
  char *tls_psk, *tls_username; /* NULL: the host's defaults */
  char *pull_priority;          /* NULL: none */
  bool remove_source;           /* source-copy='remove' */
  bool no_precopy;              /* precopy='off': a pure post-copy */
  /* Live XML only (r3map-libvirt watch publishes the first, the hook
   * turns it into the second on the destination of a migration). */
  struct r3map_endpoint {
    char *host;
    unsigned port;
    char epoch[17];             /* the seeder's r3map-track epoch */
  } seeder, incoming;
};

struct r3map_domain {
  char *name;
  char *uuid;
  GPtrArray *disks;             /* struct r3map_disk * */
};

/* Parse a domain XML document.  Returns true and sets *RET to NULL if
 * the domain has no r3map metadata, true and a domain if it has valid
 * metadata, false with ERROR if the XML is not a domain or the
 * metadata is wrong. */
extern bool r3map_domain_parse (const char *xml, size_t len,
                                struct r3map_domain **ret, GError **error);
extern void r3map_domain_free (struct r3map_domain *dom);
extern struct r3map_disk *r3map_domain_disk (struct r3map_domain *dom,
                                             const char *target);

/* libxml2 with our defaults: no network, no entities, errors kept
 * (the last one is in the GError) instead of printed. */
extern xmlDocPtr r3map_xml_read (const char *xml, size_t len,
                                 const char *what, GError **error);

/* The <r3map:domain> element of a parsed domain XML, or NULL. */
extern xmlNodePtr r3map_xml_metadata (xmlDocPtr doc);

/* Turn every <r3map:seeder> into an <r3map:incoming> (the destination
 * of a migration: the source seeds it).  Returns how many there were. */
extern unsigned r3map_xml_seeders_incoming (xmlNodePtr meta);

/* The document (or element) as a string, g_free it. */
extern char *r3map_xml_format (xmlDocPtr doc, xmlNodePtr node);

/* Checkers shared with the attach command. */
extern bool r3map_valid_name (const char *s);
extern bool r3map_valid_host (const char *s);
extern bool r3map_param_reserved (const char *key);

#endif /* R3MAP_HOOK_META_H */
