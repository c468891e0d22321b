/* ferry: the zst layer — a read-only volume over a zstd image on any other volume (file,
 * nbd, http), see docs/volumes.md.
 *
 * URIs: a name ending in ".zst" (the path, or for URIs the part before ?query), or
 * "zst:URI" for any other name.  The volume below is opened with "raw:URI".
 *
 * Seekable images (zst-format.h) are read at random: a read finds its frames in the seek
 * table, reads exactly their compressed bytes from below and decompresses them; a read of a
 * whole frame decompresses straight into the caller's buffer, a part of one goes through a
 * small cache of decompressed frames shared by all threads (a thread that needs a frame
 * another is decompressing waits for it).  Every frame is checked before a byte of it is
 * returned: its header, its size against the seek table, libzstd's content checksum and the
 * seek table's checksum; any mismatch fails the read with a message naming the frame and its
 * offsets.  Extents: frames in ferry's all-zero form are reported as holes (their few bytes
 * are read, never decompressed).
 *
 * A plain .zst (no seek table) is refused, with how to make it seekable, unless the caller
 * asked for volume_options.sequential: it is then read in order (zst-stream.c).
 * Cleanup style: goto labels.
 */
#include "backends/zst-format.h"
#include "backends/zst-internal.h"
#include "common/error.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#define CACHE_SLOTS 8
/* Extents: small frames (possibly zero) are fetched together, at most this much at once. */
#define CLASSIFY_READ (1u << 20)

enum { KIND_UNKNOWN = 0, KIND_DATA = 1, KIND_ZERO = 2 };

/* A decompression context with its buffer for compressed bytes; pooled. */
struct decoder {
  ZSTD_DCtx *dctx;
  uint8_t *cbuf;
  size_t cap;
  struct decoder *next;
};

struct slot {
  int64_t frame; /* -1: empty */
  uint8_t *buf;
  unsigned refs;
  bool ready;
  uint64_t used;
};

struct zst_volume {
  struct volume v;
  struct volume *lower;
  struct zst_seek_table t;
  _Atomic unsigned char *kind; /* per frame */
  pthread_mutex_t lock;
  pthread_cond_t loaded;
  struct slot slots[CACHE_SLOTS];
  uint64_t tick;
  struct decoder *decoders;
  /* XXH64 of dsize zero bytes, for the common frame size and the last one seen */
  uint32_t zero_size[2], zero_sum[2];
  struct zst_stream *stream; /* plain stream mode (VOLUME_SEQUENTIAL) */
};

static bool
zst_matches(const char *uri)
{
  return zst_name_matches(uri);
}

int
zst_lower_read(struct volume *lower, void *buf, size_t len, uint64_t off)
{
  uint32_t a = lower->min_block;
  if (a <= 1 || ((off | len) % a) == 0)
    return volume_pread(lower, buf, len, off);
  uint64_t start = off / a * a, end = min_u64((off + len + a - 1) / a * a, lower->size);
  uint8_t *bounce = malloc(end - start);
  if (!bounce)
    return error_set(ENOMEM, "%s: out of memory", lower->name);
  int r = volume_pread(lower, bounce, end - start, start);
  if (r == 0)
    memcpy(buf, bounce + (off - start), len);
  free(bounce);
  return r;
}

static struct decoder *
take_decoder(struct zst_volume *z, size_t need)
{
  pthread_mutex_lock(&z->lock);
  struct decoder *d = z->decoders;
  if (d)
    z->decoders = d->next;
  pthread_mutex_unlock(&z->lock);
  if (!d) {
    d = calloc(1, sizeof *d);
    if (!d || !(d->dctx = ZSTD_createDCtx())) {
      free(d);
      error_set(ENOMEM, "%s: out of memory for a decompression context", z->v.name);
      return NULL;
    }
  }
  if (d->cap < need) {
    uint8_t *b = realloc(d->cbuf, need);
    if (!b) {
      error_set(ENOMEM, "%s: out of memory", z->v.name);
      ZSTD_freeDCtx(d->dctx);
      free(d->cbuf);
      free(d);
      return NULL;
    }
    d->cbuf = b;
    d->cap = need;
  }
  return d;
}

static void
give_decoder(struct zst_volume *z, struct decoder *d)
{
  pthread_mutex_lock(&z->lock);
  d->next = z->decoders;
  z->decoders = d;
  pthread_mutex_unlock(&z->lock);
}

