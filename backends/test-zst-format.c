/* Unit tests for backends/zst-format.c: XXH64 against libzstd's frame checksums, ferry's
 * zero frames decompressed by libzstd, seek table round trip and every refusal. */
#include "backends/zst-format.h"
#include "common/error.h"
#include "common/hash.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

static int failures;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s (%s)\n", __FILE__, __LINE__, #cond,                 \
              error_message());                                                                    \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static uint8_t *
compress(const void *data, size_t len, int checksum, size_t *out_len)
{
  size_t cap = ZSTD_compressBound(len);
  uint8_t *out = malloc(cap);
  ZSTD_CCtx *c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, checksum);
  *out_len = ZSTD_compress2(c, out, cap, data, len);
  ZSTD_freeCCtx(c);
  return out;
}

/* The frame content checksum libzstd writes is the low 32 bits of XXH64, seed 0. */
static void
test_xxh64(void)
{
  static const size_t lengths[] = { 0, 1, 3, 4, 7, 8, 9, 31, 32, 33, 63, 64, 100, 4096, 1 << 20 };
  uint8_t *buf = malloc(1 << 20);
  uint32_t seed = 12345;
  for (size_t i = 0; i < (1u << 20); i++) {
    seed = seed * 1103515245 + 12345;
    buf[i] = (uint8_t)(seed >> 16);
  }
  for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
    size_t n;
    uint8_t *f = compress(buf, lengths[i], 1, &n);
    CHECK(!ZSTD_isError(n) && zst_le32(f + n - 4) == (uint32_t)xxh64(buf, lengths[i], 0));
    free(f);
  }
  free(buf);
}

static void
test_zero_frames(void)
{
  static const uint32_t sizes[]
      = { 1, 255, 256, 65791, 65792, 131072, 131073, 1u << 20, (1u << 20) + 5, 3u << 20 };
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    uint32_t n = sizes[i];
    uint8_t *f, *out = malloc(n + 1);
    size_t len;
    CHECK(zst_zero_frame(n, &f, &len) == 0);
    CHECK(len <= zst_zero_frame_max(n));
    memset(out, 0x55, n + 1);
    size_t r = ZSTD_decompress(out, n + 1, f, len);
    CHECK(!ZSTD_isError(r) && r == n);
    CHECK(ZSTD_getFrameContentSize(f, len) == n);
    bool zero = true;
    for (uint32_t k = 0; k < n; k++)
      zero = zero && out[k] == 0;
    CHECK(zero);
    uint32_t sum = 0;
    bool has = false;
    CHECK(zst_frame_is_zero(f, len, n, &sum, &has) == 1 && has);
    CHECK(sum == (uint32_t)xxh64(out, n, 0));
    CHECK(zst_frame_is_zero(f, len, n + 1, &sum, &has) == 0); /* wrong size */
    CHECK(zst_frame_is_zero(f, len - 1, n, &sum, &has) == 0); /* truncated */
    struct zst_frame_header h;
    CHECK(zst_parse_frame_header(f, len, &h) == 1 && h.has_size && h.content_size == n && h.checksum
          && !h.skippable);
    free(f);
    free(out);
  }
  /* libzstd's own frame of zeroes has a compressed block: not recognised (decompress it). */
  uint8_t *z = calloc(1, 1 << 20), *ff = malloc(1 << 20);
  size_t n;
  uint8_t *f = compress(z, 1 << 20, 1, &n);
  uint32_t sum;
  bool has;
  CHECK(zst_frame_is_zero(f, n, 1 << 20, &sum, &has) == 0);
  free(f);
  /* An RLE frame of 0xff is not zero. */
  memset(ff, 0xff, 1 << 20);
  uint8_t *zf;
  size_t zlen;
  CHECK(zst_zero_frame(1 << 20, &zf, &zlen) == 0);
  for (size_t k = 5 + 4 + 3; k < zlen - 4; k += 4)
    zf[k] = 0xff;
  CHECK(zst_frame_is_zero(zf, zlen, 1 << 20, &sum, &has) == 0);
  free(zf);
  free(z);
  free(ff);
}

