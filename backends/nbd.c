/* ferry: the nbd driver — a remote NBD export through libnbd.
 *
 * Concurrency: the volume ops are synchronous and called from many threads at once, while
 * libnbd's synchronous calls hold the handle lock for the whole round trip (one request in
 * flight per handle).  So each connection gets one event-loop thread that drives the socket
 * (poll + nbd_aio_notify_*), and callers submit nbd_aio_* commands with a completion
 * callback, then sleep on a condition variable until the loop thread completes them: many
 * requests are in flight on every connection.  Several connections are opened when the
 * server advertises multi-conn (a flush on any of them then covers writes made on all).
 *
 * A connection that dies (server gone, socket reset) fails every command in flight with
 * ENOTCONN through libnbd's abort path and every later command at submission; a server
 * that goes silent while requests wait (volume_options.timeout, default 300 s) is dropped
 * the same way: never a hang.
 * Retrying is the caller's business (copy engine, clone).
 */
#include "backends/volume.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_CONNECTIONS 4
#define MAX_CONNECTIONS 64
#define DEFAULT_MAX_REQUEST (32u << 20)
/* A server that answers nothing for this long while requests wait is taken for gone. */
#define DEFAULT_TIMEOUT 300.0
/* NBD lengths are 32 bits; zero/trim/block-status requests are split below this. */
#define MAX_EFFECT_LENGTH (1u << 30)

struct connection {
  struct nbd_volume *vol;
  struct nbd_handle *h;
  pthread_t thread;
  bool thread_started;
  int wake_fd; /* eventfd: a command was submitted, or stop */
  atomic_bool stop;
  atomic_uint in_flight; /* for picking the least busy connection, and the watchdog */
  atomic_bool timed_out; /* the watchdog dropped this connection */
  pthread_mutex_t lock;  /* protects command.done of commands on this connection */
};

struct nbd_volume {
  struct volume v;
  double timeout; /* seconds without a sign of life while commands wait (0: never) */
  struct connection *conns;
  unsigned nconns;
};

/* One synchronous request waiting for its completion callback. */
struct command {
  struct connection *c;
  pthread_cond_t done_cond;
  bool done;
  int err; /* errno from the server or from libnbd (0 = success) */
  /* block status only */
  uint64_t bs_off, bs_len;
  struct extent_list *bs_out;
  int bs_err;
};

static bool
nbdvol_matches(const char *uri)
{
  return strncmp(uri, "nbd", 3) == 0 && strstr(uri, "://") != NULL;
}

