/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * r3map-libvirt: r3map's side of libvirt that is not the hook.
 *
 *   r3map-libvirt attach ... DOMAIN.xml [KEY=VALUE...]   (attach.c)
 *       put an r3map disk into a domain's XML
 *   r3map-libvirt watch [--connect=URI] ...               (watch.c)
 *       follow libvirt's domain events: seal a migrating domain's
 *       disks when its source stops, publish where disks are seeded
 */

#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "r3map-libvirt.h"

void
usage (FILE *fp)
{
  fprintf (fp,
           "usage: r3map-libvirt attach [--config=FILE] [--in-place] [--replace]\n"
           "           [--target=DEV] [--bus=BUS] [--socket=PATH] [--chunk-size=SIZE]\n"
           "           [--migration] [--tls-psk=FILE] [--tls-username=NAME]\n"
           "           [--pull-priority=RANGES] [--source-copy=rename|remove]\n"
           "           [--precopy=on|off] --plugin=NAME DOMAIN.xml [KEY=VALUE...]\n"
           "       r3map-libvirt watch [--config=FILE] [--connect=URI] [--pid-file=FILE]\n"
           "       r3map-libvirt --help | --version\n"
           "\n"
           "attach  add an r3map disk (its <disk> and its r3map metadata) to a\n"
           "        domain's XML file, for virsh define\n"
           "watch   follow libvirt's domain events: seal the disks of a domain\n"
           "        that migrates away when its source stops writing\n");
}

int
main (int argc, char *argv[])
{
  if (argc >= 2 && strcmp (argv[1], "attach") == 0)
    return cmd_attach (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "watch") == 0)
    return cmd_watch (argc - 1, argv + 1);
  if (argc >= 2 && strcmp (argv[1], "--version") == 0) {
    printf ("r3map-libvirt %s\n", PACKAGE_VERSION);
    return EXIT_SUCCESS;
  }
  if (argc >= 2 && strcmp (argv[1], "--help") == 0) {
    usage (stdout);
    return EXIT_SUCCESS;
  }
  if (argc >= 2)
    fprintf (stderr, "r3map-libvirt: unknown command '%s'\n", argv[1]);
  usage (stderr);
  return 2;
}