/* XXH64 of n zero bytes (cached for two sizes: frames are nearly all of one size). */
static int
zero_checksum(struct zst_volume *z, uint32_t n, uint32_t *sum)
{
  pthread_mutex_lock(&z->lock);
  for (int i = 0; i < 2; i++)
    if (z->zero_size[i] == n) {
      *sum = z->zero_sum[i];
      pthread_mutex_unlock(&z->lock);
      return 0;
    }
  pthread_mutex_unlock(&z->lock);
  uint8_t *zeroes = calloc(1, n);
  if (!zeroes)
    return error_set(ENOMEM, "%s: out of memory", z->v.name);
  *sum = (uint32_t)xxh64(zeroes, n, 0);
  free(zeroes);
  pthread_mutex_lock(&z->lock);
  z->zero_size[1] = n;
  z->zero_sum[1] = *sum;
  pthread_mutex_unlock(&z->lock);
  return 0;
}

#define FRAME_FMT "%s: frame %zu (image offset %" PRIu64 ", file offset %" PRIu64 ")"
#define FRAME_ARGS(z, i, f) (z)->v.name, (i), (f)->doff, (f)->coff

/* Decompress frame i into out (f->dsize bytes), checking everything the format lets us. */
static int
decode_frame(struct zst_volume *z, size_t i, uint8_t *out)
{
  const struct zst_frame *f = &z->t.f[i];
  struct decoder *d = take_decoder(z, f->csize);
  if (!d)
    return -ENOMEM;
  int r = zst_lower_read(z->lower, d->cbuf, f->csize, f->coff);
  if (r < 0) {
    r = error_prefix(FRAME_FMT, FRAME_ARGS(z, i, f));
    goto out;
  }
  struct zst_frame_header h;
  r = zst_parse_frame_header(d->cbuf, f->csize, &h);
  if (r < 0) {
    r = error_prefix(FRAME_FMT, FRAME_ARGS(z, i, f));
    goto out;
  }
  if (r == 0 || h.skippable) {
    r = error_set(EBADMSG, FRAME_FMT ": %s", FRAME_ARGS(z, i, f),
                  r == 0 ? "too short for a frame header" : "is a skippable frame, not data");
    goto out;
  }
  if (h.has_size && h.content_size != f->dsize) {
    r = error_set(EBADMSG, FRAME_FMT ": its header says %" PRIu64 " bytes, the seek table %u",
                  FRAME_ARGS(z, i, f), h.content_size, f->dsize);
    goto out;
  }
  size_t csize = ZSTD_findFrameCompressedSize(d->cbuf, f->csize);
  if (ZSTD_isError(csize)) {
    r = error_set(EBADMSG, FRAME_FMT ": corrupt or cut short (zstd: %s)", FRAME_ARGS(z, i, f),
                  ZSTD_getErrorName(csize));
    goto out;
  }
  if (csize != f->csize) {
    r = error_set(EBADMSG, FRAME_FMT ": the frame is %zu bytes, the seek table says %u",
                  FRAME_ARGS(z, i, f), csize, f->csize);
    goto out;
  }
  size_t n = ZSTD_decompressDCtx(d->dctx, out, f->dsize, d->cbuf, f->csize);
  if (ZSTD_isError(n)) {
    ZSTD_ErrorCode code = ZSTD_getErrorCode(n);
    if (code == ZSTD_error_dstSize_tooSmall)
      r = error_set(EBADMSG,
                    FRAME_FMT ": decompresses to more than the %u bytes the seek table "
                              "announces",
                    FRAME_ARGS(z, i, f), f->dsize);
    else if (code == ZSTD_error_checksum_wrong)
      r = error_set(EBADMSG, FRAME_FMT ": checksum mismatch: the frame's data is corrupt",
                    FRAME_ARGS(z, i, f));
    else
      r = error_set(EBADMSG, FRAME_FMT ": corrupt (zstd: %s)", FRAME_ARGS(z, i, f),
                    ZSTD_getErrorName(n));
    goto out;
  }
  if (n != f->dsize) {
    r = error_set(EBADMSG, FRAME_FMT ": decompresses to %zu bytes, the seek table announces %u",
                  FRAME_ARGS(z, i, f), n, f->dsize);
    goto out;
  }
  if (z->t.checksums) {
    /* libzstd has checked the frame's own checksum against the data: compare with it. */
    uint32_t sum = h.checksum ? zst_le32(d->cbuf + f->csize - 4) : (uint32_t)xxh64(out, n, 0);
    if (sum != f->checksum) {
      r = error_set(EBADMSG,
                    FRAME_FMT ": checksum mismatch: the seek table says 0x%08x, the data "
                              "has 0x%08x",
                    FRAME_ARGS(z, i, f), f->checksum, sum);
      goto out;
    }
  }
  r = 0;
out:
  give_decoder(z, d);
  return r;
}