/* Refuse what libnbd would refuse with an obscure message, or misread. */
static int
check_uri(const char *uri)
{
  const char *sep = strstr(uri, "://");
  size_t slen = (size_t)(sep - uri);
  bool is_unix = false;
  if ((slen == 3 && strncmp(uri, "nbd", 3) == 0) || (slen == 4 && strncmp(uri, "nbds", 4) == 0))
    is_unix = false;
  else if ((slen == 8 && strncmp(uri, "nbd+unix", 8) == 0)
           || (slen == 9 && strncmp(uri, "nbds+unix", 9) == 0))
    is_unix = true;
  else
    return error_set(EINVAL,
                     "%s: unsupported NBD URI scheme '%.*s' (use nbd://host[:port]/export "
                     "or nbd+unix:///export?socket=PATH)",
                     uri, (int)slen, uri);
  const char *auth = sep + 3;
  size_t alen = strcspn(auth, "/?#");
  const char *query = strchr(auth, '?');
  const char *socket = NULL;
  if (query) {
    for (const char *p = query + 1; *p;) {
      size_t n = strcspn(p, "&");
      if (n > 7 && strncmp(p, "socket=", 7) == 0)
        socket = p + 7;
      else if (n == 7 && strncmp(p, "socket=", 7) == 0)
        return error_set(EINVAL, "%s: empty socket= path in NBD URI", uri);
      p += n;
      if (*p == '&')
        p++;
    }
  }
  if (is_unix) {
    if (alen != 0)
      return error_set(
          EINVAL, "%s: nbd+unix URI must not name a host (nbd+unix:///export?socket=PATH)", uri);
    if (!socket)
      return error_set(EINVAL, "%s: nbd+unix URI lacks ?socket=PATH", uri);
    return 0;
  }
  if (socket)
    return error_set(EINVAL, "%s: socket= is only valid with nbd+unix://", uri);
  if (alen == 0)
    return error_set(EINVAL, "%s: NBD URI lacks a host (nbd://host[:port]/export)", uri);
  if (auth[0] == '[') { /* [ipv6]:port */
    const char *close = memchr(auth, ']', alen);
    if (!close)
      return error_set(EINVAL, "%s: unterminated '[' in NBD URI host", uri);
    if (close + 1 < auth + alen && close[1] != ':')
      return error_set(EINVAL, "%s: junk after ']' in NBD URI host", uri);
  }
  const char *host_end = auth[0] == '[' ? memchr(auth, ']', alen) : auth;
  const char *colon = memchr(host_end, ':', (size_t)(auth + alen - host_end));
  if (colon) {
    const char *port = colon + 1;
    size_t plen = (size_t)(auth + alen - port);
    unsigned long value = 0;
    bool ok = plen > 0 && plen <= 5;
    for (size_t i = 0; ok && i < plen; i++) {
      if (port[i] < '0' || port[i] > '9')
        ok = false;
      else
        value = value * 10 + (unsigned long)(port[i] - '0');
    }
    if (!ok || value == 0 || value > 65535)
      return error_set(EINVAL, "%s: bad port '%.*s' in NBD URI (want 1-65535)", uri, (int)plen,
                       port);
    if (colon == auth)
      return error_set(EINVAL, "%s: NBD URI lacks a host (nbd://host[:port]/export)", uri);
  }
  return 0;
}

/* libnbd's message, lower-cased start ("connect: Connection refused"). */
static int
set_nbd_error(const char *name, const char *what)
{
  int e = nbd_get_errno();
  const char *msg = nbd_get_error();
  if (e == 0)
    e = EIO;
  if (what)
    return error_set(e, "%s: %s: %s", name, what, msg ? msg : strerror(e));
  return error_set(e, "%s: %s", name, msg ? msg : strerror(e));
}

/* The event loop of one connection: drive the socket until the handle dies or we stop.
 * Completion callbacks run here (inside nbd_aio_notify_*).
 *
 * Watchdog: when commands wait and the socket shows no sign of life for `timeout` seconds,
 * the server is taken for gone (a silently dropped TCP connection never says so): the
 * socket is shut down, libnbd sees EOF, moves to DEAD and fails every command in flight. */
static void *
loop_thread(void *arg)
{
  struct connection *c = arg;
  double timeout = c->vol->timeout;
  int fd = nbd_aio_get_fd(c->h);
  double last_life = now_seconds();
  while (!atomic_load(&c->stop)) {
    if (nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h))
      break;
    unsigned dir = (unsigned)nbd_aio_get_direction(c->h);
    struct pollfd fds[2] = {
      { .fd = fd,
        .events = (short)(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0)
                          | ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0)) },
      { .fd = c->wake_fd, .events = POLLIN },
    };
    bool busy = atomic_load(&c->in_flight) > 0;
    int r = poll(fds, 2, busy && timeout > 0 ? 250 : -1);
    double now = now_seconds();
    if (r < 0) {
      if (errno == EINTR)
        continue;
      /* Cannot wait on the socket any more: fail the connection rather than strand callers. */
      log_error("%s: poll: %s", c->vol->v.name, strerror(errno));
      shutdown(fd, SHUT_RDWR);
      fds[0].revents = POLLHUP;
      fds[1].revents = 0;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t n;
      if (read(c->wake_fd, &n, sizeof n) < 0 && errno != EAGAIN)
        log_error("%s: eventfd: %s", c->vol->v.name, strerror(errno));
      last_life = now; /* a new command starts its own clock */
    }
    if (!busy || fds[0].revents)
      last_life = now;
    else if (timeout > 0 && now - last_life > timeout && !atomic_load(&c->timed_out)) {
      atomic_store(&c->timed_out, true);
      log_warning("%s: the NBD server did not answer for %.0f s: dropping the connection",
                  c->vol->v.name, timeout);
      shutdown(fd, SHUT_RDWR);
      continue;
    }
    /* A hang-up is seen by reading: libnbd then moves to DEAD and fails every command. */
    r = 0;
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (dir & LIBNBD_AIO_DIRECTION_READ)
        r = nbd_aio_notify_read(c->h);
      else if (dir & LIBNBD_AIO_DIRECTION_WRITE)
        r = nbd_aio_notify_write(c->h);
    } else if (fds[0].revents & POLLOUT)
      r = nbd_aio_notify_write(c->h);
    if (r < 0)
      debug("nbd", "%s: connection failed: %s", c->vol->v.name, nbd_get_error());
  }
  error_clear(); /* thread-local message: free it before the thread goes */
  return NULL;
}

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

