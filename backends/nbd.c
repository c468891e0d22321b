/* ferry: the nbd driver — a remote NBD export through libnbd, over TCP, unix sockets and TLS
 * (nbds://, nbds+unix://, see nbd-uri.h).
 *
 * Plain connections: with several connections, the first negotiates structured replies and
 * the base:allocation meta context (block status goes there); the others ask for simple
 * replies only, and reads prefer them.  libnbd reads a structured read reply in four recv
 * calls (the simple header, the rest of the structured one, the chunk's offset, the data)
 * and a simple one in two: bench/fuse's 4 KiB QD32 row went from 1.2x to 1.4-1.6x nbdfuse,
 * with the server's CPU per request down a third (docs/PERFORMANCE.md).  What a simple reply
 * gives up is a hole sent as a chunk without data: a read of a hole carries its zeroes.  The
 * copy engine and the hydrator skip holes by block status before they read; a ferry-nbd
 * clone read through this driver answers a cold hole without its source only for a
 * structured read (its hole lookup), so through a plain connection it fetches the zeroes.
 *
 * Concurrency: the volume ops are synchronous and called from many threads at once, while
 * libnbd's synchronous calls hold the handle lock for the whole round trip (one request in
 * flight per handle).  So callers submit nbd_aio_* commands with a completion callback and
 * wait for them: many requests are in flight on every connection.  The socket is driven
 * (poll + nbd_aio_notify_*) by the waiting callers themselves, one at a time, the others
 * sleeping on a condition variable until the driver completes their command; when the
 * driver's own completes, the next waiting caller takes over.  A caller alone on its
 * connection thus reads its own reply, with no hand-off to and from another thread (one
 * wake-up fewer per request, which on-demand reads at QD1 pay in full).  Each connection
 * also has a thread for its watchdog and reconnection (nbd-conn.c).  Several connections are opened when the
 * server advertises multi-conn (a flush on any of them then covers writes made on all).
 *
 * A source that comes back: when a connection dies (server restarted, socket reset, or
 * silent for volume_options.timeout while requests wait: the watchdog shuts it down) libnbd
 * fails every command in flight with ENOTCONN; its loop thread then reconnects in the
 * background with exponential backoff (0.1 s .. 5 s), checks that the export still has the
 * same size, and swaps the new handle in.  A command that failed because the connection
 * died is submitted again on a connection that is up — requests in flight are retried — as
 * long as it has waited less than volume_options.reconnect_wait (or the calling thread's
 * volume_wait_bounds).  Writes: a reconnection with writes acknowledged but not yet flushed
 * makes the next flush fail (the old server may have lost them), once.  Server errors (EIO
 * from the export) are not retried here: that is the caller's business (copy engine,
 * clone). */
#include "backends/nbd-internal.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONNECTIONS 4
#define MAX_CONNECTIONS 64
#define DEFAULT_MAX_REQUEST (32u << 20)
/* A server that answers nothing for this long while requests wait is taken for gone. */
#define DEFAULT_TIMEOUT 300.0
#define DEFAULT_RECONNECT_WAIT 60.0
/* NBD lengths are 32 bits; zero/trim/block-status requests are split below this. */
#define MAX_EFFECT_LENGTH (1u << 30)