/* Decide whether frames [i, j) are ferry's zero frames, reading the small ones together. */
static int
classify(struct zst_volume *z, size_t i, size_t j)
{
  while (i < j) {
    const struct zst_frame *f = &z->t.f[i];
    if (atomic_load(&z->kind[i]) != KIND_UNKNOWN) {
      i++;
      continue;
    }
    if (f->csize > zst_zero_frame_max(f->dsize)) {
      atomic_store(&z->kind[i], KIND_DATA);
      i++;
      continue;
    }
    /* A run of small unknown frames: contiguous in the file. */
    size_t k = i;
    uint64_t bytes = 0;
    while (k < j && atomic_load(&z->kind[k]) == KIND_UNKNOWN
           && z->t.f[k].csize <= zst_zero_frame_max(z->t.f[k].dsize)
           && bytes + z->t.f[k].csize <= CLASSIFY_READ
           && (k == i || z->t.f[k].coff == f->coff + bytes))
      bytes += z->t.f[k++].csize;
    uint8_t *buf = malloc(bytes ? bytes : 1);
    if (!buf)
      return error_set(ENOMEM, "%s: out of memory", z->v.name);
    int r = zst_lower_read(z->lower, buf, bytes, f->coff);
    if (r < 0) {
      free(buf);
      return error_prefix(FRAME_FMT, FRAME_ARGS(z, i, f));
    }
    for (size_t m = i; m < k; m++) {
      const struct zst_frame *g = &z->t.f[m];
      uint32_t sum = 0, zsum = 0;
      bool has = false;
      unsigned char kind = KIND_DATA;
      if (zst_frame_is_zero(buf + (g->coff - f->coff), g->csize, g->dsize, &sum, &has) == 1) {
        if ((r = zero_checksum(z, g->dsize, &zsum)) < 0) {
          free(buf);
          return r;
        }
        /* A wrong checksum anywhere: leave it to decode_frame to report. */
        if ((!has || sum == zsum) && (!z->t.checksums || g->checksum == zsum))
          kind = KIND_ZERO;
      }
      atomic_store(&z->kind[m], kind);
    }
    free(buf);
    i = k;
  }
  return 0;
}

/* Part of frame i through the cache. */
static int
cached_read(struct zst_volume *z, size_t i, uint8_t *buf, size_t len, uint32_t in)
{
  struct slot *s = NULL;
  pthread_mutex_lock(&z->lock);
  for (;;) {
    s = NULL;
    for (int k = 0; k < CACHE_SLOTS; k++)
      if (z->slots[k].frame == (int64_t)i)
        s = &z->slots[k];
    if (!s || s->ready)
      break;
    wait_hook_run();
    pthread_cond_wait(&z->loaded, &z->lock); /* another thread is decompressing it */
  }
  if (s) {
    s->refs++;
    s->used = ++z->tick;
    pthread_mutex_unlock(&z->lock);
    memcpy(buf, s->buf + in, len);
    pthread_mutex_lock(&z->lock);
    s->refs--;
    pthread_mutex_unlock(&z->lock);
    return 0;
  }
  for (int k = 0; k < CACHE_SLOTS; k++) {
    struct slot *c = &z->slots[k];
    if (c->refs == 0 && (!s || c->used < s->used))
      s = c;
  }
  uint8_t *frame_buf;
  if (s) {
    if (!s->buf && !(s->buf = malloc(z->t.max_dsize))) {
      pthread_mutex_unlock(&z->lock);
      return error_set(ENOMEM, "%s: out of memory for the frame cache", z->v.name);
    }
    s->frame = (int64_t)i;
    s->ready = false;
    s->refs = 1;
    s->used = ++z->tick;
    frame_buf = s->buf;
  }
  pthread_mutex_unlock(&z->lock);
  if (!s && !(frame_buf = malloc(z->t.f[i].dsize))) /* every slot in use: a private buffer */
    return error_set(ENOMEM, "%s: out of memory", z->v.name);
  int r = decode_frame(z, i, frame_buf);
  if (r == 0)
    memcpy(buf, frame_buf + in, len);
  if (!s) {
    free(frame_buf);
    return r;
  }
  pthread_mutex_lock(&z->lock);
  s->refs--;
  if (r == 0)
    s->ready = true;
  else
    s->frame = -1; /* waiters try themselves (and get the error) */
  pthread_cond_broadcast(&z->loaded);
  pthread_mutex_unlock(&z->lock);
  return r;
}

