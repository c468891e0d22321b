/* ferry: plain (non-seekable) zstd streams, read in order, see zst-internal.h.
 *
 * The walk at open reads the compressed file once through a read-ahead buffer (big requests,
 * so an http source is not asked for three bytes per block) and follows the frame and block
 * headers; reading then runs one ZSTD_DStream over the same kind of buffer.  Cleanup style:
 * goto labels.
 */
#include "backends/zst-format.h"
#include "backends/zst-internal.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define READ_AHEAD (1u << 20)

/* A window [start, end) of the compressed file. */
struct window {
  struct volume *lower;
  uint8_t *buf;
  uint64_t start, end;
  uint64_t end_of_file; /* where the zstd data ends (before any padding) */
};

/* Make [pos, pos+n) available; returns how many of those n bytes exist before the end of the
 * file (fewer than n: the file ends), or a negative errno. */
static int64_t
window_need(struct window *w, uint64_t pos, size_t n, const uint8_t **p)
{
  uint64_t size = w->end_of_file;
  if (pos >= size)
    return 0;
  if (pos < w->start || pos >= w->end || (pos + n > w->end && w->end < size)) {
    size_t len = (size_t)min_u64(READ_AHEAD, size - pos);
    int r = zst_lower_read(w->lower, w->buf, len, pos);
    if (r < 0)
      return r;
    w->start = pos;
    w->end = pos + len;
  }
  *p = w->buf + (pos - w->start);
  return (int64_t)min_u64(n, w->end - pos);
}

/* Whatever is available at pos (refilling only when pos is outside the window): the number
 * of bytes at *p, 0 at the end of the file, or a negative errno. */
static int64_t
window_some(struct window *w, uint64_t pos, const uint8_t **p)
{
  if (pos >= w->start && pos < w->end) {
    *p = w->buf + (pos - w->start);
    return (int64_t)(w->end - pos);
  }
  return window_need(w, pos, READ_AHEAD, p);
}

struct zst_stream {
  struct volume *lower;
  char *name;
  struct window in;
  ZSTD_DStream *ds;
  uint64_t in_pos;  /* next compressed byte to give the decoder */
  uint64_t out_pos; /* image offset of the next byte it produces */
  uint64_t size;
  uint64_t frame;       /* frame being decoded, for messages */
  uint64_t frame_start; /* its file offset */
};

static int
truncated(struct zst_stream *s, uint64_t frame, uint64_t start, const char *where)
{
  return error_set(EBADMSG,
                   "%s: truncated: frame %" PRIu64 " at file offset %" PRIu64
                   " %s (the file ends at %" PRIu64 ")",
                   s->name, frame, start, where, s->lower->size);
}

/* Decompress the frame [start, end) only to count its bytes. */
static int
count_frame(struct zst_stream *s, uint64_t frame, uint64_t start, uint64_t end, uint64_t *bytes)
{
  uint8_t *scratch = malloc(ZSTD_DStreamOutSize());
  if (!scratch)
    return error_set(ENOMEM, "%s: out of memory", s->name);
  ZSTD_DCtx_reset(s->ds, ZSTD_reset_session_only);
  uint64_t pos = start, total = 0;
  int r = 0;
  size_t ret = 1;
  while (pos < end) {
    const uint8_t *p;
    int64_t n = window_some(&s->in, pos, &p);
    if (n > 0)
      n = (int64_t)min_u64((uint64_t)n, end - pos);
    if (n <= 0) {
      r = n < 0 ? (int)n : truncated(s, frame, start, "ends inside its data");
      goto out;
    }
    ZSTD_inBuffer ib = { p, (size_t)n, 0 };
    while (ib.pos < ib.size) {
      ZSTD_outBuffer ob = { scratch, ZSTD_DStreamOutSize(), 0 };
      ret = ZSTD_decompressStream(s->ds, &ob, &ib);
      if (ZSTD_isError(ret)) {
        r = error_set(EBADMSG,
                      "%s: frame %" PRIu64 " at file offset %" PRIu64 ": corrupt (zstd: %s)",
                      s->name, frame, start, ZSTD_getErrorName(ret));
        goto out;
      }
      total += ob.pos;
    }
    pos += (uint64_t)n;
  }
  if (ret != 0)
    r = error_set(EBADMSG,
                  "%s: frame %" PRIu64 " at file offset %" PRIu64 ": corrupt (its blocks end "
                  "before its data does)",
                  s->name, frame, start);
  *bytes = total;
out:
  free(scratch);
  ZSTD_DCtx_reset(s->ds, ZSTD_reset_session_only);
  return r;
}

/* True when [pos, end of the volume below) holds only zero bytes. */
static bool
zero_tail(struct zst_stream *s, uint64_t pos)
{
  size_t n = (size_t)(s->lower->size - pos);
  uint8_t *buf = malloc(n ? n : 1);
  bool zero = buf && zst_lower_read(s->lower, buf, n, pos) == 0 && buffer_is_zero(buf, n);
  free(buf);
  return zero;
}