static bool
nbdvol_matches(const char *uri)
{
  return strncmp(uri, "nbd", 3) == 0 && strstr(uri, "://") != NULL;
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

/* "nbd_connect_uri: connect: ..." -> "connect: ..." */
/* ---- volume ops ---- */

static int
nbdvol_pread(struct volume *v, void *buf, size_t len, uint64_t off)
{
  struct op op = { .kind = OP_READ, .buf = buf, .len = len, .off = off };
  return nbdvol_run_op((struct nbd_volume *)v, &op, "read %zu bytes at offset %" PRIu64, len, off);
}

static void
count_write(struct nbd_volume *nv)
{
  atomic_fetch_add(&nv->unflushed, 1);
}

static int
nbdvol_pwrite(struct volume *v, const void *buf, size_t len, uint64_t off, unsigned flags)
{
  struct nbd_volume *nv = (struct nbd_volume *)v;
  struct op op = { .kind = OP_WRITE, .wbuf = buf, .len = len, .off = off };
  op.flags = (flags & VOLUME_FUA) ? LIBNBD_CMD_FLAG_FUA : 0;
  int r = nbdvol_run_op(nv, &op, "write %zu bytes at offset %" PRIu64, len, off);
  if (r == 0 && !(flags & VOLUME_FUA))
    count_write(nv);
  return r;
}

/* Write zeroes (zero=true) or trim [off, off+len) in requests of at most
 * MAX_EFFECT_LENGTH bytes, one after another. */
static int
effect_range(struct nbd_volume *nv, bool zero, uint64_t len, uint64_t off, uint32_t flags)
{
  while (len > 0) {
    uint64_t n = min_u64(len, MAX_EFFECT_LENGTH);
    struct op op = { .kind = zero ? OP_ZERO : OP_TRIM, .len = n, .off = off, .flags = flags };
    int r = nbdvol_run_op(nv, &op, "%s %" PRIu64 " bytes at offset %" PRIu64,
                          zero ? "write zeroes" : "trim", n, off);
    if (r < 0)
      return r;
    if (!(flags & LIBNBD_CMD_FLAG_FUA))
      count_write(nv);
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
lost_writes_error(struct nbd_volume *nv)
{
  return error_set(EIO,
                   "%s: flush: the connection to the NBD server was lost while writes were "
                   "not yet flushed: they may not have reached the disk",
                   nv->v.name);
}

static int
nbdvol_flush(struct volume *v)
{
  struct nbd_volume *nv = (struct nbd_volume *)v;
  /* Reported once, like a write-back error to fsync. */
  if (atomic_exchange(&nv->lost_writes, false))
    return lost_writes_error(nv);
  uint64_t covered = atomic_load(&nv->unflushed);
  /* One flush is enough: with several connections the server promised multi-conn
   * consistency (a flush covers writes completed on every connection). */
  struct op op = { .kind = OP_FLUSH };
  int r = nbdvol_run_op(nv, &op, "flush");
  if (r == 0 && atomic_exchange(&nv->lost_writes, false))
    return lost_writes_error(nv); /* reconnected while the flush was under way */
  if (r == 0)
    atomic_fetch_sub(&nv->unflushed, covered);
  return r;
}

static int
nbdvol_cache(struct volume *v, uint64_t len, uint64_t off)
{
  uint64_t n = min_u64(len, MAX_EFFECT_LENGTH);
  struct op op = { .kind = OP_CACHE, .len = n, .off = off };
  return nbdvol_run_op((struct nbd_volume *)v, &op, "cache %" PRIu64 " bytes at offset %" PRIu64, n,
                       off);
}

static int
nbdvol_extents(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out)
{
  uint64_t n = min_u64(len, MAX_EFFECT_LENGTH);
  struct op op = { .kind = OP_STATUS, .len = n, .off = off, .out = out };
  return nbdvol_run_op((struct nbd_volume *)v, &op,
                       "block status %" PRIu64 " bytes at offset %" PRIu64, n, off);
}

static int
nbdvol_health(struct volume *v, char *reason, size_t len)
{
  struct nbd_volume *nv = (struct nbd_volume *)v;
  pthread_mutex_lock(&nv->state_lock);
  /* The first connection is the only one for block status (the others are plain): while it
   * is down the volume is not whole, though the plain ones may still read. */
  int r = nv->up == 0 || (nv->nconns > 0 && nv->conns[0].state != CONN_UP);
  if (r)
    snprintf(reason, len, "%s", nv->down_reason);
  pthread_mutex_unlock(&nv->state_lock);
  return r;
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
  if (c->kick_fd >= 0)
    close(c->kick_fd);
  pthread_mutex_destroy(&c->lock);
  pthread_rwlock_destroy(&c->swap);
}

static void
nbd_volume_close(struct volume *v)
{
  struct nbd_volume *nv = (struct nbd_volume *)v;
  for (unsigned i = 0; i < nv->nconns; i++)
    close_connection(&nv->conns[i]);
  free(nv->conns);
  nbd_uri_free(&nv->uri);
  pthread_mutex_destroy(&nv->state_lock);
  pthread_cond_destroy(&nv->state_changed);
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
  .health = nbdvol_health,
};

/* ---- open ---- */

/* Connect one handle (synchronously, before its loop thread exists). */
static int
connect_one(struct nbd_volume *nv, struct connection *c, unsigned index, const char *uri)
{
  c->vol = nv;
  c->index = index;
  c->plain = index > 0;
  c->wake_fd = -1;
  c->kick_fd = -1;
  c->state = CONN_GONE;
  pthread_mutex_init(&c->lock, NULL);
  pthread_rwlock_init(&c->swap, NULL);
  c->h = nbdvol_make_handle(nv, c->plain);
  if (!c->h)
    return set_nbd_error(uri, NULL);
  if (nbd_connect_uri(c->h, nv->uri.libnbd_uri) < 0) {
    /* libnbd says "nbd_connect_uri: connect: 127.0.0.1:1: could not connect to remote
     * host: Connection refused"; the errno alone says it after the URI. */
    const char *msg = nbdvol_short_error();
    int e = nbd_get_errno();
    if (e && strncmp(msg, "connect: ", 9) == 0)
      return error_set_errno(e, "%s: cannot connect", uri);
    return error_set(e ? e : EIO, "%s: %s", uri, msg);
  }
  c->fd = nbd_aio_get_fd(c->h);
  c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  c->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (c->wake_fd < 0 || c->kick_fd < 0)
    return error_set_errno(errno, "%s: eventfd", uri);
  int e = pthread_create(&c->thread, NULL, nbdvol_loop_thread, c);
  if (e)
    return error_set_errno(e, "%s: cannot start the connection thread", uri);
  c->thread_started = true;
  nbdvol_set_state(c, CONN_UP, NULL);
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
  unsigned want = o->connections ? o->connections : DEFAULT_CONNECTIONS;
  if (want > MAX_CONNECTIONS)
    want = MAX_CONNECTIONS;

  struct nbd_volume *nv = calloc(1, sizeof *nv);
  if (!nv || !(nv->conns = calloc(want, sizeof *nv->conns))) {
    free(nv);
    return error_set(ENOMEM, "%s: out of memory", uri);
  }
  nv->v.ops = &nbd_ops; /* so close works on a half-open volume */
  pthread_mutex_init(&nv->state_lock, NULL);
  nbdvol_cond_init(&nv->state_changed);
  int r = nbd_uri_parse(uri, &nv->uri);
  if (r < 0)
    goto fail;
  nv->timeout = o->timeout > 0 ? o->timeout : DEFAULT_TIMEOUT;
  nv->reconnect_wait = o->reconnect_wait > 0 ? o->reconnect_wait : DEFAULT_RECONNECT_WAIT;
  if ((nv->v.name = strdup(uri)) == NULL) {
    r = error_set(ENOMEM, "%s: out of memory", uri);
    goto fail;
  }
  nv->nconns = 1;
  if ((r = connect_one(nv, &nv->conns[0], 0, uri)) < 0)
    goto fail;
  struct nbd_handle *h = nv->conns[0].h;
  int64_t size = nbd_get_size(h);
  if (size < 0) {
    r = set_nbd_error(uri, "size");
    goto fail;
  }
  nv->v.size = (uint64_t)size; /* compared on every reconnection */
  /* Without multi-conn a flush on one connection need not cover writes on another: one
   * connection then, with many requests in flight on it. */
  bool multi = nbd_can_multi_conn(h) == 1;
  unsigned nconns = multi ? want : 1;
  for (unsigned i = 1; i < nconns; i++) {
    nv->nconns = i + 1;
    if (connect_one(nv, &nv->conns[i], i, uri) < 0) {
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
  debug("nbd", "%s: %" PRId64 " bytes, %u connection(s)%s, block %u/%u/%u, caps 0x%x%s", uri, size,
        nv->nconns, multi ? " (multi-conn)" : "", nv->v.min_block, nv->v.preferred_block,
        nv->v.max_request, nv->v.caps, nv->uri.tls ? ", TLS" : "");
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
