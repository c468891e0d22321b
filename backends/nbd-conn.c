/* ferry: the nbd driver's connections — handles, their event-loop threads, reconnection
 * with backoff, and running a request so that it survives its connection (see nbd.c). */
#include "backends/nbd-internal.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_TIMEOUT 10.0 /* one reconnection attempt */
#define BACKOFF_FIRST 0.1
#define BACKOFF_MAX 5.0
/* The watchdog's clock: the loop thread looks at the time this often. */
#define WATCHDOG_TICK_MS 250
/* Spinning for replies (issue 15), as ferry-nbd spins for requests (nbd-server/serve.c): a
 * caller that waits for its reply first polls the socket without sleeping for up to
 * POLL_SPIN seconds, because waking a thread asleep in poll() costs more than a reply from
 * a local server takes on a virtual machine whose idle vCPU halts.  Adaptive (struct spin,
 * common/util.h): after SPIN_MISSES spins in a row that ran out (a slow or distant server) it
 * sleeps at once, until a reply again comes within POLL_SPIN of the caller going to sleep.
 * Only a caller whose command is the volume's only one spins: with more in flight, on any
 * connection, the CPU is better left to the threads producing them (bench/fuse's 4-job row
 * lost a third to spinning), and only while half the CPUs are not already spinning
 * (spin_slot_take). */
#define POLL_SPIN 50e-6

/* ---- handles ---- */

const char *
nbdvol_short_error(void)
{
  const char *msg = nbd_get_error();
  if (!msg)
    return "unknown error";
  const char *colon = strstr(msg, ": ");
  if (strncmp(msg, "nbd_", 4) == 0 && colon)
    return colon + 2;
  return msg;
}

/* Dead (failed) or closed (the server hung up): either way a reconnection is needed. */
static bool
handle_gone(struct nbd_handle *h)
{
  return nbd_aio_is_dead(h) || nbd_aio_is_closed(h);
}

/* A new handle with our settings: meta context (or, `plain`, simple replies only), block
 * size, TLS credentials. */
struct nbd_handle *
nbdvol_make_handle(struct nbd_volume *nv, bool plain)
{
  struct nbd_handle *h = nbd_create();
  if (!h)
    return NULL;
  const struct nbd_uri *u = &nv->uri;
  if ((plain ? nbd_set_request_structured_replies(h, false)
             : nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION))
          < 0
      || nbd_set_request_block_size(h, true) < 0
      /* No zeroing of every read buffer before the read (11% of ferry-fuse's CPU on 1 MiB
       * reads): a failed read's buffer is never used here, and libnbd fails a reply that
       * does not cover the whole request. */
      || nbd_set_pread_initialize(h, false) < 0
      || (u->tls_certificates && nbd_set_tls_certificates(h, u->tls_certificates) < 0)
      || (u->tls_psk_file && nbd_set_tls_psk_file(h, u->tls_psk_file) < 0)
      || (u->tls_username && nbd_set_tls_username(h, u->tls_username) < 0)) {
    nbd_close(h);
    return NULL;
  }
  return h;
}

/* ---- connection states ---- */

void
nbdvol_set_state(struct connection *c, enum conn_state s, const char *why)
{
  struct nbd_volume *nv = c->vol;
  pthread_mutex_lock(&nv->state_lock);
  if (c->state == CONN_UP && s != CONN_UP) {
    nv->up--;
    if (nv->up == 0)
      nv->down_since = now_seconds();
  } else if (c->state != CONN_UP && s == CONN_UP) {
    nv->up++;
  }
  c->state = s;
  if (why)
    snprintf(nv->down_reason, sizeof nv->down_reason, "%s", why);
  pthread_cond_broadcast(&nv->state_changed);
  pthread_mutex_unlock(&nv->state_lock);
}

/* Sleep up to `seconds` on the wake eventfd (stop wakes it). */
static void
nap(struct connection *c, double seconds)
{
  struct pollfd p = { .fd = c->wake_fd, .events = POLLIN };
  if (poll(&p, 1, (int)(seconds * 1000)) > 0) {
    uint64_t n;
    if (read(c->wake_fd, &n, sizeof n) < 0 && errno != EAGAIN)
      log_error("%s: eventfd: %s", c->vol->v.name, strerror(errno));
  }
}

