/* ferry-nbd: the transmission phase — reading requests, checking them against the spec and
 * the export, running them on the volume and sending simple or structured replies.
 *
 * A request is checked completely (nbd_validate_request) before the volume is touched, and
 * a WRITE payload is read completely before it is written, so a hostile or vanishing
 * client can never change data with a request the spec says to refuse. */
#include "nbd-server/nbd.h"
#include "nbd-server/protocol.h"
#include "backends/clone.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

/* Reads at least this large look for holes (volume_known_extents: no remote query, so a
 * clone's read of a region on the source is not a block status round trip and then a fetch)
 * and send them as OFFSET_HOLE chunks; smaller reads are one data chunk (a hole lookup costs two
 * syscalls, more than sending a few KiB). */
#define SPARSE_READ_MIN (64u * 1024)
/* Keep worker buffers up to this size between requests; larger ones are freed after use. */
#define KEEP_BUFFER (4u * 1024 * 1024)
/* Most descriptors in one block status chunk (the spec lets us answer a prefix). */
#define MAX_DESCRIPTORS (64u * 1024)
/* Most chunks in one read reply before the rest of the request is sent as data. */
#define MAX_READ_CHUNKS 1024

/* ---- request buffer memory (NBD_CONN_FLOOR in nbd.h) ---- */

struct nbd_budget {
  pthread_mutex_t lock;
  pthread_cond_t freed;
  uint64_t limit, used;
};

struct nbd_budget *
nbd_budget_new(uint64_t bytes)
{
  struct nbd_budget *b = calloc(1, sizeof *b);
  if (!b)
    return NULL;
  pthread_mutex_init(&b->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&b->freed, &ca);
  pthread_condattr_destroy(&ca);
  b->limit = bytes ? bytes : NBD_DEFAULT_BUDGET;
  return b;
}

void
nbd_budget_free(struct nbd_budget *b)
{
  if (!b)
    return;
  pthread_mutex_destroy(&b->lock);
  pthread_cond_destroy(&b->freed);
  free(b);
}