static int
zst_pread(struct volume *v, void *buf, size_t len, uint64_t off)
{
  struct zst_volume *z = (struct zst_volume *)v;
  if (z->stream) {
    pthread_mutex_lock(&z->lock);
    int r = zst_stream_read(z->stream, buf, len, off);
    pthread_mutex_unlock(&z->lock);
    return r;
  }
  uint8_t *p = buf;
  size_t i = zst_seek_table_find(&z->t, off);
  while (len > 0) {
    const struct zst_frame *f = &z->t.f[i];
    uint32_t in = (uint32_t)(off - f->doff);
    size_t n = (size_t)min_u64(len, f->dsize - in);
    int r;
    if (atomic_load(&z->kind[i]) == KIND_ZERO) {
      memset(p, 0, n);
      r = 0;
    } else if (n == f->dsize) {
      r = decode_frame(z, i, p);
    } else {
      r = cached_read(z, i, p, n, in);
    }
    if (r < 0)
      return r;
    p += n;
    off += n;
    len -= n;
    i++;
  }
  return 0;
}

static int
zst_extents(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out)
{
  struct zst_volume *z = (struct zst_volume *)v;
  uint64_t end = off + len;
  size_t first = zst_seek_table_find(&z->t, off), last = zst_seek_table_find(&z->t, end - 1);
  int r = classify(z, first, last + 1);
  if (r < 0)
    return r;
  for (size_t i = first; i <= last; i++) {
    const struct zst_frame *f = &z->t.f[i];
    uint64_t a = f->doff > off ? f->doff : off, b = min_u64(f->doff + f->dsize, end);
    bool zero = atomic_load(&z->kind[i]) == KIND_ZERO;
    if ((r = extent_list_add(out, a, b - a, zero ? EXTENT_HOLE | EXTENT_ZERO : 0)) < 0)
      return r;
  }
  return 0;
}

static void
zst_close(struct volume *v)
{
  struct zst_volume *z = (struct zst_volume *)v;
  zst_stream_free(z->stream);
  for (int k = 0; k < CACHE_SLOTS; k++)
    free(z->slots[k].buf);
  while (z->decoders) {
    struct decoder *d = z->decoders;
    z->decoders = d->next;
    ZSTD_freeDCtx(d->dctx);
    free(d->cbuf);
    free(d);
  }
  free((void *)z->kind);
  zst_seek_table_free(&z->t);
  volume_close(z->lower);
  pthread_cond_destroy(&z->loaded);
  pthread_mutex_destroy(&z->lock);
  free(v->name);
  free(z);
}

/* A lost connection below (nbd, http) is this volume's too: a clone of a remote .zst shows
 * "reconnecting" and its hydrator waits, as for a plain image. */
static int
zst_health(struct volume *v, char *reason, size_t len)
{
  return volume_health(((struct zst_volume *)v)->lower, reason, len);
}

static const struct volume_ops zst_ops = {
  .driver = "zst",
  .pread = zst_pread,
  .extents = zst_extents,
  .close = zst_close,
  .health = zst_health,
};

