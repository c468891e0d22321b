/* ferry: a ferry-nbd clone server run for a live move, as a process of its own.
 *
 * Once a guest runs on the clone, the server *is* the guest's disk: it must outlive ferry
 * (kill -9, a closed terminal), so it runs in its own session, without a parent-death
 * signal, and is found again through its pidfile by `ferry live-move --resume`.  Its files
 * live in the move's workdir: nbd.sock (the export), nbd.ctl (control socket), nbd.map,
 * nbd.pid, nbd.log (its stderr, appended across restarts).
 */
#ifndef FERRY_CLONE_SERVER_H
#define FERRY_CLONE_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct json_t json_t;

struct clone_server {
  char *program; /* ferry-nbd */
  char *sock, *ctl, *pidfile, *map, *log;
  char *source, *dest;
  uint64_t size;              /* --size (0: the source's) */
  uint64_t region_size, rate; /* 0: defaults */
  pid_t pid;                  /* > 0 while running */
  bool child;                 /* started by this process (reaped with waitpid) */
  char how[96];               /* how it ended, once it did ("killed by signal 9") */
};

/* Fill s for workdir (paths only, nothing started).  program NULL: locate ferry-nbd. */
int clone_server_init(struct clone_server *s, const char *program, const char *workdir,
                      const char *source, const char *dest, uint64_t size, uint64_t region_size,
                      uint64_t rate);
void clone_server_free(struct clone_server *s);

/* Start it (hydrator paused if asked) and wait until its control socket answers and its
 * export listens.  A server that exits first is reported with the end of its log. */
int clone_server_start(struct clone_server *s, bool paused);
/* A server left running by an earlier ferry (its pidfile names a live process): adopt it.
 * 1 adopted, 0 none running. */
int clone_server_adopt(struct clone_server *s);
/* Still running?  A server that ended is reaped and s->how says how. */
bool clone_server_alive(struct clone_server *s);

/* One control request ("status", "resume", ...); *status: a new reference (may be NULL). */
int clone_server_call(struct clone_server *s, const char *command, json_t **status, double timeout);

/* SIGTERM: it finishes in-flight requests, flushes DEST and commits the map, then exits.
 * 0 when it exited cleanly, else -errno with the end of its log. */
int clone_server_stop(struct clone_server *s);
/* Abort: SIGKILL and reap (before the switch, when nothing of value is on DEST). */
void clone_server_kill(struct clone_server *s);

/* The last lines of its log (malloc'd). */
char *clone_server_log_tail(const struct clone_server *s);

#endif