static void
deadline_in(struct timespec *ts, double seconds)
{
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += (time_t)seconds;
  ts->tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

/* From the shared budget, waiting at most NBD_BUDGET_WAIT seconds (less when the
 * connection breaks meanwhile).  One request always fits when nothing else is held. */
static int
shared_acquire(struct conn *c, uint64_t n)
{
  struct nbd_budget *b = c->exp->budget;
  if (!b || n == 0)
    return 0;
  struct timespec deadline, slice;
  deadline_in(&deadline, NBD_BUDGET_WAIT);
  int r = 0;
  pthread_mutex_lock(&b->lock);
  while (b->used > 0 && b->used + n > b->limit && r == 0 && !c->broken) {
    deadline_in(&slice, 1.0);
    bool last = slice.tv_sec > deadline.tv_sec
                || (slice.tv_sec == deadline.tv_sec && slice.tv_nsec >= deadline.tv_nsec);
    r = pthread_cond_timedwait(&b->freed, &b->lock, last ? &deadline : &slice);
    if (r == ETIMEDOUT && !last)
      r = 0;
  }
  bool ok = r == 0 && !c->broken;
  if (ok)
    b->used += n;
  pthread_mutex_unlock(&b->lock);
  return ok ? 0 : -1;
}

static void
shared_release(struct nbd_budget *b, uint64_t n)
{
  if (!b || n == 0)
    return;
  pthread_mutex_lock(&b->lock);
  b->used -= n;
  pthread_cond_broadcast(&b->freed);
  pthread_mutex_unlock(&b->lock);
}

/* Account n more bytes for a buffer of worker w: within the connection's cap (waiting for
 * its own requests to finish), from its floor first, the rest from the shared budget. */
static int
mem_acquire(struct conn *c, struct worker *w, uint64_t n)
{
  pthread_mutex_lock(&c->mem_lock);
  while (c->mem_used > 0 && c->mem_used + n > NBD_CONN_CAP && !c->quit) {
    struct timespec ts;
    deadline_in(&ts, 1.0); /* re-check quit: a shutdown does not signal us */
    pthread_cond_timedwait(&c->mem_freed, &c->mem_lock, &ts);
  }
  if (c->mem_used > 0 && c->mem_used + n > NBD_CONN_CAP) {
    pthread_mutex_unlock(&c->mem_lock);
    return -1;
  }
  uint64_t from_floor = n < c->floor_left ? n : c->floor_left;
  c->floor_left -= from_floor;
  c->mem_used += n;
  pthread_mutex_unlock(&c->mem_lock);
  if (shared_acquire(c, n - from_floor) < 0) {
    pthread_mutex_lock(&c->mem_lock);
    c->floor_left += from_floor;
    c->mem_used -= n;
    pthread_cond_broadcast(&c->mem_freed);
    pthread_mutex_unlock(&c->mem_lock);
    return -1;
  }
  w->paid_floor += from_floor;
  w->paid_shared += n - from_floor;
  return 0;
}

/* Give back everything w's buffer holds. */
static void
mem_release_all(struct conn *c, struct worker *w)
{
  if (w->paid_floor + w->paid_shared == 0)
    return;
  shared_release(c->exp->budget, w->paid_shared);
  pthread_mutex_lock(&c->mem_lock);
  c->floor_left += w->paid_floor;
  c->mem_used -= w->paid_floor + w->paid_shared;
  pthread_cond_broadcast(&c->mem_freed);
  pthread_mutex_unlock(&c->mem_lock);
  w->paid_floor = w->paid_shared = 0;
}

void
worker_free(struct conn *c, struct worker *w)
{
  free(w->buf);
  mem_release_all(c, w);
  extent_list_free(&w->extents);
  free(w->iov);
  free(w->hdrs);
  nbd_splice_free(w);
  memset(w, 0, sizeof *w);
}

/* Make w->buf at least len bytes; keep_data: preserve the first w->cap bytes. */
static int
reserve_buf(struct conn *c, struct worker *w, size_t len, bool keep_data)
{
  if (w->cap >= len && w->buf)
    return 0;
  if (len == 0)
    len = 1;
  if (mem_acquire(c, w, len - w->cap) < 0)
    return -1;
  void *p = keep_data ? realloc(w->buf, len) : malloc(len);
  if (!p) {
    /* The request fails anyway: drop the old buffer too, so the accounting stays whole. */
    free(w->buf);
    w->buf = NULL;
    w->cap = 0;
    mem_release_all(c, w);
    return -1;
  }
  if (!keep_data)
    free(w->buf);
  w->buf = p;
  w->cap = len;
  return 0;
}

static int
reserve(struct conn *c, struct worker *w, size_t len)
{
  return reserve_buf(c, w, len, false);
}

/* After a request: keep a buffer for the next one only when it is small and paid from the
 * connection's own floor, so idle connections never sit on shared memory. */
static void
trim_buffer(struct conn *c, struct worker *w)
{
  if (w->cap > KEEP_BUFFER || w->paid_shared > 0) {
    free(w->buf);
    w->buf = NULL;
    w->cap = 0;
    mem_release_all(c, w);
  }
}

int
nbd_read_request(struct conn *c, struct worker *w, struct request *req)
{
  uint8_t h[NBD_REQUEST_SIZE];
  if (c->quit || nbd_conn_recv(c, h, sizeof h) < 0)
    return 0;
  if (get_be32(h) != NBD_REQUEST_MAGIC) {
    log_warning("%s: bad request magic 0x%08" PRIx32 ", dropping the connection", c->peer,
                get_be32(h));
    return -1;
  }
  req->flags = get_be16(h + 4);
  req->type = get_be16(h + 6);
  req->handle = get_be64(h + 8);
  req->offset = get_be64(h + 16);
  req->length = get_be32(h + 24);
  req->data = NULL;
  if (req->type == NBD_CMD_DISC) {
    debug("nbd", "%s: disconnect requested", c->peer);
    return 0;
  }
  if (req->type == NBD_CMD_WRITE) {
    /* We cannot answer without consuming the payload, and a payload this large is a denial
     * of service (the spec allows a hard disconnect). */
    if (req->length > NBD_MAX_REQUEST) {
      log_warning("%s: write of %" PRIu32 " bytes exceeds the %u byte limit, dropping the "
                  "connection",
                  c->peer, req->length, NBD_MAX_REQUEST);
      return -1;
    }
    if (reserve(c, w, req->length) < 0) {
      log_error("%s: no memory for a %" PRIu32 " byte write, dropping the connection", c->peer,
                req->length);
      return -1;
    }
    if (req->length && nbd_conn_recv(c, w->buf, req->length) < 0) {
      log_warning("%s: client vanished in the middle of a write, nothing written", c->peer);
      return -1;
    }
    req->data = w->buf;
  }
  return 1;
}

uint32_t
nbd_validate_request(const struct conn *c, const struct request *r)
{
  const struct nbd_export *e = c->exp;
  uint16_t tf = c->tflags;
  uint16_t allowed = (tf & NBD_FLAG_SEND_FUA) ? NBD_CMD_FLAG_FUA : 0;
  bool writes = false, payload_limit = false;
  switch (r->type) {
  case NBD_CMD_READ:
    if (tf & NBD_FLAG_SEND_DF)
      allowed |= NBD_CMD_FLAG_DF;
    payload_limit = true;
    break;
  case NBD_CMD_WRITE:
    writes = payload_limit = true;
    break;
  case NBD_CMD_FLUSH:
    if (!(tf & NBD_FLAG_SEND_FLUSH))
      return NBD_EINVAL;
    if (r->offset || r->length)
      return NBD_EINVAL; /* reserved fields must be zero */
    break;
  case NBD_CMD_TRIM:
    writes = true;
    if (!e->readonly && !(tf & NBD_FLAG_SEND_TRIM))
      return NBD_EINVAL;
    break;
  case NBD_CMD_CACHE:
    break;
  case NBD_CMD_WRITE_ZEROES:
    writes = true;
    if (!e->readonly && !(tf & NBD_FLAG_SEND_WRITE_ZEROES))
      return NBD_EINVAL;
    allowed |= NBD_CMD_FLAG_NO_HOLE;
    if (tf & NBD_FLAG_SEND_FAST_ZERO)
      allowed |= NBD_CMD_FLAG_FAST_ZERO;
    break;
  case NBD_CMD_BLOCK_STATUS:
    if (!c->structured || !(c->meta_base || c->meta_hydrated))
      return NBD_EINVAL; /* no metadata context was selected */
    allowed |= NBD_CMD_FLAG_REQ_ONE;
    break;
  default:
    return NBD_EINVAL; /* unknown command */
  }
  if (writes && e->readonly)
    return NBD_EPERM;
  if (r->flags & ~allowed)
    return NBD_EINVAL;
  if (r->type == NBD_CMD_FLUSH)
    return 0;
  uint64_t size = e->vol->size;
  if (r->offset > size || r->length > size - r->offset)
    return writes && r->type != NBD_CMD_TRIM ? NBD_ENOSPC : NBD_EINVAL;
  if (e->min_block > 1 && ((r->offset | r->length) & (e->min_block - 1)))
    return NBD_EINVAL;
  if (payload_limit && r->length > e->max_block)
    return r->type == NBD_CMD_READ ? NBD_EOVERFLOW : NBD_EINVAL;
  if (r->type == NBD_CMD_BLOCK_STATUS && r->length == 0)
    return NBD_EINVAL;
  return 0;
}

/* ---- replies ---- */

/* Held replies: the most bytes kept before they are sent. */
#define HELD_MAX (64u * 1024)

/* The connection whose short replies this thread holds back (nbd_replies_hold). */
static _Thread_local struct conn *holding;

static void
send_failed(struct conn *c)
{
  /* The client is gone: stop reading too, so the connection winds down. */
  c->broken = true;
  c->quit = true;
  if (c->io->shutdown)
    c->io->shutdown(c->io_opaque);
}

void
nbd_replies_hold(struct conn *c)
{
  holding = c;
}

int
nbd_replies_flush(struct conn *c)
{
  if (c->held_len == 0)
    return 0;
  struct iovec iov = { c->held, c->held_len };
  if (c->held_n > 1)
    debug("nbd", "%s: %u replies in one send", c->peer, c->held_n);
  c->held_len = 0;
  c->held_n = 0;
  pthread_mutex_lock(&c->write_lock);
  int r = c->io->sendv(c->io_opaque, &iov, 1);
  pthread_mutex_unlock(&c->write_lock);
  if (r < 0)
    send_failed(c);
  return r;
}

/* Keep a short reply with the held ones: true when it was kept. */
static bool
hold(struct conn *c, const struct iovec *iov, int n)
{
  size_t len = 0;
  for (int i = 0; i < n; i++)
    len += iov[i].iov_len;
  if (len > HELD_MAX)
    return false;
  if (c->held_len + len > HELD_MAX && nbd_replies_flush(c) < 0)
    return true; /* the client is gone: nothing to keep */
  if (!c->held && !(c->held = malloc(HELD_MAX)))
    return false;
  for (int i = 0; i < n; i++) {
    memcpy(c->held + c->held_len, iov[i].iov_base, iov[i].iov_len);
    c->held_len += iov[i].iov_len;
  }
  c->held_n++;
  return true;
}

static int
send_locked(struct conn *c, const struct iovec *iov, int n)
{
  if (holding == c) {
    if (hold(c, iov, n))
      return c->broken ? -1 : 0;
    if (nbd_replies_flush(c) < 0)
      return -1;
  }
  pthread_mutex_lock(&c->write_lock);
  int r = c->io->sendv(c->io_opaque, iov, n);
  pthread_mutex_unlock(&c->write_lock);
  if (r < 0)
    send_failed(c);
  return r;
}

static void
chunk_header(uint8_t *h, uint16_t flags, uint16_t type, uint64_t handle, uint32_t len)
{
  put_be32(h, NBD_STRUCTURED_REPLY_MAGIC);
  put_be16(h + 4, flags);
  put_be16(h + 6, type);
  put_be64(h + 8, handle);
  put_be32(h + 16, len);
}

static int
send_simple(struct conn *c, uint64_t handle, uint32_t err, const void *data, size_t len)
{
  uint8_t h[NBD_SIMPLE_REPLY_SIZE];
  put_be32(h, NBD_SIMPLE_REPLY_MAGIC);
  put_be32(h + 4, err);
  put_be64(h + 8, handle);
  struct iovec iov[2] = { { h, sizeof h }, { (void *)data, len } };
  return send_locked(c, iov, len ? 2 : 1);
}

/* An error: a structured ERROR chunk with a message when negotiated, else a simple reply. */
static int
send_error(struct conn *c, const struct request *r, uint32_t err, const char *msg)
{
  debug("nbd", "%s: %s at %" PRIu64 "+%" PRIu32 " failed: error %" PRIu32 " %s", c->peer,
        nbd_command_name(r->type), r->offset, r->length, err, msg ? msg : "");
  if (!c->structured)
    return send_simple(c, r->handle, err, NULL, 0);
  size_t mlen = msg ? strlen(msg) : 0;
  if (mlen > 1024)
    mlen = 1024;
  uint8_t h[NBD_CHUNK_HEADER_SIZE + 6];
  chunk_header(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, r->handle, (uint32_t)(6 + mlen));
  put_be32(h + NBD_CHUNK_HEADER_SIZE, err);
  put_be16(h + NBD_CHUNK_HEADER_SIZE + 4, (uint16_t)mlen);
  struct iovec iov[2] = { { h, sizeof h }, { (void *)msg, mlen } };
  return send_locked(c, iov, mlen ? 2 : 1);
}

static int
send_ok(struct conn *c, const struct request *r)
{
  return send_simple(c, r->handle, 0, NULL, 0);
}

static const char *
reason(uint32_t err)
{
  switch (err) {
  case NBD_EPERM:
    return "the export is read-only";
  case NBD_ENOSPC:
    return "request extends beyond the end of the export";
  case NBD_EOVERFLOW:
    return "request is larger than the maximum block size";
  default:
    return "invalid request (command, flags, range or alignment)";
  }
}

/* ---- commands ---- */

/* A read's reply spliced after header h (when h is given; splice.c), else w->buf reserved
 * for it: 0 = reply from w->buf, 1 = the reply is done (spliced, or an ENOMEM error sent),
 * -1 = the connection failed. */
static int
splice_or_reserve(struct conn *c, struct worker *w, const struct request *r, void *h, size_t hlen)
{
  if (h) {
    struct iovec hdr = { h, hlen };
    int s = nbd_splice_read(c, w, r, &hdr, 1);
    if (s != 0)
      return s;
  }
  if (reserve(c, w, r->length) < 0)
    return send_error(c, r, NBD_ENOMEM, "out of memory") < 0 ? -1 : 1;
  return 0;
}

static int
read_simple(struct conn *c, struct worker *w, const struct request *r)
{
  uint8_t h[NBD_SIMPLE_REPLY_SIZE];
  put_be32(h, NBD_SIMPLE_REPLY_MAGIC);
  put_be32(h + 4, 0);
  put_be64(h + 8, r->handle);
  int s = splice_or_reserve(c, w, r, h, sizeof h);
  if (s != 0)
    return s < 0 ? -1 : 0;
  int e = volume_pread(c->exp->vol, w->buf, r->length, r->offset);
  if (e < 0)
    return send_error(c, r, nbd_errno_to_wire(-e), error_message());
  return send_simple(c, r->handle, 0, w->buf, r->length);
}

static int
grow(void **p, size_t *cap, size_t need, size_t elem)
{
  if (*cap >= need)
    return 0;
  size_t n = *cap ? *cap : 16;
  while (n < need)
    n *= 2;
  void *q = realloc(*p, n * elem);
  if (!q)
    return -1;
  *p = q;
  *cap = n;
  return 0;
}

/* Structured read: OFFSET_DATA chunks for data, OFFSET_HOLE chunks for ranges the volume
 * reports as reading zeroes.  All data is read before anything is sent, so an error is
 * reported alone and no chunk is ever marked final too early. */
static int
read_structured(struct conn *c, struct worker *w, const struct request *r)
{
  struct volume *v = c->exp->vol;
  if (r->length == 0) {
    uint8_t h[NBD_CHUNK_HEADER_SIZE];
    chunk_header(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, r->handle, 0);
    struct iovec iov = { h, sizeof h };
    return send_locked(c, &iov, 1);
  }
  extent_list_reset(&w->extents);
  bool sparse = !(r->flags & NBD_CMD_FLAG_DF) && r->length >= SPARSE_READ_MIN
                && volume_can(v, VOLUME_CAN_EXTENTS);
  uint64_t end = r->offset + r->length;
  if (sparse) {
    uint64_t pos = r->offset;
    while (pos < end && w->extents.n < MAX_READ_CHUNKS) {
      size_t before = w->extents.n;
      if (volume_known_extents(v, end - pos, pos, &w->extents) < 0 || w->extents.n == before) {
        sparse = false; /* fall back to reading everything */
        break;
      }
      struct extent *last = &w->extents.v[w->extents.n - 1];
      pos = last->offset + last->length;
    }
  }
  if (!sparse || w->extents.n == 0) {
    extent_list_reset(&w->extents);
    extent_list_add(&w->extents, r->offset, r->length, 0);
  }
  /* Clip to the request; past MAX_READ_CHUNKS the rest is one data extent. */
  struct extent_list *l = &w->extents;
  size_t n = 0;
  for (size_t i = 0; i < l->n; i++) {
    struct extent x = l->v[i];
    if (x.offset >= end)
      break;
    if (x.offset + x.length > end)
      x.length = end - x.offset;
    l->v[n++] = x;
  }
  l->n = n;
  if (n == 0) { /* a driver that broke the extents contract: send plain data */
    if (extent_list_add(l, r->offset, r->length, 0) < 0)
      return send_error(c, r, NBD_ENOMEM, "out of memory");
    n = 1;
  }
  struct extent *last = &l->v[n - 1];
  if (last->offset + last->length < end) {
    uint64_t from = last->offset + last->length;
    if (last->flags == 0)
      last->length = end - last->offset;
    else if (extent_list_add(l, from, end - from, 0) < 0)
      return send_error(c, r, NBD_ENOMEM, "out of memory");
  }

  /* One data chunk: its bytes may be spliced. */
  uint8_t h[NBD_CHUNK_HEADER_SIZE + 8];
  bool one = l->n == 1 && !(l->v[0].flags & EXTENT_ZERO);
  if (one) {
    chunk_header(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, r->handle, 8 + r->length);
    put_be64(h + NBD_CHUNK_HEADER_SIZE, r->offset);
  }
  int s = splice_or_reserve(c, w, r, one ? h : NULL, sizeof h);
  if (s != 0)
    return s < 0 ? -1 : 0;

  /* Read the data extents. */
  uint8_t *buf = w->buf;
  for (size_t i = 0; i < l->n; i++) {
    if (l->v[i].flags & EXTENT_ZERO)
      continue;
    int e = volume_pread(v, buf + (l->v[i].offset - r->offset), l->v[i].length, l->v[i].offset);
    if (e < 0)
      return send_error(c, r, nbd_errno_to_wire(-e), error_message());
  }

  /* One header area per chunk: 20 bytes + 12 bytes of payload for holes, 8 for data. */
  enum { SLOT = NBD_CHUNK_HEADER_SIZE + 12 };
  if (grow((void **)&w->hdrs, &w->hdrs_cap, l->n * SLOT, 1) < 0
      || grow((void **)&w->iov, &w->iov_cap, 2 * l->n, sizeof *w->iov) < 0)
    return send_error(c, r, NBD_ENOMEM, "out of memory");
  int niov = 0;
  for (size_t i = 0; i < l->n; i++) {
    const struct extent *x = &l->v[i];
    uint8_t *h = w->hdrs + i * SLOT;
    uint16_t flags = i + 1 == l->n ? NBD_REPLY_FLAG_DONE : 0;
    if (x->flags & EXTENT_ZERO) {
      chunk_header(h, flags, NBD_REPLY_TYPE_OFFSET_HOLE, r->handle, 12);
      put_be64(h + NBD_CHUNK_HEADER_SIZE, x->offset);
      put_be32(h + NBD_CHUNK_HEADER_SIZE + 8, (uint32_t)x->length);
      w->iov[niov++] = (struct iovec){ h, NBD_CHUNK_HEADER_SIZE + 12 };
    } else {
      chunk_header(h, flags, NBD_REPLY_TYPE_OFFSET_DATA, r->handle, (uint32_t)(8 + x->length));
      put_be64(h + NBD_CHUNK_HEADER_SIZE, x->offset);
      w->iov[niov++] = (struct iovec){ h, NBD_CHUNK_HEADER_SIZE + 8 };
      w->iov[niov++] = (struct iovec){ buf + (x->offset - r->offset), x->length };
    }
  }
  return send_locked(c, w->iov, niov);
}

/* Append one context's descriptors (id + (length, flags) pairs) to w->buf at *pos. */
static int
block_status_chunk(struct conn *c, struct worker *w, const struct request *r, uint32_t id,
                   bool last_chunk, size_t *pos)
{
  struct volume *v = c->exp->vol;
  extent_list_reset(&w->extents);
  int e;
  if (id == NBD_META_BASE_ALLOCATION)
    e = volume_extents(v, r->length, r->offset, &w->extents);
  else
    e = clone_hydrated_extents(c->exp->clone, r->length, r->offset, &w->extents);
  if (e < 0)
    return e;
  struct extent_list *l = &w->extents;
  if (l->n == 0)
    return error_set(EIO, "%s: no extents at offset %" PRIu64, v->name, r->offset);
  bool one = r->flags & NBD_CMD_FLAG_REQ_ONE;
  size_t n = one ? 1 : (l->n < MAX_DESCRIPTORS ? l->n : MAX_DESCRIPTORS);
  size_t need = *pos + NBD_CHUNK_HEADER_SIZE + 4 + 8 * n;
  if (reserve_buf(c, w, need, true) < 0)
    return error_set(ENOMEM, "out of memory for block status");
  uint8_t *out = (uint8_t *)w->buf + *pos;
  chunk_header(out, last_chunk ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_BLOCK_STATUS, r->handle,
               (uint32_t)(4 + 8 * n));
  put_be32(out + NBD_CHUNK_HEADER_SIZE, id);
  uint8_t *d = out + NBD_CHUNK_HEADER_SIZE + 4;
  uint64_t end = r->offset + r->length;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const struct extent *x = &l->v[i];
    uint64_t len = x->length;
    /* Descriptor lengths are 32 bits; REQ_ONE must not exceed the request. */
    if (one && x->offset + len > end)
      len = end - x->offset;
    if (len > UINT32_MAX - 0xfffu)
      len = (UINT32_MAX - 0xfffu) & ~(uint64_t)0xfff;
    uint32_t flags = x->flags;
    if (id == NBD_META_BASE_ALLOCATION)
      flags &= NBD_STATE_HOLE | NBD_STATE_ZERO;
    put_be32(d + 8 * k, (uint32_t)len);
    put_be32(d + 8 * k + 4, flags);
    k++;
    if (x->offset + len >= end || len != x->length)
      break; /* later descriptors would start past the request or not be consecutive */
  }
  put_be32(out + 16, (uint32_t)(4 + 8 * k));
  *pos += NBD_CHUNK_HEADER_SIZE + 4 + 8 * k;
  return 0;
}

