/* r3map: remote mmap for virtual machines.
 * Copyright the r3map authors.  Licensed under the Apache License 2.0.
 *
 * What the r3map command's subcommands share.
 */

#ifndef R3MAP_TOOL_H
#define R3MAP_TOOL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <glib.h>

#include "pull-state.h"

extern const char *progname;
extern void usage (FILE *fp);

/* Bytes for people: 1.5 GiB, 445 MiB, 12 KiB, 100 B. */
extern void human (uint64_t n, char *buf, size_t len);

extern int cmd_seal (int argc, char *argv[]);
extern int cmd_finalize (int argc, char *argv[]);
extern int cmd_seed (int argc, char *argv[]);
extern int cmd_leech (int argc, char *argv[]);
extern int cmd_migrate (int argc, char *argv[]);
extern int cmd_mount (int argc, char *argv[]);

/* control.c: send COMMAND to an r3map-track control socket and read
 * its one-line answer.  False with a reason in ERROR if it could not be
 * asked or answered "error ...". */
extern bool r3map_control (const char *path, const char *command,
                           char *answer, size_t answer_len,
                           char *error, size_t error_len);

/* progress.c: the progress display of a status file, shared by
 * `status --follow', leech and migrate. */
extern bool r3map_process_alive (uint64_t pid);
extern bool r3map_pull_finished (const struct r3map_pull_counters *c);
extern void r3map_print_bar (const struct r3map_pull_counters *c, bool tty);
/* End the line of a bar redrawn in place, before anything else is
 * printed. */
extern void r3map_end_bar (void);

/* The options of seed, leech and migrate.  The listening ones keep
 * nbdkit's short names. */
enum {
  OPT_UNIX = 'U',
  OPT_PORT = 'p',
  OPT_PID_FILE = 'P',
  OPT_IP = 256,
  OPT_TLS,
  OPT_TLS_PSK,
  OPT_TLS_CERTIFICATES,
  OPT_TLS_VERIFY_PEER,
  OPT_CONTROL,
  OPT_CHUNK_SIZE,
  OPT_STATE,
  OPT_STATUS,
  OPT_INTERVAL,
  OPT_TIMEOUT,
  OPT_SOURCE_UNIX,
  OPT_DEST_UNIX,
  OPT_ON_BEFORE_SYNC,
  OPT_ON_AFTER_SYNC,
  OPT_ON_BEFORE_CLOSE,
  OPT_ON_CHUNK_IS_LOCAL,
};
#define R3MAP_LISTEN_OPTIONS                                            \
  { "unix",             required_argument, NULL, OPT_UNIX },            \
  { "port",             required_argument, NULL, OPT_PORT },            \
  { "ip",               required_argument, NULL, OPT_IP },              \
  { "tls",              required_argument, NULL, OPT_TLS },             \
  { "tls-psk",          required_argument, NULL, OPT_TLS_PSK },         \
  { "tls-certificates", required_argument, NULL, OPT_TLS_CERTIFICATES }, \
  { "tls-verify-peer",  no_argument,       NULL, OPT_TLS_VERIFY_PEER }
#define R3MAP_LISTEN_SHORT "U:p:"

/* listen.c: where a seeder or leecher listens, and its URI. */
struct r3map_listen {
  char *unix_socket;            /* absolute, or NULL for TCP */
  char *port, *ip;
  const char *tls;              /* "off", "on", "require" or NULL */
  char *tls_psk, *tls_certificates;
  bool tls_verify_peer;
};
/* 1 if OPT was one of R3MAP_LISTEN_OPTIONS, 0 if not, -1 if its value
 * is bad (said on stderr). */
extern int r3map_listen_option (struct r3map_listen *l, int opt,
                                const char *arg, const char *cmd);
/* Check the combination, fill in the defaults (TCP port 10809, TLS
 * required when keys are given).  False if bad (said on stderr). */
extern bool r3map_listen_check (struct r3map_listen *l, const char *cmd);
extern void r3map_listen_args (const struct r3map_listen *l, GPtrArray *args);
/* The URI clients use; NULL if the PSK file cannot be read (said). */
extern char *r3map_listen_uri (const struct r3map_listen *l, const char *cmd);
extern void r3map_listen_clear (struct r3map_listen *l);
/* PATH may be bound by a new server: nothing there, or a socket that
 * nobody listens on any more (removed).  False if not (said). */
extern bool r3map_unix_socket_free (const char *path, const char *option,
                                    const char *cmd);

/* modules.c: r3map's nbdkit modules, from the build tree when run from
 * it, else as installed.  r3map_plugin_arg maps dir, s3, redis (and
 * r3map-dir...) to the path of r3map's plugin and passes any other
 * plugin through.  NULL if the module is not there (said). */
extern char *r3map_filter_path (const char *name, const char *cmd);
extern char *r3map_plugin_arg (const char *plugin, const char *cmd);