static struct connection *
pick_connection(struct nbd_volume *nv)
{
  struct connection *best = &nv->conns[0];
  unsigned best_load = atomic_load(&best->in_flight);
  for (unsigned i = 1; i < nv->nconns && best_load > 0; i++) {
    unsigned load = atomic_load(&nv->conns[i].in_flight);
    if (load < best_load) {
      best = &nv->conns[i];
      best_load = load;
    }
  }
  return best;
}

static void
command_start(struct command *cmd, struct connection *c)
{
  memset(cmd, 0, sizeof *cmd);
  cmd->c = c;
  pthread_cond_init(&cmd->done_cond, NULL);
  atomic_fetch_add(&c->in_flight, 1);
}

/* After a successful submission: wake the loop (it may have to poll for POLLOUT now) and
 * sleep until the completion callback runs.  On failure the message reads
 * "URI: <what>: <reason>", with <what> formatted only then. */
static int command_wait(struct command *cmd, int64_t cookie, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
command_wait(struct command *cmd, int64_t cookie, const char *fmt, ...)
{
  struct connection *c = cmd->c;
  int err = 0;
  const char *reason = NULL;
  if (cookie < 0) {
    err = nbd_get_errno();
    reason = nbd_get_error();
  } else {
    uint64_t one = 1;
    if (write(c->wake_fd, &one, sizeof one) < 0)
      log_error("%s: eventfd: %s", c->vol->v.name, strerror(errno));
    pthread_mutex_lock(&c->lock);
    while (!cmd->done)
      pthread_cond_wait(&cmd->done_cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
    err = cmd->err;
  }
  atomic_fetch_sub(&c->in_flight, 1);
  pthread_cond_destroy(&cmd->done_cond);
  if (cookie >= 0 && err == 0)
    return 0;
  if (err == 0)
    err = EIO;
  /* A dead handle fails what was in flight with ENOTCONN and refuses new commands: say
   * what happened in plain words. */
  if (atomic_load(&c->timed_out)) {
    err = ETIMEDOUT;
    reason = "the NBD server stopped answering (connection dropped)";
  } else if (err == ENOTCONN || nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h)) {
    err = ENOTCONN;
    reason = "connection to the NBD server lost";
  } else if (!reason)
    reason = strerror(err);
  char *what = NULL;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&what, fmt, ap) < 0)
    what = NULL;
  va_end(ap);
  int r = error_set(err, "%s: %s: %s", c->vol->v.name, what ? what : "request", reason);
  free(what);
  return r;
}

#define COMPLETION(cmd) ((nbd_completion_callback){ .callback = complete_cb, .user_data = (cmd) })

static int
nbdvol_pread(struct volume *v, void *buf, size_t len, uint64_t off)
{
  struct nbd_volume *nv = (struct nbd_volume *)v;
  struct command cmd;
  command_start(&cmd, pick_connection(nv));
  return command_wait(&cmd, nbd_aio_pread(cmd.c->h, buf, len, off, COMPLETION(&cmd), 0),
                      "read %zu bytes at offset %" PRIu64, len, off);
}

