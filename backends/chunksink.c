/* ferry: the chunk sink, see chunksink.h.
 *
 * Chunks written whole in one request (the common case: the copy engine's requests are
 * 1 MiB-aligned) are encoded straight from the caller's buffer.  Partly written chunks get a
 * staging buffer, allocated on their first data write (a chunk only zeroed in pieces needs
 * none); the write that completes one encodes it.  Encoded chunks that cannot be emitted yet
 * wait in the pending list.  Cleanup style: goto labels.
 */
#include "backends/chunksink.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct pending {
  uint64_t index;
  uint32_t filled;  /* bytes written or zeroed so far */
  bool has_data;    /* some of them written (else the chunk is all zeroes) */
  uint8_t *staging; /* chunk_len bytes, zero-filled */
  bool encoded;     /* blob holds the encoded chunk, waiting for its turn */
  void *blob;
};

struct sink {
  struct volume v;
  struct chunksink_codec codec;
  uint32_t chunk_size;
  uint64_t nchunks;
  pthread_mutex_t lock;
  struct pending **p; /* in no order; few: bounded by the write window */
  size_t np, cap;
  uint64_t next_emit; /* chunks before it are emitted */
  bool emitting;      /* a thread is emitting next_emit (and what follows) */
  int err;            /* the sink failed: every later write gets this */
  char *errmsg;
};

static uint32_t
chunk_len(const struct sink *s, uint64_t index)
{
  uint64_t off = index * s->chunk_size;
  return (uint32_t)min_u64(s->chunk_size, s->v.size - off);
}

/* With the lock held. */
static struct pending *
find(struct sink *s, uint64_t index, bool add)
{
  for (size_t i = 0; i < s->np; i++)
    if (s->p[i]->index == index)
      return s->p[i];
  if (!add)
    return NULL;
  if (s->np == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 32;
    struct pending **p = realloc(s->p, cap * sizeof *p);
    if (!p)
      return NULL;
    s->p = p;
    s->cap = cap;
  }
  struct pending *e = calloc(1, sizeof *e);
  if (!e)
    return NULL;
  e->index = index;
  s->p[s->np++] = e;
  return e;
}

/* With the lock held: drop e from the list (not freeing what it points to). */
static void
forget(struct sink *s, struct pending *e)
{
  for (size_t i = 0; i < s->np; i++)
    if (s->p[i] == e) {
      s->p[i] = s->p[--s->np];
      break;
    }
  free(e);
}

/* With the lock held: the first failure stops the sink; its message is kept for the others. */
static int
fail(struct sink *s, int r)
{
  if (!s->err) {
    s->err = r < 0 ? r : -EIO;
    s->errmsg = strdup(error_message());
  }
  return r;
}

/* With the lock held: the error of a sink that failed, in this thread's message. */
static int
failed(struct sink *s)
{
  return error_set(-s->err, "%s", s->errmsg ? s->errmsg : "an earlier write failed");
}

/* Emit `blob` (chunk index == next_emit), then every encoded chunk that follows it. */
static int
deposit(struct sink *s, uint64_t index, void *blob)
{
  pthread_mutex_lock(&s->lock);
  if (s->err) {
    int r = failed(s);
    pthread_mutex_unlock(&s->lock);
    s->codec.discard(s->codec.opaque, blob);
    return r;
  }
  if (index != s->next_emit || s->emitting) {
    struct pending *e = find(s, index, true);
    if (!e) {
      int r = fail(s, error_set(ENOMEM, "%s: out of memory", s->v.name));
      pthread_mutex_unlock(&s->lock);
      s->codec.discard(s->codec.opaque, blob);
      return r;
    }
    e->blob = blob;
    e->encoded = true;
    pthread_mutex_unlock(&s->lock);
    return 0;
  }
  s->emitting = true;
  int r = 0;
  for (;;) {
    pthread_mutex_unlock(&s->lock);
    r = s->codec.emit(s->codec.opaque, index, index * s->chunk_size, chunk_len(s, index), blob);
    pthread_mutex_lock(&s->lock);
    if (r < 0) {
      fail(s, r);
      break;
    }
    s->next_emit++;
    struct pending *e = find(s, s->next_emit, false);
    if (!e || !e->encoded)
      break;
    index = e->index;
    blob = e->blob;
    forget(s, e);
  }
  s->emitting = false;
  pthread_mutex_unlock(&s->lock);
  return r;
}

static int
complete(struct sink *s, uint64_t index, const void *data)
{
  pthread_mutex_lock(&s->lock);
  bool again = index < s->next_emit;
  pthread_mutex_unlock(&s->lock);
  if (again)
    return error_set(EINVAL, "%s: chunk %" PRIu64 " written more than once", s->v.name, index);
  void *blob = NULL;
  int r = s->codec.encode(s->codec.opaque, index, index * s->chunk_size, data, chunk_len(s, index),
                          &blob);
  if (r < 0) {
    pthread_mutex_lock(&s->lock);
    fail(s, r);
    pthread_mutex_unlock(&s->lock);
    return r;
  }
  return deposit(s, index, blob);
}