/* server.c: an nbdkit that r3map started. */
struct r3map_server {
  const char *what;             /* "seeder", "leecher" */
  char *pid_file;
  pid_t pid;                    /* nbdkit's; our child's 0 once waited for */
  int status;                   /* our child's wait status, once waited for */
  bool detached;                /* not our child: goes on after us */
  int alive_fd;                 /* detached: end of file once it exited */
};
extern volatile sig_atomic_t r3map_interrupted;
/* SIGINT, SIGTERM and SIGHUP set r3map_interrupted. */
extern void r3map_catch_signals (void);
/* The nbdkit to run: $R3MAP_NBDKIT, or nbdkit from $PATH. */
extern const char *r3map_nbdkit (void);
/* Run nbdkit ARGS and wait until it listens: as our child, which never
 * outlives us, or DETACHED, to go on after we return.  False if it
 * exited first or did not become ready (said on stderr). */
extern bool r3map_server_start (struct r3map_server *s, GPtrArray *args,
                                bool detached, const char *cmd);
extern bool r3map_server_running (struct r3map_server *s);
/* Wait until it exits (0), or until a signal is caught (-1). */
extern int r3map_server_wait (struct r3map_server *s);
/* One line: how our child ended (a wait status), WHEN. */
extern void r3map_server_report (const struct r3map_server *s,
                                 const char *cmd, int status,
                                 const char *when);
/* TERM, then KILL if it has not exited within a minute. */
extern void r3map_server_stop (struct r3map_server *s);
/* Let a detached server go on without us. */
extern void r3map_server_release (struct r3map_server *s);
/* A private directory for the files nobody named (sockets, pid and
 * status files), and its removal with everything in it. */
extern char *r3map_private_dir (const char *cmd);
extern void r3map_remove_private_dir (char *dir);
/* An option's value that names a size or time, checked. */
extern bool r3map_chunk_size_option (const char *arg, uint64_t *ret,
                                     const char *cmd);
extern bool r3map_duration_option (const char *option, const char *arg,
                                   uint64_t *ret_ms, const char *cmd);
/* One line for getopt_long's '?' or ':' (parsing with opterr = 0). */
extern void r3map_option_error (const char *cmd, char **argv, int opt);

/* hooks.c */
extern void r3map_env_set (gchar ***env, const char *name, const char *value);
extern void r3map_env_set_u64 (gchar ***env, const char *name,
                               uint64_t value);
/* R3MAP_SIZE, R3MAP_CHUNK_SIZE, R3MAP_CHUNKS_TOTAL, R3MAP_CHUNKS_LOCAL,
 * R3MAP_BYTES_PULLED. */
extern void r3map_env_set_counters (gchar ***env,
                                    const struct r3map_pull_counters *c);
/* Run COMMAND with /bin/sh -c in ENV and wait for it.  True if it
 * exited 0; otherwise false, and one line on stderr naming OPTION. */
extern bool r3map_hook_run (const char *cmd, const char *option,
                            const char *command, gchar **env);

/* leech.c, for migrate too: the "finalized:" line, and the final
 * changed set for --on-after-sync (R3MAP_DIRTY_CHUNKS,
 * R3MAP_DIRTY_BYTES, R3MAP_PRECOPY_ROUNDS). */
extern void r3map_print_finalized (const struct r3map_pull_counters *c);
extern void r3map_env_set_final (gchar ***env,
                                 const struct r3map_pull_counters *c);

/* follow.c: follow a leecher's status file; see follow.c. */
struct r3map_follow {
  const char *cmd;              /* "leech", "migrate": for messages */
  const char *status_file;
  struct r3map_server *leecher;
  uint64_t interval_ms;
  bool quiet;
  const char *on_chunk_is_local;
  bool hold_hook;               /* do not run it for now */
  gchar **env;                  /* the hooks' environment, without
                                   R3MAP_PHASE and the counters */
  /* Kept between calls. */
  struct r3map_pull_counters c; /* the last reading */
  bool seen;                    /* the status file was read once */
  gint64 first_us;              /* when it was first looked for */
  bool tty;
  gint64 shown_us;
  uint64_t hook_local;          /* chunks local when the hook last ran */
  bool hook_failed;
};
enum r3map_follow_end {
  R3MAP_FOLLOW_DONE,            /* UNTIL held */
  R3MAP_FOLLOW_GONE,            /* the leecher stopped or exited */
  R3MAP_FOLLOW_INTERRUPTED,     /* a signal was caught */
  R3MAP_FOLLOW_TIMEOUT,
  R3MAP_FOLLOW_ERROR,           /* the status file cannot be read (said) */
};
/* Until UNTIL (the counters) holds, at most TIMEOUT_MS (0: no limit). */
extern enum r3map_follow_end
r3map_follow (struct r3map_follow *f,
              bool (*until) (const struct r3map_pull_counters *c),
              uint64_t timeout_ms);

#endif /* R3MAP_TOOL_H */