/* One reconnection attempt: 0 with *out, -1 (try again; why says why), -2 (the export is
 * not the one we had: give up). */
static int
reconnect_once(struct connection *c, struct nbd_handle **out, char *why, size_t len)
{
  struct nbd_volume *nv = c->vol;
  struct nbd_handle *h = nbdvol_make_handle(nv, c->plain);
  if (!h) {
    snprintf(why, len, "%s", nbdvol_short_error());
    return -1;
  }
  if (nbd_aio_connect_uri(h, nv->uri.libnbd_uri) < 0) {
    snprintf(why, len, "%s", nbdvol_short_error());
    nbd_close(h);
    return -1;
  }
  double end = now_seconds() + CONNECT_TIMEOUT;
  int r = 0;
  while (r == 0 && !nbd_aio_is_ready(h)) {
    if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h)) {
      snprintf(why, len, "%s", nbdvol_short_error());
      r = -1;
    } else if (atomic_load(&c->stop)) {
      snprintf(why, len, "stopping");
      r = -1;
    } else if (now_seconds() > end) {
      snprintf(why, len, "no answer within %.0f s", CONNECT_TIMEOUT);
      r = -1;
    } else {
      unsigned dir = (unsigned)nbd_aio_get_direction(h);
      struct pollfd p[2] = {
        { .fd = nbd_aio_get_fd(h),
          .events = (short)(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0)
                            | ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0)) },
        { .fd = c->wake_fd, .events = POLLIN },
      };
      if (poll(p, 2, 100) < 0 && errno != EINTR) {
        snprintf(why, len, "poll: %s", strerror(errno));
        r = -1;
      } else if (p[1].revents & POLLIN) {
        nap(c, 0);
      } else if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) && (dir & LIBNBD_AIO_DIRECTION_READ)
                 && nbd_aio_notify_read(h) < 0) {
        snprintf(why, len, "%s", nbdvol_short_error());
        r = -1;
      } else if ((p[0].revents & (POLLOUT | POLLHUP | POLLERR))
                 && (dir & LIBNBD_AIO_DIRECTION_WRITE) && nbd_aio_notify_write(h) < 0) {
        snprintf(why, len, "%s", nbdvol_short_error());
        r = -1;
      }
    }
  }
  if (r == 0) {
    int64_t size = nbd_get_size(h);
    if (size != (int64_t)nv->v.size) {
      snprintf(why, len,
               "the export now has %" PRId64 " bytes instead of %" PRIu64
               ": not the same disk, not reconnecting",
               size, nv->v.size);
      r = -2;
    }
  }
  if (r < 0) {
    nbd_close(h);
    return r;
  }
  *out = h;
  return 0;
}

/* The connection died: reconnect until it works, we stop, or the export changed.  false
 * when the loop thread should end. */