static int
block_status(struct conn *c, struct worker *w, const struct request *r)
{
  size_t pos = 0;
  int e = 0;
  if (c->meta_base)
    e = block_status_chunk(c, w, r, NBD_META_BASE_ALLOCATION, !c->meta_hydrated, &pos);
  if (e == 0 && c->meta_hydrated)
    e = block_status_chunk(c, w, r, NBD_META_FERRY_HYDRATED, true, &pos);
  if (e < 0)
    return send_error(c, r, nbd_errno_to_wire(-e), error_message());
  struct iovec iov = { w->buf, pos };
  return send_locked(c, &iov, 1);
}

/* Execute and answer a request nbd_validate_request accepted. */
static int
execute(struct conn *c, struct worker *w, const struct request *r)
{
  struct volume *v = c->exp->vol;
  unsigned fua = (r->flags & NBD_CMD_FLAG_FUA) ? VOLUME_FUA : 0;
  int e = 0;
  int rc;
  switch (r->type) {
  case NBD_CMD_READ:
    rc = c->structured ? read_structured(c, w, r) : read_simple(c, w, r);
    trim_buffer(c, w);
    return rc;
  case NBD_CMD_WRITE:
    /* FUA: volume_pwrite returns only once the data is durable (or flushes for us). */
    e = volume_pwrite(v, r->data, r->length, r->offset, fua);
    trim_buffer(c, w);
    break;
  case NBD_CMD_FLUSH:
    /* Every write we already answered has returned from the volume: this makes it durable. */
    e = volume_flush(v);
    break;
  case NBD_CMD_TRIM:
    e = volume_trim(v, r->length, r->offset, fua);
    break;
  case NBD_CMD_CACHE:
    e = volume_cache(v, r->length, r->offset);
    break;
  case NBD_CMD_WRITE_ZEROES: {
    unsigned f = fua;
    if (!(r->flags & NBD_CMD_FLAG_NO_HOLE))
      f |= VOLUME_MAY_TRIM;
    if (r->flags & NBD_CMD_FLAG_FAST_ZERO) {
      /* Fail fast, touching nothing, when zeroing would be no quicker than writing. */
      if (!volume_can(v, VOLUME_CAN_FAST_ZERO))
        return send_error(c, r, NBD_ENOTSUP, "fast zeroing is not supported by this volume");
      f |= VOLUME_FAST_ZERO;
    }
    e = volume_zero(v, r->length, r->offset, f);
    break;
  }
  case NBD_CMD_BLOCK_STATUS:
    return block_status(c, w, r);
  }
  if (e < 0) {
    uint32_t we = nbd_errno_to_wire(-e);
    /* ENOTSUP is only meaningful for FAST_ZERO (spec); anything else is an I/O failure. */
    if (we == NBD_ENOTSUP && !(r->flags & NBD_CMD_FLAG_FAST_ZERO))
      we = NBD_EIO;
    log_warning("%s: %s", c->peer, error_message());
    return send_error(c, r, we, error_message());
  }
  return send_ok(c, r);
}