/* Follow every frame's header and block headers: the image size, or why the file is bad. */
static int
walk(struct zst_stream *s)
{
  uint64_t size = s->lower->size, pos = 0, frame = 0, image = 0;
  while (pos < size) {
    const uint8_t *p;
    int64_t n = window_need(&s->in, pos, ZST_FRAME_HEADER_MAX, &p);
    if (n < 0)
      return (int)n;
    struct zst_frame_header h;
    int r = zst_parse_frame_header(p, (size_t)n, &h);
    if (r < 0 && frame > 0 && size - pos < ZST_PADDING_MAX && zero_tail(s, pos)) {
      size = pos; /* the volume below rounds its size up: zero padding, not a frame */
      break;
    }
    if (r < 0)
      return error_prefix("%s: frame %" PRIu64 " at file offset %" PRIu64, s->name, frame, pos);
    if (r == 0)
      return truncated(s, frame, pos, "ends inside its header");
    uint64_t end = pos + h.header_size;
    if (h.skippable) {
      end += h.skip_size;
      if (end > size)
        return truncated(s, frame, pos, "(a skippable frame) runs past the end");
      pos = end;
      frame++;
      continue;
    }
    for (;;) {
      if ((n = window_need(&s->in, end, 3, &p)) < 0)
        return (int)n;
      if (n < 3)
        return truncated(s, frame, pos, "ends inside a block header");
      bool last;
      unsigned type;
      uint32_t bsize, content;
      zst_block_header(p, &last, &type, &bsize, &content);
      if (type == ZST_BLOCK_RESERVED || bsize > ZST_BLOCK_MAX)
        return error_set(EBADMSG,
                         "%s: frame %" PRIu64 " at file offset %" PRIu64 ": corrupt block "
                         "header at file offset %" PRIu64,
                         s->name, frame, pos, end);
      end += 3 + (uint64_t)content;
      if (end > size)
        return truncated(s, frame, pos, "ends inside a block");
      if (last)
        break;
    }
    if (h.checksum && (end += 4) > size)
      return truncated(s, frame, pos, "ends inside its checksum");
    uint64_t bytes = h.content_size;
    if (!h.has_size && (r = count_frame(s, frame, pos, end, &bytes)) < 0)
      return r;
    image += bytes;
    pos = end;
    frame++;
  }
  s->size = image;
  s->in.end_of_file = size;
  debug("zst", "%s: plain zstd stream of %" PRIu64 " frames, %" PRIu64 " bytes", s->name, frame,
        image);
  return 0;
}

int
zst_stream_open(struct volume *lower, const char *name, uint64_t *size, struct zst_stream **out)
{
  struct zst_stream *s = calloc(1, sizeof *s);
  if (!s || !(s->name = strdup(name)) || !(s->in.buf = malloc(READ_AHEAD))
      || !(s->ds = ZSTD_createDStream())) {
    zst_stream_free(s);
    return error_set(ENOMEM, "%s: out of memory", name);
  }
  s->lower = lower;
  s->in.lower = lower;
  s->in.end_of_file = lower->size;
  int r = walk(s);
  if (r < 0) {
    zst_stream_free(s);
    return r;
  }
  ZSTD_DCtx_reset(s->ds, ZSTD_reset_session_only);
  s->in.start = s->in.end = 0;
  *size = s->size;
  *out = s;
  return 0;
}

int
zst_stream_read(struct zst_stream *s, void *buf, size_t len, uint64_t off)
{
  if (off != s->out_pos)
    return error_set(ESPIPE,
                     "%s: read at offset %" PRIu64 " out of order (at %" PRIu64 "): a "
                     "zstd file without a seek table is only read from start to end",
                     s->name, off, s->out_pos);
  ZSTD_outBuffer ob = { buf, len, 0 };
  while (ob.pos < ob.size) {
    const uint8_t *p = NULL;
    int64_t n = window_some(&s->in, s->in_pos, &p);
    if (n < 0)
      return (int)n;
    /* With no input left the decoder may still hold output: ask once more before calling
     * the file truncated. */
    ZSTD_inBuffer ib = { p, (size_t)n, 0 };
    size_t produced = ob.pos;
    size_t ret = ZSTD_decompressStream(s->ds, &ob, &ib);
    if (ZSTD_isError(ret))
      return error_set(EBADMSG,
                       "%s: frame %" PRIu64 " at file offset %" PRIu64 " (image offset %" PRIu64
                       "): corrupt (zstd: %s)",
                       s->name, s->frame, s->frame_start, off + ob.pos, ZSTD_getErrorName(ret));
    s->in_pos += ib.pos;
    if (ret == 0) { /* a frame ended: the next starts here */
      s->frame++;
      s->frame_start = s->in_pos;
    }
    if (n == 0 && ob.pos == produced)
      return truncated(s, s->frame, s->frame_start, "ends before its data does");
  }
  s->out_pos += len;
  return 0;
}

void
zst_stream_free(struct zst_stream *s)
{
  if (!s)
    return;
  ZSTD_freeDStream(s->ds);
  free(s->in.buf);
  free(s->name);
  free(s);
}