static bool
reconnect(struct connection *c)
{
  struct nbd_volume *nv = c->vol;
  char why[1024], lost[sizeof c->why];
  pthread_mutex_lock(&c->lock);
  snprintf(lost, sizeof lost, "%s", c->why[0] ? c->why : "the server closed it");
  pthread_mutex_unlock(&c->lock);
  /* The state's reason (status "last error") says what happens next from the start, not
   * only once the first attempt has failed. */
  snprintf(why, sizeof why, "connection %u lost: %s; reconnecting", c->index + 1, lost);
  log_warning("%s: %s", nv->v.name, why);
  nbdvol_set_state(c, CONN_DOWN, why);
  double t0 = now_seconds(), backoff = BACKOFF_FIRST;
  for (unsigned attempt = 1;; attempt++) {
    if (atomic_load(&c->stop))
      return false;
    struct nbd_handle *h = NULL;
    char fail[256];
    int r = reconnect_once(c, &h, fail, sizeof fail);
    if (r == 0) {
      pthread_rwlock_wrlock(&c->swap);
      struct nbd_handle *old = c->h;
      c->h = h;
      c->fd = nbd_aio_get_fd(h);
      atomic_store(&c->dropped, 0);
      pthread_mutex_lock(&c->lock);
      c->why[0] = 0;
      pthread_mutex_unlock(&c->lock);
      pthread_rwlock_unlock(&c->swap);
      nbd_close(old);
      if (atomic_load(&nv->unflushed) > 0 && !atomic_exchange(&nv->lost_writes, true))
        log_warning("%s: reconnected with writes not yet flushed: the next flush fails",
                    nv->v.name);
      log_info("%s: connection %u back after %.1f s (attempt %u)", nv->v.name, c->index + 1,
               now_seconds() - t0, attempt);
      nbdvol_set_state(c, CONN_UP, NULL);
      return true;
    }
    if (atomic_load(&c->stop))
      return false;
    snprintf(why, sizeof why, "connection %u lost %.0f s ago: %s; reconnecting (attempt %u): %s",
             c->index + 1, now_seconds() - t0, lost, attempt,
             fail);
    if (r == -2) {
      log_error("%s: connection %u: %s", nv->v.name, c->index + 1, fail);
      snprintf(why, sizeof why, "connection %u: %s", c->index + 1, fail);
      nbdvol_set_state(c, CONN_GONE, why);
      return false;
    }
    debug("nbd", "%s: %s", nv->v.name, why);
    nbdvol_set_state(c, CONN_DOWN, why);
    nap(c, backoff);
    backoff = backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : backoff * 2;
  }
}

/* Why the connection failed, the first reason given (libnbd's message is thread-local: the
 * thread that saw the failure says it). */
static void
note_failure(struct connection *c, const char *why)
{
  pthread_mutex_lock(&c->lock);
  if (!c->why[0])
    snprintf(c->why, sizeof c->why, "%s", why);
  pthread_mutex_unlock(&c->lock);
}

/* Commands in flight on all of the volume's connections. */
static unsigned
volume_in_flight(struct nbd_volume *nv)
{
  unsigned n = 0;
  for (unsigned i = 0; i < nv->nconns; i++)
    n += atomic_load(&nv->conns[i].in_flight);
  return n;
}

/* Drive h's socket once: wait up to ms for what libnbd waits for (the reply, or room to
 * send the rest of a request), or for kick_fd, then let libnbd read or write; completion
 * callbacks run here.  The caller holds c->swap for reading and is the connection's driver.
 * 0, or -1 when the wait was cut short (kick, signal). */