int
nbd_handle_request(struct conn *c, struct worker *w, const struct request *r)
{
  /* Nobody will see the reply: do not spend memory and I/O on it (an unacknowledged write
   * may or may not happen, as after any dropped connection). */
  if (c->broken)
    return -1;
  uint32_t err = nbd_validate_request(c, r);
  if (err) {
    /* Keep the message: the client sees why. */
    char msg[200];
    snprintf(msg, sizeof msg, "%s at %" PRIu64 "+%" PRIu32 ": %s", nbd_command_name(r->type),
             r->offset, r->length, reason(err));
    return send_error(c, r, err, msg);
  }
  return execute(c, w, r);
}

/* ---- requests run by the reading thread (serve.c) ---- */

/* Reads up to this size may be answered from the held buffer. */
#define HELD_READ_MAX (16u * 1024)

/* A small read whose bytes are all in the page cache of a file: its reply (header and bytes,
 * the bytes read with RWF_NOWAIT straight into the held buffer) joins the held replies.
 * 1 answered, 0 not (not a file, or not all cached: nothing held, the request runs as
 * usual and says what is wrong, if anything), -1 the connection failed. */
static int
read_held(struct conn *c, const struct request *r)
{
  int fd;
  uint64_t foff;
  if (c->no_nowait || r->length == 0 || r->length > HELD_READ_MAX
      || volume_file_range(c->exp->vol, r->length, r->offset, &fd, &foff) < 0
      || foff > (uint64_t)INT64_MAX - r->length)
    return 0;
  size_t hlen = c->structured ? NBD_CHUNK_HEADER_SIZE + 8 : NBD_SIMPLE_REPLY_SIZE;
  if (c->held_len + hlen + r->length > HELD_MAX && nbd_replies_flush(c) < 0)
    return -1;
  if (!c->held && !(c->held = malloc(HELD_MAX)))
    return 0;
  uint8_t *h = c->held + c->held_len;
  struct iovec iov = { h + hlen, r->length };
  ssize_t n;
  do
    n = preadv2(fd, &iov, 1, (off_t)foff, RWF_NOWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EOPNOTSUPP || errno == EINVAL))
    c->no_nowait = true; /* this file cannot say: do not ask again */
  if (n != (ssize_t)r->length)
    return 0;
  if (c->structured) {
    chunk_header(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, r->handle, r->length + 8);
    put_be64(h + NBD_CHUNK_HEADER_SIZE, r->offset);
  } else {
    put_be32(h, NBD_SIMPLE_REPLY_MAGIC);
    put_be32(h + 4, 0);
    put_be64(h + 8, r->handle);
  }
  c->held_len += hlen + r->length;
  c->held_n++;
  return 1;
}