static void
test_frame_headers(void)
{
  struct zst_frame_header h;
  uint8_t skip[8] = { 0x5e, 0x2a, 0x4d, 0x18, 10, 0, 0, 0 };
  CHECK(zst_parse_frame_header(skip, 8, &h) == 1 && h.skippable && h.skip_size == 10);
  CHECK(zst_parse_frame_header(skip, 7, &h) == 0);
  uint8_t bad[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
  CHECK(zst_parse_frame_header(bad, 8, &h) == -EINVAL);
  CHECK(strstr(error_message(), "not a zstd frame (starts with 0x04030201") != NULL);
  /* A frame without its content size (as `dd | zstd` writes). */
  ZSTD_CCtx *c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0);
  uint8_t in[1000] = { 0 }, out[2000];
  ZSTD_outBuffer ob = { out, sizeof out, 0 };
  ZSTD_inBuffer ib = { in, sizeof in, 0 };
  CHECK(ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_end) == 0);
  CHECK(zst_parse_frame_header(out, ob.pos, &h) == 1 && !h.has_size && !h.skippable);
  CHECK(zst_parse_frame_header(out, 4, &h) == 0);
  ZSTD_freeCCtx(c);
}

static void
test_seek_table(void)
{
  struct zst_frame f[3] = {
    { .csize = 100, .dsize = 1 << 20, .checksum = 0x11111111 },
    { .csize = 0, .dsize = 0 }, /* an empty entry: counted, not kept */
    { .csize = 50, .dsize = 1000, .checksum = 0x22222222 },
  };
  uint8_t *b;
  size_t len;
  CHECK(zst_build_seek_table(f, 3, true, &b, &len) == 0);
  CHECK(len == 8 + 3 * 12 + 9);
  uint32_t entries;
  bool sums;
  uint64_t fsize;
  CHECK(zst_parse_footer("x", b + len - 9, &entries, &sums, &fsize) == 1);
  CHECK(entries == 3 && sums && fsize == len);
  struct zst_seek_table t;
  CHECK(zst_parse_seek_table("x", b, len, 150, &t) == 0);
  CHECK(t.n == 2 && t.size == (1 << 20) + 1000 && t.max_dsize == 1 << 20);
  CHECK(t.f[1].coff == 100 && t.f[1].doff == 1 << 20 && t.f[1].checksum == 0x22222222);
  CHECK(zst_seek_table_find(&t, 0) == 0 && zst_seek_table_find(&t, (1 << 20) - 1) == 0);
  CHECK(zst_seek_table_find(&t, 1 << 20) == 1 && zst_seek_table_find(&t, (1 << 20) + 999) == 1);
  zst_seek_table_free(&t);

  /* The frames described must end exactly where the table starts. */
  CHECK(zst_parse_seek_table("img.zst", b, len, 151, &t) == -EINVAL);
  CHECK(strcmp(error_message(), "img.zst: the seek table's 3 frames end at offset 150 but the "
                                "seek table starts at 151")
        == 0);
  CHECK(zst_parse_seek_table("img.zst", b, len, 120, &t) == -EINVAL);
  CHECK(strcmp(error_message(), "img.zst: seek table entry 2: frame at offset 100 of 50 bytes "
                                "ends past the end of the frames (the seek table starts at 120)")
        == 0);
  b[len - 5] = 0x84; /* reserved bit */
  CHECK(zst_parse_footer("img.zst", b + len - 9, &entries, &sums, &fsize) == -EINVAL);
  CHECK(strstr(error_message(), "reserved bits set") != NULL);
  b[len - 5] = ZST_CHECKSUM_FLAG;
  b[len - 1] ^= 1; /* no seekable magic: not seekable */
  CHECK(zst_parse_footer("img.zst", b + len - 9, &entries, &sums, &fsize) == 0);
  free(b);

  struct zst_frame big = { .csize = 10, .dsize = ZST_MAX_FRAME + 1 };
  CHECK(zst_build_seek_table(&big, 1, false, &b, &len) == 0 && len == 8 + 8 + 9);
  CHECK(zst_parse_seek_table("img.zst", b, len, 10, &t) == -EINVAL);
  CHECK(strstr(error_message(), "holds 67108865 bytes, more than the 67108864 ferry reads"));
  zst_put_le32(b, 0x184D2A50); /* another skippable magic */
  CHECK(zst_parse_seek_table("img.zst", b, len, 10, &t) == -EINVAL);
  CHECK(strstr(error_message(), "not the skippable frame magic") != NULL);
  free(b);
}

int
main(void)
{
  test_xxh64();
  test_zero_frames();
  test_frame_headers();
  test_seek_table();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  return 0;
}