static int
drive_once(struct connection *c, struct nbd_handle *h, int fd, int ms)
{
  unsigned dir = (unsigned)nbd_aio_get_direction(h);
  struct pollfd fds[2] = {
    { .fd = fd,
      .events = (short)(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0)
                        | ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0)) },
    { .fd = c->kick_fd, .events = POLLIN },
  };
  int n = 0;
  bool spun = false;
  if (ms > 0 && c->spin.on && dir == LIBNBD_AIO_DIRECTION_READ && volume_in_flight(c->vol) <= 1
      && spin_slot_take()) {
    double end = now_seconds() + POLL_SPIN;
    while ((n = poll(fds, 2, 0)) == 0 && now_seconds() < end)
      ;
    spin_slot_put();
    if (n >= 0)
      spin_note(&c->spin, n > 0);
    spun = true;
  }
  if (n == 0) {
    /* Timed only where a spin could have been: a reply awaited, with time to wait. */
    bool timed = !spun && ms > 0 && dir == LIBNBD_AIO_DIRECTION_READ;
    double t0 = timed ? now_seconds() : 0;
    if (ms != 0)
      wait_hook_run();
    n = poll(fds, 2, ms);
    if (timed && n > 0)
      spin_note_sleep(&c->spin, now_seconds() - t0, POLL_SPIN);
  }
  if (n < 0 && errno == EINTR)
    return -1;
  if (n < 0) {
    /* Cannot wait on the socket any more: fail the connection rather than strand callers. */
    note_failure(c, strerror(errno));
    log_error("%s: poll: %s", c->vol->v.name, strerror(errno));
    shutdown(fd, SHUT_RDWR);
    fds[0].revents = POLLHUP;
    fds[1].revents = 0;
  }
  if (fds[1].revents & POLLIN) {
    uint64_t v;
    if (read(c->kick_fd, &v, sizeof v) < 0 && errno != EAGAIN)
      log_error("%s: eventfd: %s", c->vol->v.name, strerror(errno));
  }
  if (fds[0].revents)
    atomic_store(&c->last_life, now_seconds());
  /* A hang-up is seen by reading: libnbd then moves to DEAD and fails every command. */
  int r = 0;
  if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
    if (dir & LIBNBD_AIO_DIRECTION_READ)
      r = nbd_aio_notify_read(h);
    else if (dir & LIBNBD_AIO_DIRECTION_WRITE)
      r = nbd_aio_notify_write(h);
  } else if (fds[0].revents & POLLOUT) {
    r = nbd_aio_notify_write(h);
  }
  if (r < 0) {
    note_failure(c, nbdvol_short_error());
    debug("nbd", "%s: connection %u failed: %s", c->vol->v.name, c->index + 1, nbd_get_error());
  }
  if (handle_gone(h)) {
    /* Tell the loop thread at once rather than at its next tick. */
    uint64_t one = 1;
    if (write(c->wake_fd, &one, sizeof one) < 0)
      log_error("%s: eventfd: %s", c->vol->v.name, strerror(errno));
  }
  return fds[1].revents & POLLIN ? -1 : 0;
}

/* Wake the waiting caller that is to drive the socket next (c->lock held, nobody driving). */
static void
pass_driving(struct connection *c)
{
  for (struct command *w = c->waiting; w; w = w->next)
    if (!w->done) {
      pthread_cond_signal(&w->done_cond);
      return;
    }
}

/* The event loop of one connection: the watchdog, and a new handle when the old one dies.
 * The socket itself is driven by the callers waiting for their commands (command_wait: one
 * of them at a time polls it and runs every completion callback, so a caller alone on the
 * connection is answered without a hand-off between threads); this thread reads it only
 * while no command is in flight, to see a server that hung up.
 *
 * Watchdog: when commands wait and the socket shows no sign of life for `timeout` seconds,
 * the server is taken for gone (a silently dropped TCP connection never says so): the
 * socket is shut down, libnbd sees EOF, moves to DEAD and fails every command in flight. */
void *
nbdvol_loop_thread(void *arg)
{
  struct connection *c = arg;
  double timeout = c->vol->timeout;
  atomic_store(&c->last_life, now_seconds());
  while (!atomic_load(&c->stop)) {
    if (handle_gone(c->h)) {
      int d = atomic_load(&c->dropped);
      if (d == DROP_SILENT) {
        char m[96];
        snprintf(m, sizeof m, "the NBD server stopped answering for %.0f s", timeout);
        note_failure(c, m);
      } else if (d == DROP_DEADLINE) {
        note_failure(c, "a request got no reply within its deadline");
      }
      if (!reconnect(c))
        break;
      atomic_store(&c->last_life, now_seconds());
      continue;
    }
    struct pollfd p = { .fd = c->wake_fd, .events = POLLIN };
    int r = poll(&p, 1, WATCHDOG_TICK_MS);
    if (r < 0 && errno != EINTR) {
      log_error("%s: poll: %s", c->vol->v.name, strerror(errno));
      nap(c, 0.25);
    }
    if (r > 0)
      nap(c, 0);
    double now = now_seconds();
    if (atomic_load(&c->in_flight) == 0) {
      atomic_store(&c->last_life, now);
      /* Idle: a server that hung up (or sent anything) is seen here, as a caller would. */
      struct pollfd s = { .fd = c->fd, .events = POLLIN };
      if (poll(&s, 1, 0) <= 0)
        continue;
      pthread_mutex_lock(&c->lock);
      bool mine = !c->driving;
      c->driving = true;
      pthread_mutex_unlock(&c->lock);
      if (!mine)
        continue;
      pthread_rwlock_rdlock(&c->swap);
      drive_once(c, c->h, c->fd, 0);
      pthread_rwlock_unlock(&c->swap);
      pthread_mutex_lock(&c->lock);
      c->driving = false;
      pass_driving(c);
      pthread_mutex_unlock(&c->lock);
    } else if (timeout > 0 && now - atomic_load(&c->last_life) > timeout
               && !atomic_load(&c->dropped)) {
      atomic_store(&c->dropped, DROP_SILENT);
      log_warning("%s: the NBD server did not answer for %.0f s: dropping the connection",
                  c->vol->v.name, timeout);
      shutdown(c->fd, SHUT_RDWR);
    }
  }
  error_clear(); /* thread-local message: free it before the thread goes */
  return NULL;
}