static int
nbdvol_pwrite(struct volume *v, const void *buf, size_t len, uint64_t off, unsigned flags)
{
  struct nbd_volume *nv = (struct nbd_volume *)v;
  struct command cmd;
  command_start(&cmd, pick_connection(nv));
  uint32_t f = (flags & VOLUME_FUA) ? LIBNBD_CMD_FLAG_FUA : 0;
  return command_wait(&cmd, nbd_aio_pwrite(cmd.c->h, buf, len, off, COMPLETION(&cmd), f),
                      "write %zu bytes at offset %" PRIu64, len, off);
}

/* Write zeroes (zero=true) or trim [off, off+len) in requests of at most
 * MAX_EFFECT_LENGTH bytes, one after another. */
static int
effect_range(struct nbd_volume *nv, bool zero, uint64_t len, uint64_t off, uint32_t flags)
{
  while (len > 0) {
    uint64_t n = min_u64(len, MAX_EFFECT_LENGTH);
    struct command cmd;
    command_start(&cmd, pick_connection(nv));
    int64_t cookie = zero ? nbd_aio_zero(cmd.c->h, n, off, COMPLETION(&cmd), flags)
                          : nbd_aio_trim(cmd.c->h, n, off, COMPLETION(&cmd), flags);
    int r = command_wait(&cmd, cookie, "%s %" PRIu64 " bytes at offset %" PRIu64,
                         zero ? "write zeroes" : "trim", n, off);
    if (r < 0)
      return r;
    off += n;
    len -= n;
  }
  return 0;
}

static int
nbdvol_zero(struct volume *v, uint64_t len, uint64_t off, unsigned flags)
{
  struct nbd_volume *nv = (struct nbd_volume *)v;
  if ((flags & VOLUME_FAST_ZERO) && !(v->caps & VOLUME_CAN_FAST_ZERO))
    return error_set(ENOTSUP, "%s: fast zero is not supported by the server", v->name);
  uint32_t f = 0;
  if (flags & VOLUME_FUA)
    f |= LIBNBD_CMD_FLAG_FUA;
  if (!(flags & VOLUME_MAY_TRIM))
    f |= LIBNBD_CMD_FLAG_NO_HOLE;
  if (flags & VOLUME_FAST_ZERO)
    f |= LIBNBD_CMD_FLAG_FAST_ZERO;
  /* -ENOTSUP: the dispatcher falls back to writing, or reports the fast-zero miss. */
  return effect_range(nv, true, len, off, f);
}

static int
nbdvol_trim(struct volume *v, uint64_t len, uint64_t off, unsigned flags)
{
  struct nbd_volume *nv = (struct nbd_volume *)v;
  return effect_range(nv, false, len, off, (flags & VOLUME_FUA) ? LIBNBD_CMD_FLAG_FUA : 0);
}

static int
nbdvol_flush(struct volume *v)
{
  struct nbd_volume *nv = (struct nbd_volume *)v;
  /* One flush is enough: with several connections the server promised multi-conn
   * consistency (a flush covers writes completed on every connection). */
  struct command cmd;
  command_start(&cmd, pick_connection(nv));
  return command_wait(&cmd, nbd_aio_flush(cmd.c->h, COMPLETION(&cmd), 0), "flush");
}

static int
nbdvol_cache(struct volume *v, uint64_t len, uint64_t off)
{
  struct nbd_volume *nv = (struct nbd_volume *)v;
  uint64_t n = min_u64(len, MAX_EFFECT_LENGTH);
  struct command cmd;
  command_start(&cmd, pick_connection(nv));
  return command_wait(&cmd, nbd_aio_cache(cmd.c->h, n, off, COMPLETION(&cmd), 0),
                      "cache %" PRIu64 " bytes at offset %" PRIu64, n, off);
}

/* Runs in the loop thread: collect base:allocation extents, clipped to the request. */
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

