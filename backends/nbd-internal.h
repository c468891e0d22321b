/* ferry: the nbd driver's connections (nbd-conn.c), shared with the volume ops in nbd.c.
 * See nbd.c for the design: the socket driven by the callers waiting on it, one thread per
 * connection for the watchdog and reconnection with backoff, requests submitted again when
 * their connection dies. */
#ifndef FERRY_NBD_INTERNAL_H
#define FERRY_NBD_INTERNAL_H

#include "backends/nbd-uri.h"
#include "backends/volume.h"
#include "common/util.h"

#include <libnbd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum conn_state { CONN_UP, CONN_DOWN, CONN_GONE };

struct connection {
  struct nbd_volume *vol;
  unsigned index;
  struct nbd_handle *h;  /* replaced by the loop thread, holding swap for writing */
  int fd;                /* h's socket */
  bool plain;            /* simple replies only, no meta context: not for block status */
  pthread_rwlock_t swap; /* submitters hold it for reading around nbd_aio_* calls */
  pthread_t thread;
  bool thread_started;
  int wake_fd; /* eventfd: wakes the loop thread (stop, a handle died) */
  int kick_fd; /* eventfd: wakes the caller driving the socket (a request waits to be sent) */
  atomic_bool stop;
  atomic_uint in_flight;    /* for picking the least busy connection, and the watchdog */
  _Atomic double last_life; /* now_seconds() of the socket's last sign of life */
  atomic_int dropped;       /* why we shut the socket down: 0, DROP_SILENT, DROP_DEADLINE */
  pthread_mutex_t lock;     /* protects command.done of commands on this connection, why, */
  bool driving;             /* (lock) a thread is polling the socket (nbd-conn.c) */
  struct spin spin;         /* (driver) the adaptive spin for replies (nbd-conn.c) */
  struct command *waiting;  /* (lock) commands whose callers wait for them */
  enum conn_state state;    /* under vol->state_lock */
  char why[256];            /* (lock) why it died */
};

enum { DROP_SILENT = 1, DROP_DEADLINE = 2 };

struct nbd_volume {
  struct volume v;
  struct nbd_uri uri;
  double timeout;        /* seconds without a sign of life while commands wait (0: never) */
  double reconnect_wait; /* seconds a request waits for a connection to come back */
  struct connection *conns;
  unsigned nconns;
  /* Connection states (each connection's `state`), under state_lock. */
  pthread_mutex_t state_lock;
  pthread_cond_t state_changed;
  unsigned up;
  double down_since; /* when the last connection went down */
  char down_reason[1024];
  /* Writes acknowledged since the last flush, and whether a reconnection may have lost some. */
  atomic_uint_fast64_t unflushed;
  atomic_bool lost_writes;
};

/* One request waiting for its completion callback. */
struct command {
  struct connection *c;
  pthread_cond_t done_cond;
  bool done;
  struct command *next; /* in c->waiting */
  int err;              /* errno from the server or from libnbd (0 = success) */
  /* block status only */
  uint64_t bs_off, bs_len;
  struct extent_list *bs_out;
  int bs_err;
};

enum op_kind { OP_READ, OP_WRITE, OP_ZERO, OP_TRIM, OP_FLUSH, OP_CACHE, OP_STATUS };

/* What to submit: the same op can be submitted again on another connection. */
struct op {
  enum op_kind kind;
  void *buf;
  const void *wbuf;
  uint64_t len, off;
  uint32_t flags;
  struct extent_list *out; /* OP_STATUS */
};

/* "nbd_connect_uri: connect: ..." -> "connect: ..." (libnbd's last error in this thread). */
const char *nbdvol_short_error(void);
/* A new handle with the volume's settings: meta context (`plain`: simple replies only, see
 * nbd.c), block size, TLS credentials. */
struct nbd_handle *nbdvol_make_handle(struct nbd_volume *nv, bool plain);
void nbdvol_cond_init(pthread_cond_t *c);
/* Change a connection's state (and the volume's count of connections up). */
void nbdvol_set_state(struct connection *c, enum conn_state s, const char *why);
/* The loop thread of one connection (pthread start routine). */
void *nbdvol_loop_thread(void *arg);
/* Run op on a connection that is up, retried while connections die under it (see nbd.c). */
int nbdvol_run_op(struct nbd_volume *nv, const struct op *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