/* ---- commands ---- */

static int
complete_cb(void *opaque, int *error)
{
  struct command *cmd = opaque;
  pthread_mutex_lock(&cmd->c->lock);
  cmd->err = *error;
  cmd->done = true;
  pthread_cond_signal(&cmd->done_cond);
  pthread_mutex_unlock(&cmd->c->lock);
  return 1; /* retire the command */
}

#define COMPLETION(cmd) ((nbd_completion_callback){ .callback = complete_cb, .user_data = (cmd) })

/* Runs in the thread driving the socket: collect base:allocation extents, clipped to the
 * request. */
static int
extent_cb(void *opaque, const char *context, uint64_t offset, uint32_t *entries, size_t n,
          int *error)
{
  struct command *cmd = opaque;
  (void)error;
  if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 || cmd->bs_err)
    return 0;
  uint64_t end = cmd->bs_off + cmd->bs_len;
  for (size_t i = 0; i + 1 < n && offset < end; i += 2) {
    uint64_t len = min_u64(entries[i], end - offset);
    if (offset < cmd->bs_off) { /* a server must start at the offset asked; be safe */
      cmd->bs_err = EPROTO;
      return 0;
    }
    if (extent_list_add(cmd->bs_out, offset, len, entries[i + 1] & (EXTENT_HOLE | EXTENT_ZERO))
        < 0) {
      cmd->bs_err = ENOMEM;
      return 0;
    }
    offset += entries[i];
  }
  return 0;
}

static int64_t
submit(struct command *cmd, const struct op *op)
{
  struct nbd_handle *h = cmd->c->h;
  nbd_completion_callback cb = COMPLETION(cmd);
  switch (op->kind) {
  case OP_READ:
    return nbd_aio_pread(h, op->buf, op->len, op->off, cb, 0);
  case OP_WRITE:
    return nbd_aio_pwrite(h, op->wbuf, op->len, op->off, cb, op->flags);
  case OP_ZERO:
    return nbd_aio_zero(h, op->len, op->off, cb, op->flags);
  case OP_TRIM:
    return nbd_aio_trim(h, op->len, op->off, cb, op->flags);
  case OP_FLUSH:
    return nbd_aio_flush(h, cb, 0);
  case OP_CACHE:
    return nbd_aio_cache(h, op->len, op->off, cb, 0);
  case OP_STATUS:
    cmd->bs_off = op->off;
    cmd->bs_len = op->len;
    cmd->bs_out = op->out;
    return nbd_aio_block_status(h, op->len, op->off,
                                (nbd_extent_callback){ .callback = extent_cb, .user_data = cmd },
                                cb, 0);
  }
  return -1;
}

/* A now_seconds() instant for pthread_cond_timedwait (condition variables here use
 * CLOCK_MONOTONIC, as now_seconds does). */
static struct timespec
at(double t)
{
  return (struct timespec){ (time_t)t, (long)((t - (double)(time_t)t) * 1e9) };
}

void
nbdvol_cond_init(pthread_cond_t *c)
{
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(c, &ca);
  pthread_condattr_destroy(&ca);
}