static int
nbdvol_extents(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out)
{
  struct nbd_volume *nv = (struct nbd_volume *)v;
  struct command cmd;
  uint64_t n = min_u64(len, MAX_EFFECT_LENGTH);
  size_t before = out->n;
  command_start(&cmd, pick_connection(nv));
  cmd.bs_off = off;
  cmd.bs_len = n;
  cmd.bs_out = out;
  nbd_extent_callback ecb = { .callback = extent_cb, .user_data = &cmd };
  int r = command_wait(&cmd, nbd_aio_block_status(cmd.c->h, n, off, ecb, COMPLETION(&cmd), 0),
                       "block status %" PRIu64 " bytes at offset %" PRIu64, n, off);
  if (r < 0)
    return r;
  if (cmd.bs_err == ENOMEM)
    return error_set(ENOMEM, "%s: out of memory for extents", v->name);
  if (cmd.bs_err || out->n == before || out->v[before].offset != off)
    return error_set(EPROTO, "%s: server sent bad block status at offset %" PRIu64, v->name, off);
  return 0;
}

static void
close_connection(struct connection *c)
{
  if (c->thread_started) {
    atomic_store(&c->stop, true);
    uint64_t one = 1;
    if (write(c->wake_fd, &one, sizeof one) < 0)
      log_error("%s: eventfd: %s", c->vol->v.name, strerror(errno));
    pthread_join(c->thread, NULL);
  }
  if (c->h) {
    /* A polite disconnect (NBD_CMD_DISC), sent without waiting for the server: a server
     * that stopped answering must not hang close. */
    if (nbd_aio_is_ready(c->h))
      nbd_aio_disconnect(c->h, 0);
    nbd_close(c->h);
  }
  if (c->wake_fd >= 0)
    close(c->wake_fd);
  pthread_mutex_destroy(&c->lock);
}

static void
nbd_volume_close(struct volume *v)
{
  struct nbd_volume *nv = (struct nbd_volume *)v;
  for (unsigned i = 0; i < nv->nconns; i++)
    close_connection(&nv->conns[i]);
  free(nv->conns);
  free(v->name);
  free(nv);
}

static const struct volume_ops nbd_ops = {
  .driver = "nbd",
  .pread = nbdvol_pread,
  .pwrite = nbdvol_pwrite,
  .zero = nbdvol_zero,
  .trim = nbdvol_trim,
  .flush = nbdvol_flush,
  .extents = nbdvol_extents,
  .cache = nbdvol_cache,
  .close = nbd_volume_close,
};