/* Read and parse the seek table: 1 seekable, 0 no seek table (plain stream), or -errno. */
static int
open_seek_table(struct zst_volume *z)
{
  struct volume *lo = z->lower;
  const char *name = z->v.name;
  uint8_t head[4], foot[ZST_FOOTER_SIZE];
  if (lo->size < 4)
    return error_set(EINVAL, "%s: %" PRIu64 " bytes: too short for a zstd file", name, lo->size);
  int r = zst_lower_read(lo, head, 4, 0);
  if (r < 0)
    return r;
  uint32_t magic = zst_le32(head);
  if (magic != ZST_MAGIC
      && (magic & ZST_SKIPPABLE_MASK) != (ZST_SKIPPABLE_MAGIC & ZST_SKIPPABLE_MASK))
    return error_set(EINVAL,
                     "%s: not a zstd file (starts with 0x%08x; a zstd file starts with "
                     "0x%08x)",
                     name, magic, ZST_MAGIC);
  /* Volumes whose size is rounded up (NBD exports: to 512 bytes) end the file with a few
   * zero bytes after the seek table: look for the footer before them. */
  size_t tail_len = (size_t)min_u64(lo->size, ZST_PADDING_MAX + ZST_FOOTER_SIZE);
  uint8_t *tail = malloc(tail_len);
  if (!tail)
    return error_set(ENOMEM, "%s: out of memory", name);
  if ((r = zst_lower_read(lo, tail, tail_len, lo->size - tail_len)) < 0) {
    free(tail);
    return r;
  }
  size_t e = tail_len;
  while (e > ZST_FOOTER_SIZE && tail[e - 1] == 0 && tail_len - e < ZST_PADDING_MAX)
    e--;
  if (e < ZST_FOOTER_SIZE || zst_le32(tail + e - 4) != ZST_SEEKABLE_MAGIC)
    e = tail_len; /* no footer: the zeroes are the file's own */
  uint64_t end = lo->size - (tail_len - e);
  if (e >= ZST_FOOTER_SIZE)
    memcpy(foot, tail + e - ZST_FOOTER_SIZE, ZST_FOOTER_SIZE);
  free(tail);
  if (end < 8 + ZST_FOOTER_SIZE)
    return 0;
  uint32_t entries;
  bool checksums;
  uint64_t table_size;
  if ((r = zst_parse_footer(name, foot, &entries, &checksums, &table_size)) <= 0)
    return r;
  if (table_size > end)
    return error_set(EINVAL,
                     "%s: the seek table of %u frames (%" PRIu64 " bytes) is larger than "
                     "the file (%" PRIu64 " bytes): truncated or corrupt",
                     name, entries, table_size, end);
  uint8_t *buf = malloc(table_size);
  if (!buf)
    return error_set(ENOMEM, "%s: out of memory for a seek table of %u frames", name, entries);
  uint64_t table_off = end - table_size;
  r = zst_lower_read(lo, buf, table_size, table_off);
  if (r == 0)
    r = zst_parse_seek_table(name, buf, table_size, table_off, &z->t);
  free(buf);
  return r < 0 ? r : 1;
}

static int
zst_open(const char *uri, const struct volume_options *o, struct volume **out)
{
  const char *below = strncmp(uri, "zst:", 4) == 0 ? uri + 4 : uri;
  char *raw = NULL;
  struct zst_volume *z = calloc(1, sizeof *z);
  if (!z || asprintf(&raw, "raw:%s", below) < 0) {
    free(z);
    return error_set(ENOMEM, "%s: out of memory", uri);
  }
  pthread_mutex_init(&z->lock, NULL);
  pthread_cond_init(&z->loaded, NULL);
  for (int k = 0; k < CACHE_SLOTS; k++)
    z->slots[k].frame = -1;
  z->zero_size[0] = z->zero_size[1] = UINT32_MAX;
  struct volume_options lo = *o;
  lo.readonly = true;
  lo.create = false;
  lo.write_behind = false;
  int r = volume_open(raw, &lo, &z->lower);
  free(raw);
  if (r < 0)
    goto fail_early;
  z->v.preferred_block = 4096;
  if ((r = volume_init(&z->v, &zst_ops, uri, 0)) < 0)
    goto fail;
  if ((r = open_seek_table(z)) < 0)
    goto fail;
  if (r == 0) {
    if (!o->sequential) {
      r = error_set(ENOTSUP,
                    "%s: no seek table at its end (a plain, non-seekable .zst, or a "
                    "truncated image): random access needs one; make the image seekable "
                    "with `ferry copy %s IMAGE.zst`",
                    uri, uri);
      goto fail;
    }
    if ((r = zst_stream_open(z->lower, uri, &z->v.size, &z->stream)) < 0)
      goto fail;
    z->v.caps = VOLUME_SEQUENTIAL;
  } else {
    z->v.size = z->t.size;
    z->kind = calloc(z->t.n ? z->t.n : 1, sizeof *z->kind);
    if (!z->kind) {
      r = error_set(ENOMEM, "%s: out of memory", uri);
      goto fail;
    }
    z->v.caps = VOLUME_CAN_EXTENTS | VOLUME_MULTI_CONN;
    if (z->t.n)
      zero_checksum(z, z->t.f[0].dsize, &z->zero_sum[0]);
    z->zero_size[0] = z->t.n ? z->t.f[0].dsize : UINT32_MAX;
    debug("zst", "%s: seekable, %zu frames, %" PRIu64 " bytes%s", uri, z->t.n, z->v.size,
          z->t.checksums ? ", checksums" : "");
  }
  *out = &z->v;
  return 0;

fail:
  if (!z->v.name)
    z->v.name = strdup(uri);
fail_early:
  z->v.ops = &zst_ops;
  zst_close(&z->v);
  return r;
}

const struct volume_driver zst_driver = {
  .name = "zst",
  .matches = zst_matches,
  .stacked = true,
  .open = zst_open,
};