enum acquire_for {
  FOR_ANY,
  FOR_READ,   /* preferably a plain connection: libnbd reads a simple reply in 2 recv calls,
                 a structured one in 4 (header, its rest, the offset, the data) */
  FOR_STATUS, /* a connection with the meta context */
};

/* The least busy connection that is up and fit for `what`, with its swap lock held for
 * reading; waits for one until `deadline` (or the thread's cancel flag).  0, or -errno. */
static int
acquire(struct nbd_volume *nv, double deadline, volatile int *cancel, enum acquire_for what,
        struct connection **out)
{
  pthread_mutex_lock(&nv->state_lock);
  for (;;) {
    struct connection *best = NULL;
    unsigned best_load = 0, gone = 0;
    for (unsigned i = 0; i < nv->nconns; i++) {
      struct connection *c = &nv->conns[i];
      if (c->state == CONN_GONE)
        gone++;
      if (c->state != CONN_UP || (what == FOR_STATUS && c->plain))
        continue;
      /* Reads go to a structured connection only when it is two requests less busy. */
      unsigned load = atomic_load(&c->in_flight) + (what == FOR_READ && !c->plain ? 2 : 0);
      if (!best || load < best_load) {
        best = c;
        best_load = load;
      }
    }
    if (best) {
      pthread_mutex_unlock(&nv->state_lock);
      pthread_rwlock_rdlock(&best->swap);
      if (!handle_gone(best->h)) {
        *out = best;
        return 0;
      }
      /* Died a moment ago; its loop thread is about to say so. */
      pthread_rwlock_unlock(&best->swap);
      pthread_mutex_lock(&nv->state_lock);
    } else if (gone == nv->nconns) {
      pthread_mutex_unlock(&nv->state_lock);
      return -ESTALE;
    }
    double now = now_seconds();
    if (now >= deadline) {
      pthread_mutex_unlock(&nv->state_lock);
      return -ETIMEDOUT;
    }
    if (cancel && *cancel) {
      pthread_mutex_unlock(&nv->state_lock);
      return -ECANCELED;
    }
    double slice = best ? 0.01 : 0.1;
    struct timespec ts = at(deadline < now + slice ? deadline : now + slice);
    pthread_cond_timedwait(&nv->state_changed, &nv->state_lock, &ts);
  }
}

/* Seconds a command still gets after the caller's cancel flag is raised (a pause): on a
 * live link it completes well within this; on a silent one its connection is dropped. */
#define CANCEL_GRACE 1.0

/* Drive the socket for cmd's caller (c->lock held, c->driving just taken) until cmd is done,
 * `until` passes (0: no limit) or a tick ends; other callers' commands complete on the way. */
static void
drive(struct command *cmd, double until)
{
  struct connection *c = cmd->c;
  pthread_mutex_unlock(&c->lock);
  /* The handle is not swapped while our command is on it, nor while we hold swap. */
  pthread_rwlock_rdlock(&c->swap);
  struct nbd_handle *h = c->h;
  int fd = c->fd;
  double end = now_seconds() + WATCHDOG_TICK_MS / 1000.0;
  if (until > 0 && until < end)
    end = until;
  while (!__atomic_load_n(&cmd->done, __ATOMIC_ACQUIRE) && !handle_gone(h)) {
    double left = end - now_seconds();
    if (left <= 0)
      break;
    drive_once(c, h, fd, (int)(left * 1000) + 1);
  }
  pthread_rwlock_unlock(&c->swap);
  pthread_mutex_lock(&c->lock);
  c->driving = false;
}

/* Wait for the completion callback, driving the socket when nobody else does (one waiting
 * caller at a time does; the others sleep until their command completes or the driver's
 * own does, when the next waiting caller takes over).  With a deadline (or a cancel flag
 * raised for longer than CANCEL_GRACE), a command still unanswered has its connection
 * dropped (the only way to take a command back from libnbd), and fails with ETIMEDOUT
 * (ECANCELED).  `kick`: the request is not all sent yet, so a driver waiting for replies
 * only must poll for writing too.  Returns the command's errno (0 = success). */