/* Connect one handle (synchronously, before its loop thread exists). */
static int
connect_one(struct nbd_volume *nv, struct connection *c, const char *uri)
{
  c->vol = nv;
  c->wake_fd = -1;
  pthread_mutex_init(&c->lock, NULL);
  c->h = nbd_create();
  if (!c->h)
    return set_nbd_error(uri, NULL);
  if (nbd_add_meta_context(c->h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0
      || nbd_set_request_block_size(c->h, true) < 0)
    return set_nbd_error(uri, NULL);
  if (nbd_connect_uri(c->h, uri) < 0) {
    /* libnbd says "nbd_connect_uri: connect: 127.0.0.1:1: could not connect to remote
     * host: Connection refused"; the errno alone says it after the URI. */
    const char *msg = nbd_get_error();
    int e = nbd_get_errno();
    if (msg && strncmp(msg, "nbd_connect_uri: ", 17) == 0)
      msg += 17;
    if (e && msg && strncmp(msg, "connect: ", 9) == 0)
      return error_set_errno(e, "%s: cannot connect", uri);
    return error_set(e ? e : EIO, "%s: %s", uri, msg ? msg : "cannot connect");
  }
  c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (c->wake_fd < 0)
    return error_set_errno(errno, "%s: eventfd", uri);
  int e = pthread_create(&c->thread, NULL, loop_thread, c);
  if (e)
    return error_set_errno(e, "%s: cannot start the connection thread", uri);
  c->thread_started = true;
  return 0;
}

static unsigned
caps_from(struct nbd_handle *h, bool readonly)
{
  unsigned caps = VOLUME_MULTI_CONN;
  if (nbd_can_flush(h) == 1)
    caps |= VOLUME_CAN_FLUSH;
  if (nbd_can_cache(h) == 1)
    caps |= VOLUME_CAN_CACHE;
  if (nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1)
    caps |= VOLUME_CAN_EXTENTS;
  if (readonly || nbd_is_read_only(h) == 1)
    return caps;
  caps |= VOLUME_CAN_WRITE;
  if (nbd_can_trim(h) == 1)
    caps |= VOLUME_CAN_TRIM;
  if (nbd_can_zero(h) == 1) {
    caps |= VOLUME_CAN_ZERO;
    if (nbd_can_fast_zero(h) == 1)
      caps |= VOLUME_CAN_FAST_ZERO;
  }
  if (nbd_can_fua(h) == 1)
    caps |= VOLUME_CAN_FUA;
  return caps;
}

static int
nbdvol_open(const char *uri, const struct volume_options *o, struct volume **out)
{
  *out = NULL;
  int r = check_uri(uri);
  if (r < 0)
    return r;
  unsigned want = o->connections ? o->connections : DEFAULT_CONNECTIONS;
  if (want > MAX_CONNECTIONS)
    want = MAX_CONNECTIONS;

  struct nbd_volume *nv = calloc(1, sizeof *nv);
  if (!nv || !(nv->conns = calloc(want, sizeof *nv->conns))) {
    free(nv);
    return error_set(ENOMEM, "%s: out of memory", uri);
  }
  nv->v.ops = &nbd_ops; /* so close works on a half-open volume */
  nv->timeout = o->timeout > 0 ? o->timeout : DEFAULT_TIMEOUT;
  if ((nv->v.name = strdup(uri)) == NULL) {
    r = error_set(ENOMEM, "%s: out of memory", uri);
    goto fail;
  }
  nv->nconns = 1;
  if ((r = connect_one(nv, &nv->conns[0], uri)) < 0)
    goto fail;
  struct nbd_handle *h = nv->conns[0].h;
  int64_t size = nbd_get_size(h);
  if (size < 0) {
    r = set_nbd_error(uri, "size");
    goto fail;
  }
  /* Without multi-conn a flush on one connection need not cover writes on another: one
   * connection then, with many requests in flight on it. */
  bool multi = nbd_can_multi_conn(h) == 1;
  unsigned nconns = multi ? want : 1;
  for (unsigned i = 1; i < nconns; i++) {
    nv->nconns = i + 1;
    if (connect_one(nv, &nv->conns[i], uri) < 0) {
      /* A server may limit its clients: work with the connections we have. */
      debug("nbd", "%s: extra connection %u failed (%s), using %u", uri, i + 1, error_message(), i);
      close_connection(&nv->conns[i]);
      memset(&nv->conns[i], 0, sizeof nv->conns[i]);
      nv->nconns = i;
      error_clear();
      break;
    }
  }

  int64_t minimum = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
  int64_t preferred = nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED);
  int64_t maximum = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
  nv->v.min_block = minimum > 1 && minimum <= 65536 ? (uint32_t)minimum : 1;
  nv->v.preferred_block = preferred > 0 && preferred <= (32 << 20) ? (uint32_t)preferred : 4096;
  nv->v.max_request = DEFAULT_MAX_REQUEST;
  if (maximum > 0 && maximum < DEFAULT_MAX_REQUEST) {
    /* keep it a multiple of the minimum block */
    uint32_t m = (uint32_t)maximum;
    m -= m % nv->v.min_block;
    if (m > 0)
      nv->v.max_request = m;
  }
  nv->v.caps = caps_from(h, o->readonly);
  char *name = nv->v.name;
  nv->v.name = NULL;
  r = volume_init(&nv->v, &nbd_ops, name, (uint64_t)size);
  free(name);
  if (r < 0)
    goto fail;
  debug("nbd", "%s: %" PRId64 " bytes, %u connection(s)%s, block %u/%u/%u, caps 0x%x", uri, size,
        nv->nconns, multi ? " (multi-conn)" : "", nv->v.min_block, nv->v.preferred_block,
        nv->v.max_request, nv->v.caps);
  *out = &nv->v;
  return 0;

fail:
  nbd_volume_close(&nv->v);
  return r;
}

const struct volume_driver nbd_driver = {
  .name = "nbd",
  .matches = nbdvol_matches,
  .open = nbdvol_open,
};
