/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0. */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include <glib.h>

#include "fdcache.h"

/* One lock guards the table and the LRU list.  It is held only for a
 * hash look-up and a few pointer moves, never across I/O: closing an
 * evicted descriptor happens after it is released. */
struct fdcache {
  pthread_mutex_t lock;
  GHashTable *table;            /* &entry->key -> entry */
  struct fdcache_entry *head;   /* most recently used */
  struct fdcache_entry *tail;   /* least recently used */
  size_t capacity;
};

struct fdcache *
fdcache_new (size_t capacity)
{
  struct fdcache *c = calloc (1, sizeof *c);

  if (c == NULL)
    return NULL;
  pthread_mutex_init (&c->lock, NULL);
  c->table = g_hash_table_new (g_int64_hash, g_int64_equal);
  c->capacity = capacity;
  return c;
}

void
fdcache_free (struct fdcache *c)
{
  struct fdcache_entry *e, *next;

  if (c == NULL)
    return;
  for (e = c->head; e != NULL; e = next) {
    next = e->next;
    close (e->fd);
    free (e);
  }
  g_hash_table_destroy (c->table);
  pthread_mutex_destroy (&c->lock);
  free (c);
}

static void
unlink_entry (struct fdcache *c, struct fdcache_entry *e)
{
  if (e->prev)
    e->prev->next = e->next;
  else
    c->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    c->tail = e->prev;
  e->prev = e->next = NULL;
}

static void
push_front (struct fdcache *c, struct fdcache_entry *e)
{
  e->prev = NULL;
  e->next = c->head;
  if (c->head)
    c->head->prev = e;
  c->head = e;
  if (c->tail == NULL)
    c->tail = e;
}

struct fdcache_entry *
fdcache_lookup (struct fdcache *c, uint64_t key)
{
  struct fdcache_entry *e;

  pthread_mutex_lock (&c->lock);
  e = g_hash_table_lookup (c->table, &key);
  if (e != NULL) {
    e->refs++;
    if (c->head != e) {
      unlink_entry (c, e);
      push_front (c, e);
    }
  }
  pthread_mutex_unlock (&c->lock);
  return e;
}

/* Unlink unreferenced entries from the cold end until the cache fits,
 * returning them as a list for the caller to close outside the lock. */
static struct fdcache_entry *
evict_locked (struct fdcache *c)
{
  struct fdcache_entry *victims = NULL, *e, *prev;

  for (e = c->tail; e != NULL && g_hash_table_size (c->table) > c->capacity;
       e = prev) {
    prev = e->prev;
    if (e->refs > 0)
      continue;
    g_hash_table_remove (c->table, &e->key);
    unlink_entry (c, e);
    e->next = victims;
    victims = e;
  }
  return victims;
}

/* Callers release entries on their error paths too, so closing the
 * evicted descriptors must not change errno. */
static void
close_victims (struct fdcache_entry *victims)
{
  struct fdcache_entry *next;
  int saved_errno = errno;

  for (; victims != NULL; victims = next) {
    next = victims->next;
    close (victims->fd);
    free (victims);
  }
  errno = saved_errno;
}

struct fdcache_entry *
fdcache_insert (struct fdcache *c, uint64_t key, int fd)
{
  struct fdcache_entry *e, *victims;

  pthread_mutex_lock (&c->lock);
  e = g_hash_table_lookup (c->table, &key);
  if (e != NULL) {
    /* Lost a race with another opener: use theirs. */
    e->refs++;
    pthread_mutex_unlock (&c->lock);
    close (fd);
    return e;
  }
  e = calloc (1, sizeof *e);
  if (e == NULL) {
    pthread_mutex_unlock (&c->lock);
    close (fd);
    errno = ENOMEM;
    return NULL;
  }
  e->key = key;
  e->fd = fd;
  e->refs = 1;
  g_hash_table_insert (c->table, &e->key, e);
  push_front (c, e);
  victims = evict_locked (c);
  pthread_mutex_unlock (&c->lock);

  close_victims (victims);
  return e;
}

void
fdcache_release (struct fdcache *c, struct fdcache_entry *e)
{
  struct fdcache_entry *victims = NULL;

  pthread_mutex_lock (&c->lock);
  e->refs--;
  if (e->refs == 0 && g_hash_table_size (c->table) > c->capacity)
    victims = evict_locked (c);
  pthread_mutex_unlock (&c->lock);
  close_victims (victims);
}

void
fdcache_drop (struct fdcache *c, uint64_t key)
{
  struct fdcache_entry *e;

  pthread_mutex_lock (&c->lock);
  e = g_hash_table_lookup (c->table, &key);
  if (e != NULL) {
    g_hash_table_remove (c->table, &key);
    unlink_entry (c, e);
  }
  pthread_mutex_unlock (&c->lock);
  if (e != NULL) {
    close (e->fd);
    free (e);
  }
}