static int
command_wait(struct command *cmd, double deadline, volatile int *cancel, bool kick)
{
  struct connection *c = cmd->c;
  int expired = 0; /* then ETIMEDOUT or ECANCELED */
  double cancelled_at = 0;
  pthread_mutex_lock(&c->lock);
  if (kick && c->driving) {
    uint64_t one = 1;
    if (write(c->kick_fd, &one, sizeof one) < 0)
      log_error("%s: eventfd: %s", c->vol->v.name, strerror(errno));
  }
  cmd->next = c->waiting;
  c->waiting = cmd;
  while (!cmd->done) {
    double until = 0; /* when to look at the deadline or the cancel flag again */
    if ((deadline > 0 || cancel) && !expired) {
      double now = now_seconds();
      until = deadline > 0 ? deadline : now + 3600;
      if (cancel) {
        if (*cancel && !cancelled_at)
          cancelled_at = now;
        double limit = cancelled_at ? cancelled_at + CANCEL_GRACE : now + 0.2;
        if (limit < until)
          until = limit;
      }
    }
    if (!c->driving) {
      c->driving = true;
      drive(cmd, until);
    } else {
      wait_hook_run(); /* another caller drives: this one sleeps */
      if (until > 0) {
        struct timespec ts = at(until);
        pthread_cond_timedwait(&cmd->done_cond, &c->lock, &ts);
      } else {
        pthread_cond_wait(&cmd->done_cond, &c->lock);
      }
    }
    if (cmd->done || until <= 0 || now_seconds() < until)
      continue;
    double now = now_seconds();
    int why = deadline > 0 && now >= deadline                      ? ETIMEDOUT
              : cancelled_at && now >= cancelled_at + CANCEL_GRACE ? ECANCELED
                                                                   : 0;
    if (!why)
      continue;
    pthread_mutex_unlock(&c->lock);
    /* The handle cannot be swapped while our command is on it, nor while we hold swap:
     * if the command is still not done under both, c->fd is its socket. */
    pthread_rwlock_rdlock(&c->swap);
    pthread_mutex_lock(&c->lock);
    bool still = !cmd->done;
    pthread_mutex_unlock(&c->lock);
    if (still) {
      expired = why; /* from now on: wait for libnbd to retire it */
      atomic_store(&c->dropped, DROP_DEADLINE);
      shutdown(c->fd, SHUT_RDWR);
    }
    pthread_rwlock_unlock(&c->swap);
    pthread_mutex_lock(&c->lock);
  }
  for (struct command **p = &c->waiting; *p; p = &(*p)->next)
    if (*p == cmd) {
      *p = cmd->next;
      break;
    }
  if (!c->driving)
    pass_driving(c);
  pthread_mutex_unlock(&c->lock);
  return expired ? expired : cmd->err;
}

/* Run op: submit on a connection that is up, retry on another one (or the same, once it
 * is back) while the connection dies under it, until the request's wait is over.  On
 * failure the message reads "URI: <what>: <reason>". */
