/* ferry: the send stream's format and its writer, see stream.h.  The writer is a chunk sink
 * (chunksink.h): encode hashes and compresses a chunk on the copy worker that completed it,
 * emit writes records in order, turning runs of zero chunks into one ZERO record.
 * Cleanup style: goto labels.
 */
#include "backends/stream.h"
#include "backends/chunksink.h"
#include "backends/zstd-pool.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

static void
put32(uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void
put64(uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t
get32(const uint8_t *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
get64(const uint8_t *p)
{
  return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint32_t
check(const uint8_t *p)
{
  return (uint32_t)xxh64(p, 60, 0);
}

void
stream_header_encode(const struct stream_header *h, uint8_t out[STREAM_HEADER_SIZE])
{
  memset(out, 0, STREAM_HEADER_SIZE);
  memcpy(out, STREAM_MAGIC, 8);
  put32(out + 8, h->version);
  put32(out + 12, h->flags);
  put64(out + 16, h->size);
  put32(out + 24, h->chunk_size);
  put32(out + 28, h->hash);
  put32(out + 60, check(out));
}

int
stream_header_decode(const uint8_t in[STREAM_HEADER_SIZE], struct stream_header *h)
{
  if (memcmp(in, STREAM_MAGIC, 8) != 0)
    return error_set(EINVAL,
                     "not a ferry send stream (it starts with %02x %02x %02x %02x, not "
                     "\"" STREAM_MAGIC "\")",
                     in[0], in[1], in[2], in[3]);
  if (get32(in + 60) != check(in))
    return error_set(EINVAL, "the stream header is corrupt (check 0x%08x, computed 0x%08x)",
                     get32(in + 60), check(in));
  h->version = get32(in + 8);
  h->flags = get32(in + 12);
  h->size = get64(in + 16);
  h->chunk_size = get32(in + 24);
  h->hash = get32(in + 28);
  if (h->version != STREAM_VERSION)
    return error_set(EPROTONOSUPPORT, "stream version %u, this ferry reads version %u%s",
                     h->version, STREAM_VERSION,
                     h->version > STREAM_VERSION ? ": upgrade ferry on the receiving side" : "");
  if (h->flags || h->chunk_size != STREAM_CHUNK || h->hash != STREAM_HASH_SHA256)
    return error_set(EPROTONOSUPPORT,
                     "stream flags 0x%x, chunk size %u, hash %u: not what "
                     "version 1 allows",
                     h->flags, h->chunk_size, h->hash);
  return 0;
}

void
stream_record_encode(const struct stream_record *r, uint8_t out[STREAM_RECORD_SIZE])
{
  memset(out, 0, STREAM_RECORD_SIZE);
  out[0] = r->type;
  out[1] = r->codec;
  put32(out + 4, r->payload);
  put64(out + 8, r->offset);
  put64(out + 16, r->length);
  memcpy(out + 24, r->hash, SHA256_BYTES);
  put32(out + 60, check(out));
}

int
stream_record_decode(const uint8_t in[STREAM_RECORD_SIZE], struct stream_record *r)
{
  if (get32(in + 60) != check(in))
    return error_set(EBADMSG, "corrupt record header (check 0x%08x, computed 0x%08x)",
                     get32(in + 60), check(in));
  r->type = in[0];
  r->codec = in[1];
  r->payload = get32(in + 4);
  r->offset = get64(in + 8);
  r->length = get64(in + 16);
  memcpy(r->hash, in + 24, SHA256_BYTES);
  if (r->type != STREAM_DATA && r->type != STREAM_ZERO && r->type != STREAM_END)
    return error_set(EBADMSG, "unknown record type 0x%02x", r->type);
  if (r->type == STREAM_DATA ? r->codec > STREAM_ZSTD : r->codec != 0 || r->payload != 0)
    return error_set(EBADMSG, "record type '%c' with codec %u and %u bytes of payload", r->type,
                     r->codec, r->payload);
  return 0;
}

/* ---- the writer ---- */

struct blob {
  bool zero;
  uint8_t codec;
  uint8_t hash[SHA256_BYTES];
  uint8_t *payload;
  size_t len;
};

struct writer {
  int fd;
  char *name;
  uint64_t size;
  int level;
  struct zstd_pool pool; /* one compression context per CPU at most */
  /* emit's state (one emitter at a time) */
  struct blockdigest digest;
  uint64_t zero_off, zero_len; /* a run of zero chunks not written yet */
  struct stream_stats st;
};

static int
encode(void *opaque, uint64_t index, uint64_t off, const void *data, size_t len, void **out)
{
  struct writer *w = opaque;
  (void)index;
  struct blob *b = calloc(1, sizeof *b);
  if (!b)
    return error_set(ENOMEM, "%s: out of memory", w->name);
  if (!data || buffer_is_zero(data, len)) {
    b->zero = true;
    *out = b;
    return 0;
  }
  sha256(data, len, b->hash);
  size_t cap = ZSTD_compressBound(len);
  ZSTD_CCtx *c = zstd_pool_take(&w->pool);
  if (!c || !(b->payload = malloc(cap))) {
    if (c)
      zstd_pool_give(&w->pool, c);
    free(b);
    return error_set(ENOMEM, "%s: out of memory for compression", w->name);
  }
  size_t n = ZSTD_compress2(c, b->payload, cap, data, len);
  zstd_pool_give(&w->pool, c);
  if (ZSTD_isError(n)) {
    free(b->payload);
    free(b);
    return error_set(EIO, "%s: compressing %zu bytes at offset %" PRIu64 ": %s", w->name, len, off,
                     ZSTD_getErrorName(n));
  }
  if (n >= len) { /* incompressible: sent as it is, the receiver has nothing to decompress */
    memcpy(b->payload, data, len);
    b->codec = STREAM_RAW;
    b->len = len;
  } else {
    b->codec = STREAM_ZSTD;
    b->len = n;
  }
  uint8_t *small = realloc(b->payload, b->len);
  if (small)
    b->payload = small;
  *out = b;
  return 0;
}

static int
write_all(struct writer *w, const void *buf, size_t len)
{
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = write(w->fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return error_set_errno(errno, "%s: write after %" PRIu64 " bytes", w->name, w->st.bytes_out);
    p += n;
    len -= (size_t)n;
    w->st.bytes_out += (uint64_t)n;
  }
  return 0;
}

static int
write_record(struct writer *w, const struct stream_record *r, const void *payload)
{
  uint8_t head[STREAM_RECORD_SIZE];
  stream_record_encode(r, head);
  int e = write_all(w, head, sizeof head);
  if (e == 0 && r->payload)
    e = write_all(w, payload, r->payload);
  if (e == 0 && r->type != STREAM_END)
    w->st.records++;
  return e;
}

static int
flush_zeroes(struct writer *w)
{
  if (!w->zero_len)
    return 0;
  struct stream_record r = { .type = STREAM_ZERO, .offset = w->zero_off, .length = w->zero_len };
  w->zero_len = 0;
  return write_record(w, &r, NULL);
}

static int
emit(void *opaque, uint64_t index, uint64_t off, size_t len, void *blob)
{
  struct writer *w = opaque;
  struct blob *b = blob;
  (void)index;
  int r = 0;
  if (b->zero) {
    if (w->zero_len && w->zero_off + w->zero_len == off) {
      w->zero_len += len;
    } else {
      r = flush_zeroes(w);
      w->zero_off = off;
      w->zero_len = len;
    }
    blockdigest_zero(&w->digest, len);
    w->st.zero_bytes += len;
  } else {
    struct stream_record rec = { .type = STREAM_DATA,
                                 .codec = b->codec,
                                 .payload = (uint32_t)b->len,
                                 .offset = off,
                                 .length = len };
    memcpy(rec.hash, b->hash, SHA256_BYTES);
    if ((r = flush_zeroes(w)) == 0)
      r = write_record(w, &rec, b->payload);
    blockdigest_block(&w->digest, b->hash, (uint32_t)len);
    w->st.data_bytes += len;
  }
  free(b->payload);
  free(b);
  return r;
}

static void
discard(void *opaque, void *blob)
{
  (void)opaque;
  struct blob *b = blob;
  free(b->payload);
  free(b);
}

static void
writer_close(void *opaque)
{
  struct writer *w = opaque;
  zstd_pool_destroy(&w->pool);
  if (w->digest.c.md)
    blockdigest_discard(&w->digest);
  free(w->name);
  free(w);
}

int
stream_writer_open(int fd, const char *name, uint64_t size, int level, struct volume **out)
{
  struct writer *w = calloc(1, sizeof *w);
  if (!w || !(w->name = strdup(name))) {
    free(w);
    return error_set(ENOMEM, "%s: out of memory", name);
  }
  w->fd = fd;
  w->size = size;
  w->level = level;
  zstd_pool_init(&w->pool, level, 0);
  int r = blockdigest_begin(&w->digest, size);
  if (r < 0) {
    writer_close(w);
    return r;
  }
  struct stream_header h = {
    .version = STREAM_VERSION, .size = size, .chunk_size = STREAM_CHUNK, .hash = STREAM_HASH_SHA256
  };
  uint8_t head[STREAM_HEADER_SIZE];
  stream_header_encode(&h, head);
  if ((r = write_all(w, head, sizeof head)) < 0) {
    writer_close(w);
    return r;
  }
  struct chunksink_codec codec
      = { .encode = encode, .emit = emit, .discard = discard, .close = writer_close, .opaque = w };
  if ((r = chunksink_new(name, size, STREAM_CHUNK, &codec, out)) < 0)
    writer_close(w);
  return r;
}

int
stream_writer_finish(struct volume *v, struct stream_stats *st)
{
  struct writer *w = chunksink_opaque(v);
  int r = chunksink_finish(v);
  if (r == 0)
    r = flush_zeroes(w);
  if (r < 0)
    return r;
  struct stream_record end = { .type = STREAM_END, .offset = w->size, .length = w->st.records };
  r = blockdigest_end_bytes(&w->digest, end.hash);
  w->digest.c.md = NULL;
  if (r < 0)
    return r;
  if ((r = write_record(w, &end, NULL)) < 0)
    return r;
  verify_format_digest(end.hash, w->st.digest);
  if (st)
    *st = w->st;
  return 0;
}