int
nbd_run_while_reading(struct conn *c, struct worker *w, const struct request *r)
{
  if (nbd_validate_request(c, r) != 0)
    return 0;
  if (r->type == NBD_CMD_READ)
    return read_held(c, r);
  int fd;
  uint64_t foff;
  /* Writes into a file's page cache; not FUA (its sync would keep the reader waiting, while
   * workers' syncs run at once and the kernel joins them), not a clone's region still on its
   * source (that is a fetch). */
  if (r->type != NBD_CMD_WRITE || (r->flags & NBD_CMD_FLAG_FUA)
      || volume_file_range(c->exp->vol, r->length, r->offset, &fd, &foff) < 0)
    return 0;
  if (c->broken)
    return -1;
  holding = c;
  int s = execute(c, w, r); /* validated above */
  holding = NULL;
  return s < 0 ? -1 : 1;
}

void
conn_init(struct conn *c, const struct nbd_export *exp, const struct conn_io *io, void *opaque,
          const char *peer)
{
  memset(c, 0, sizeof *c);
  c->exp = exp;
  c->io = io;
  c->io_opaque = opaque;
  c->peer = peer;
  pthread_mutex_init(&c->read_lock, NULL);
  pthread_mutex_init(&c->write_lock, NULL);
  pthread_mutex_init(&c->mem_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->mem_freed, &ca);
  pthread_condattr_destroy(&ca);
  c->floor_left = NBD_CONN_FLOOR;
}