int
nbdvol_run_op(struct nbd_volume *nv, const struct op *op, const char *fmt, ...)
{
  struct volume_wait_bounds b = volume_wait_bounds();
  double wait_end = now_seconds() + nv->reconnect_wait;
  double thread_deadline = b.deadline > 0 ? b.deadline : 0;
  if (thread_deadline > 0 && thread_deadline < wait_end)
    wait_end = thread_deadline;
  /* Extents of a failed attempt are taken back, including a merge into the caller's last
   * extent (extent_list_add extends it when contiguous with the same flags). */
  size_t out_before = op->out ? op->out->n : 0;
  struct extent out_last = out_before ? op->out->v[out_before - 1] : (struct extent){ 0, 0, 0 };
  int err = 0;
  const char *reason = NULL;
  char why[1200] = "";
  for (unsigned attempt = 0;; attempt++) {
    struct connection *c;
    int r = acquire(nv, wait_end, b.cancel,
                    op->kind == OP_STATUS ? FOR_STATUS
                    : op->kind == OP_READ ? FOR_READ
                                          : FOR_ANY,
                    &c);
    if (r < 0) {
      pthread_mutex_lock(&nv->state_lock);
      if (r == -ESTALE)
        snprintf(why, sizeof why, "%s", nv->down_reason);
      else
        snprintf(why, sizeof why, "connection to the NBD server lost (%s; waited %.0f s)",
                 nv->down_reason, now_seconds() - nv->down_since);
      pthread_mutex_unlock(&nv->state_lock);
      err = r == -ECANCELED ? ECANCELED : r == -ESTALE ? ESTALE : ENOTCONN;
      reason = why;
      break;
    }
    struct command cmd = { .c = c };
    nbdvol_cond_init(&cmd.done_cond);
    atomic_fetch_add(&c->in_flight, 1);
    if (op->out) {
      op->out->n = out_before;
      if (out_before)
        op->out->v[out_before - 1] = out_last;
    }
    int64_t cookie = submit(&cmd, op);
    int submit_errno = cookie < 0 ? nbd_get_errno() : 0;
    if (cookie < 0)
      snprintf(why, sizeof why, "%s", nbdvol_short_error());
    bool dead_now = cookie < 0 && handle_gone(c->h);
    /* libnbd could not send the whole request here: a caller driving the socket for its
     * reply only must poll for writing too. */
    bool kick = cookie >= 0 && (nbd_aio_get_direction(c->h) & LIBNBD_AIO_DIRECTION_WRITE);
    pthread_rwlock_unlock(&c->swap);
    err = cookie < 0 ? (submit_errno ? submit_errno : EIO)
                     : command_wait(&cmd, thread_deadline, b.cancel, kick);
    atomic_fetch_sub(&c->in_flight, 1);
    pthread_cond_destroy(&cmd.done_cond);
    if (cookie >= 0 && err == 0) {
      /* Nothing at all: no new extent, and none merged into the caller's last one. */
      bool none = op->kind == OP_STATUS && op->out->n == out_before
                  && (out_before == 0 || op->out->v[out_before - 1].length == out_last.length);
      if (op->kind == OP_STATUS && (cmd.bs_err || none)) {
        op->out->n = out_before;
        if (out_before)
          op->out->v[out_before - 1] = out_last;
        return error_set(cmd.bs_err == ENOMEM ? ENOMEM : EPROTO,
                         "%s: server sent bad block status at offset %" PRIu64, nv->v.name,
                         op->off);
      }
      return 0;
    }
    if (cookie >= 0 && (err == ETIMEDOUT || err == ECANCELED)
        && atomic_load(&c->dropped) == DROP_DEADLINE) {
      reason = err == ETIMEDOUT ? "no reply before the deadline (connection dropped)"
                                : "cancelled (stopped) while waiting for a reply";
      break;
    }
    /* The connection died under the request (ENOTCONN from libnbd's abort), or was dead
     * when we submitted: try again once one is up. */
    bool lost = dead_now || (cookie >= 0 && (err == ENOTCONN || atomic_load(&c->dropped)));
    if (!lost) {
      reason = cookie < 0 ? why : strerror(err);
      break;
    }
    if (now_seconds() >= wait_end) {
      snprintf(why, sizeof why, "connection to the NBD server lost (%s)",
               atomic_load(&c->dropped) == DROP_SILENT
                   ? "the NBD server stopped answering (connection dropped)"
                   : "gave up waiting for it to come back");
      err = atomic_load(&c->dropped) == DROP_SILENT ? ETIMEDOUT : ENOTCONN;
      reason = why;
      break;
    }
    debug("nbd", "%s: request lost with its connection, submitting again (attempt %u)", nv->v.name,
          attempt + 2);
  }
  if (op->out) {
    op->out->n = out_before;
    if (out_before)
      op->out->v[out_before - 1] = out_last;
  }
  if (err == 0)
    err = EIO;
  char *what = NULL;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&what, fmt, ap) < 0)
    what = NULL;
  va_end(ap);
  int r = error_set(err, "%s: %s: %s", nv->v.name, what ? what : "request",
                    reason ? reason : strerror(err));
  free(what);
  return r;
}
