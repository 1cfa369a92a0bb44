/* libr3map: an NBD export as memory.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * See libr3map(3) and r3map_map(3).  Compile and link with
 *
 *   cc prog.c $(pkg-config --cflags --libs libr3map)
 */

#ifndef LIBR3MAP_H
#define LIBR3MAP_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LIBR3MAP_VERSION_MAJOR 0
#define LIBR3MAP_VERSION_MINOR 1

/* Flags of r3map_map. */
#define R3MAP_MAP_READONLY  0x1 /* PROT_READ only; the export may be read-only */
#define R3MAP_MAP_RANDOM    0x2 /* no readahead: fetch only the touched chunks */

/* Flags of r3map_unmap. */
#define R3MAP_UNMAP_DISCARD 0x1 /* drop writes not yet synced */

extern int r3map_map (const char *uri, unsigned flags, void **addr, size_t *len);
extern int r3map_sync (void *addr, size_t len, unsigned flags);
extern int r3map_unmap (void *addr, size_t len, unsigned flags);

/* The last error of the calling thread: a message and an errno. */
extern const char *r3map_get_error (void);
extern int r3map_get_errno (void);

#ifdef __cplusplus
}
#endif

#endif /* LIBR3MAP_H */
