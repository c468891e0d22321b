/* ferry: the seekable zstd writer, see zst-write.h.  A chunk sink (chunksink.h) whose
 * chunks are frames: encode compresses one frame (content size and checksum included) with a
 * pooled compression context, emit appends it to the file and notes its seek table entry.
 * Cleanup style: goto labels.
 */
#include "backends/zst-write.h"
#include "backends/chunksink.h"
#include "backends/zstd-pool.h"
#include "backends/zst-format.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

/* An encoded frame: its bytes (shared ones belong to the writer) and seek table entry. */
struct frame_blob {
  const uint8_t *data;
  size_t len;
  uint32_t checksum;
  bool shared, zero;
  uint8_t own[]; /* the compressed bytes when not shared */
};

struct writer {
  char *path; /* "-": stdout */
  char *tmp;  /* the hidden file being written, renamed to path at the end */
  int fd;
  int level;
  uint64_t size;
  struct zst_frame *frames;
  uint64_t nframes, zero_frames, written;
  uint8_t *zero; /* the all-zero frame of ZST_FRAME_SIZE bytes */
  size_t zero_len;
  struct zstd_pool pool; /* one compression context per CPU at most */
  bool finished;
};

static int
encode(void *opaque, uint64_t index, uint64_t off, const void *data, size_t len, void **out)
{
  struct writer *w = opaque;
  (void)index;
  struct frame_blob *b;
  /* All zeroes (a hole, or zero bytes read with --no-sparse): the RLE form readers recognise. */
  if (!data || buffer_is_zero(data, len)) {
    if (len == ZST_FRAME_SIZE) {
      if (!(b = calloc(1, sizeof *b)))
        return error_set(ENOMEM, "%s: out of memory", w->path);
      *b = (struct frame_blob){ .data = w->zero, .len = w->zero_len, .shared = true, .zero = true };
    } else {
      uint8_t *f;
      size_t flen;
      if (zst_zero_frame((uint32_t)len, &f, &flen) < 0)
        return -ENOMEM;
      if (!(b = malloc(sizeof *b + flen))) {
        free(f);
        return error_set(ENOMEM, "%s: out of memory", w->path);
      }
      /* Fields one by one: assigning the struct would write its tail padding over own[]. */
      b->data = b->own;
      b->len = flen;
      b->shared = false;
      b->zero = true;
      memcpy(b->own, f, flen);
      free(f);
    }
    b->checksum = zst_le32(b->data + b->len - 4);
    *out = b;
    return 0;
  }
  size_t cap = ZSTD_compressBound(len);
  ZSTD_CCtx *c = zstd_pool_take(&w->pool);
  if (!c || !(b = malloc(sizeof *b + cap))) {
    if (c)
      zstd_pool_give(&w->pool, c);
    return error_set(ENOMEM, "%s: out of memory for compression", w->path);
  }
  size_t n = ZSTD_compress2(c, b->own, cap, data, len);
  zstd_pool_give(&w->pool, c);
  if (ZSTD_isError(n)) {
    free(b);
    return error_set(EIO, "%s: compressing %zu bytes at offset %" PRIu64 ": %s", w->path, len, off,
                     ZSTD_getErrorName(n));
  }
  struct frame_blob *small = realloc(b, sizeof *b + n);
  if (small)
    b = small;
  b->data = b->own;
  b->len = n;
  b->checksum = zst_le32(b->own + n - 4);
  b->shared = b->zero = false;
  *out = b;
  return 0;
}