void
conn_destroy(struct conn *c)
{
  free(c->meta_export);
  c->meta_export = NULL;
  nbd_conn_recv_free(c);
  free(c->held);
  c->held = NULL;
  pthread_mutex_destroy(&c->read_lock);
  pthread_mutex_destroy(&c->write_lock);
  pthread_mutex_destroy(&c->mem_lock);
  pthread_cond_destroy(&c->mem_freed);
}

uint32_t
nbd_errno_to_wire(int err)
{
  switch (err) {
  case EPERM:
  case EROFS:
    return NBD_EPERM;
  case EIO:
    return NBD_EIO;
  case ENOMEM:
    return NBD_ENOMEM;
  case EINVAL:
  case ERANGE:
    return NBD_EINVAL;
  case ENOSPC:
  case EDQUOT:
  case EFBIG:
    return NBD_ENOSPC;
  case EOVERFLOW:
    return NBD_EOVERFLOW;
  case ENOTSUP:
    return NBD_ENOTSUP;
  case ESHUTDOWN:
    return NBD_ESHUTDOWN;
  default:
    return NBD_EIO;
  }
}

const char *
nbd_command_name(uint16_t cmd)
{
  switch (cmd) {
  case NBD_CMD_READ:
    return "READ";
  case NBD_CMD_WRITE:
    return "WRITE";
  case NBD_CMD_DISC:
    return "DISC";
  case NBD_CMD_FLUSH:
    return "FLUSH";
  case NBD_CMD_TRIM:
    return "TRIM";
  case NBD_CMD_CACHE:
    return "CACHE";
  case NBD_CMD_WRITE_ZEROES:
    return "WRITE_ZEROES";
  case NBD_CMD_BLOCK_STATUS:
    return "BLOCK_STATUS";
  default:
    return "unknown command";
  }
}