/* n bytes at `in` within chunk index: data, or zeroes when data is NULL. */
static int
piece(struct sink *s, uint64_t index, uint32_t in, uint32_t n, const uint8_t *data)
{
  uint32_t clen = chunk_len(s, index);
  if (in == 0 && n == clen)
    return complete(s, index, data);
  pthread_mutex_lock(&s->lock);
  if (s->err) {
    int r = failed(s);
    pthread_mutex_unlock(&s->lock);
    return r;
  }
  if (index < s->next_emit) {
    pthread_mutex_unlock(&s->lock);
    return error_set(EINVAL, "%s: chunk %" PRIu64 " written more than once", s->v.name, index);
  }
  struct pending *e = find(s, index, true);
  if (e && data && !e->staging)
    e->staging = calloc(1, clen);
  if (!e || (data && !e->staging)) {
    int r = fail(s, error_set(ENOMEM, "%s: out of memory", s->v.name));
    pthread_mutex_unlock(&s->lock);
    return r;
  }
  uint8_t *staging = e->staging;
  pthread_mutex_unlock(&s->lock);
  /* Writers of one chunk touch disjoint bytes; the lock below orders their copies before the
   * completing writer's encode. */
  if (data)
    memcpy(staging + in, data, n);
  pthread_mutex_lock(&s->lock);
  e->filled += n;
  e->has_data |= data != NULL;
  if (e->filled > clen) {
    int r = fail(
        s, error_set(EINVAL, "%s: chunk %" PRIu64 " written more than once", s->v.name, index));
    pthread_mutex_unlock(&s->lock);
    return r;
  }
  bool done = e->filled == clen, has_data = e->has_data;
  if (done)
    forget(s, e);
  pthread_mutex_unlock(&s->lock);
  if (!done)
    return 0;
  int r = complete(s, index, has_data ? staging : NULL);
  free(staging);
  return r;
}

static int
split(struct sink *s, const uint8_t *data, uint64_t len, uint64_t off)
{
  while (len > 0) {
    uint64_t index = off / s->chunk_size;
    uint32_t in = (uint32_t)(off % s->chunk_size);
    uint32_t n = (uint32_t)min_u64(len, chunk_len(s, index) - in);
    int r = piece(s, index, in, n, data);
    if (r < 0)
      return r;
    if (data)
      data += n;
    off += n;
    len -= n;
  }
  return 0;
}

static int
sink_pwrite(struct volume *v, const void *buf, size_t len, uint64_t off, unsigned flags)
{
  (void)flags;
  return split((struct sink *)v, buf, len, off);
}

static int
sink_zero(struct volume *v, uint64_t len, uint64_t off, unsigned flags)
{
  (void)flags;
  return split((struct sink *)v, NULL, len, off);
}

static void
sink_close(struct volume *v)
{
  struct sink *s = (struct sink *)v;
  for (size_t i = 0; i < s->np; i++) {
    if (s->p[i]->encoded)
      s->codec.discard(s->codec.opaque, s->p[i]->blob);
    free(s->p[i]->staging);
    free(s->p[i]);
  }
  free(s->p);
  free(s->errmsg);
  if (s->codec.close)
    s->codec.close(s->codec.opaque);
  pthread_mutex_destroy(&s->lock);
  free(v->name);
  free(s);
}

static const struct volume_ops sink_ops = {
  .driver = "chunksink",
  .pwrite = sink_pwrite,
  .zero = sink_zero,
  .close = sink_close,
};

int
chunksink_new(const char *name, uint64_t size, uint32_t chunk_size,
              const struct chunksink_codec *codec, struct volume **out)
{
  struct sink *s = calloc(1, sizeof *s);
  if (!s)
    return error_set(ENOMEM, "%s: out of memory", name);
  s->codec = *codec;
  s->chunk_size = chunk_size;
  s->nchunks = (size + chunk_size - 1) / chunk_size;
  pthread_mutex_init(&s->lock, NULL);
  s->v.max_request = 64u << 20;
  s->v.caps = VOLUME_CAN_WRITE | VOLUME_CAN_ZERO;
  s->v.write_window = CHUNKSINK_WINDOW;
  if (volume_init(&s->v, &sink_ops, name, size) < 0) {
    pthread_mutex_destroy(&s->lock);
    free(s);
    return -ENOMEM;
  }
  *out = &s->v;
  return 0;
}

int
chunksink_finish(struct volume *v)
{
  struct sink *s = (struct sink *)v;
  pthread_mutex_lock(&s->lock);
  int r = 0;
  if (s->err)
    r = failed(s);
  else if (s->next_emit != s->nchunks)
    r = error_set(EIO,
                  "%s: chunk %" PRIu64 " at offset %" PRIu64 " was never written (%" PRIu64
                  " of %" PRIu64 " chunks complete)",
                  v->name, s->next_emit, s->next_emit * s->chunk_size, s->next_emit, s->nchunks);
  pthread_mutex_unlock(&s->lock);
  return r;
}

void *
chunksink_opaque(struct volume *v)
{
  return ((struct sink *)v)->codec.opaque;
}