static int
write_all(struct writer *w, const uint8_t *p, size_t len)
{
  while (len > 0) {
    ssize_t n = write(w->fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return error_set_errno(errno, "%s: write at offset %" PRIu64, w->path, w->written);
    p += n;
    len -= (size_t)n;
    w->written += (uint64_t)n;
  }
  return 0;
}

static int
emit(void *opaque, uint64_t index, uint64_t off, size_t len, void *blob)
{
  struct writer *w = opaque;
  struct frame_blob *b = blob;
  (void)off;
  uint64_t coff = w->written;
  int r = write_all(w, b->data, b->len);
  if (r == 0) {
    w->frames[index] = (struct zst_frame){
      .coff = coff, .csize = (uint32_t)b->len, .dsize = (uint32_t)len, .checksum = b->checksum
    };
    w->zero_frames += b->zero;
  }
  free(b);
  return r;
}

static void
discard(void *opaque, void *blob)
{
  (void)opaque;
  free(blob);
}

static void
writer_close(void *opaque)
{
  struct writer *w = opaque;
  if (w->fd >= 0 && w->fd != STDOUT_FILENO)
    close(w->fd);
  if (w->tmp && !w->finished)
    unlink(w->tmp);
  zstd_pool_destroy(&w->pool);
  free(w->frames);
  free(w->zero);
  free(w->tmp);
  free(w->path);
  free(w);
}

/* A hidden temporary file beside path: "DIR/.NAME.XXXXXX". */
static int
create_temporary(struct writer *w)
{
  char *copy1 = strdup(w->path), *copy2 = strdup(w->path);
  int r = 0;
  if (!copy1 || !copy2 || asprintf(&w->tmp, "%s/.%s.XXXXXX", dirname(copy1), basename(copy2)) < 0) {
    w->tmp = NULL;
    r = error_set(ENOMEM, "%s: out of memory", w->path);
    goto out;
  }
  w->fd = mkostemp(w->tmp, O_CLOEXEC);
  if (w->fd < 0) {
    r = error_set_errno(errno, "%s: cannot create a file in its directory", w->path);
    free(w->tmp);
    w->tmp = NULL;
    goto out;
  }
  fchmod(w->fd, 0644);
out:
  free(copy1);
  free(copy2);
  return r;
}

int
zst_writer_open(const char *path, uint64_t size, int level, struct volume **out)
{
  struct writer *w = calloc(1, sizeof *w);
  if (!w)
    return error_set(ENOMEM, "%s: out of memory", path);
  w->fd = -1;
  w->level = level;
  w->size = size;
  w->nframes = (size + ZST_FRAME_SIZE - 1) / ZST_FRAME_SIZE;
  zstd_pool_init(&w->pool, level, 1);
  int r;
  if (w->nframes > UINT32_MAX) {
    r = error_set(EFBIG, "%s: %" PRIu64 " bytes need more frames than a seek table holds", path,
                  size);
    goto fail;
  }
  w->path = strdup(path);
  w->frames = calloc(w->nframes ? w->nframes : 1, sizeof *w->frames);
  if (!w->path || !w->frames || zst_zero_frame(ZST_FRAME_SIZE, &w->zero, &w->zero_len) < 0) {
    r = error_set(ENOMEM, "%s: out of memory for %" PRIu64 " frames", path, w->nframes);
    goto fail;
  }
  if (strcmp(path, "-") == 0)
    w->fd = STDOUT_FILENO;
  else if ((r = create_temporary(w)) < 0)
    goto fail;
  struct chunksink_codec codec
      = { .encode = encode, .emit = emit, .discard = discard, .close = writer_close, .opaque = w };
  r = chunksink_new(path, size, ZST_FRAME_SIZE, &codec, out);
  if (r < 0)
    goto fail;
  debug("zst", "%s: writing %" PRIu64 " frames at level %d%s%s", path, w->nframes, level,
        w->tmp ? " into " : "", w->tmp ? w->tmp : "");
  return 0;
fail:
  writer_close(w);
  return r;
}

int
zst_writer_finish(struct volume *v, struct zst_write_stats *stats)
{
  struct writer *w = chunksink_opaque(v);
  int r = chunksink_finish(v);
  if (r < 0)
    return r;
  uint8_t *table;
  size_t len;
  if ((r = zst_build_seek_table(w->frames, w->nframes, true, &table, &len)) < 0)
    return error_prefix("%s", w->path);
  r = write_all(w, table, len);
  free(table);
  if (r < 0)
    return r;
  if (w->tmp) {
    /* The name appears only once the whole file is durable. */
    if (fdatasync(w->fd) < 0)
      return error_set_errno(errno, "%s: flush", w->path);
    if (rename(w->tmp, w->path) < 0)
      return error_set_errno(errno, "%s: cannot rename %s to it", w->path, w->tmp);
    w->finished = true;
    if ((r = fsync_parent_dir(w->path)) < 0)
      return r;
  }
  w->finished = true;
  if (stats)
    *stats = (struct zst_write_stats){ .compressed_bytes = w->written,
                                       .frames = w->nframes,
                                       .zero_frames = w->zero_frames };
  debug("zst", "%s: %" PRIu64 " frames (%" PRIu64 " zero), %" PRIu64 " bytes", w->path, w->nframes,
        w->zero_frames, w->written);
  return 0;
}

int
zst_parse_compress(const char *what, const char *text, int *level)
{
  if (strcmp(text, "zstd") == 0) {
    *level = ZST_DEFAULT_LEVEL;
    return 0;
  }
  if (strncmp(text, "zstd:", 5) == 0) {
    char *end;
    errno = 0;
    long v = strtol(text + 5, &end, 10);
    if (text[5] && !*end && !errno && v >= ZST_MIN_LEVEL && v <= ZST_MAX_LEVEL && v != 0) {
      *level = (int)v;
      return 0;
    }
    return error_set(EINVAL, "%s: '%s': the zstd level must be %d..-1 or 1..%d", what, text,
                     ZST_MIN_LEVEL, ZST_MAX_LEVEL);
  }
  return error_set(EINVAL, "%s: '%s' is not a compression (use zstd or zstd:LEVEL)", what, text);
}
