/* ferry: the zstd seekable format, see zst-format.h.  Pure: no I/O, no libzstd. */
#include "backends/zst-format.h"
#include "common/error.h"
#include "common/hash.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool
zst_name_matches(const char *uri)
{
  if (strncmp(uri, "raw:", 4) == 0)
    return false;
  if (strncmp(uri, "zst:", 4) == 0)
    return true;
  size_t len = strlen(uri);
  if (strstr(uri, "://"))
    len = strcspn(uri, "?#");
  return len >= 4 && strncasecmp(uri + len - 4, ".zst", 4) == 0;
}

int
zst_parse_footer(const char *name, const uint8_t foot[ZST_FOOTER_SIZE], uint32_t *entries,
                 bool *checksums, uint64_t *table_frame_size)
{
  if (zst_le32(foot + 5) != ZST_SEEKABLE_MAGIC)
    return 0;
  uint8_t descriptor = foot[4];
  if (descriptor & ZST_RESERVED_BITS)
    return error_set(EINVAL,
                     "%s: seek table descriptor 0x%02x has reserved bits set (a newer "
                     "format than ferry reads)",
                     name, descriptor);
  *entries = zst_le32(foot);
  *checksums = descriptor & ZST_CHECKSUM_FLAG;
  *table_frame_size = 8 + (uint64_t)*entries * (*checksums ? 12 : 8) + ZST_FOOTER_SIZE;
  return 1;
}

int
zst_parse_seek_table(const char *name, const uint8_t *buf, size_t len, uint64_t table_off,
                     struct zst_seek_table *t)
{
  memset(t, 0, sizeof *t);
  if (len < 8 + ZST_FOOTER_SIZE)
    return error_set(EINVAL, "%s: seek table of %zu bytes is too short", name, len);
  if (zst_le32(buf) != ZST_SKIPPABLE_MAGIC)
    return error_set(EINVAL,
                     "%s: seek table frame at offset %" PRIu64 " starts with 0x%08x, "
                     "not the skippable frame magic 0x%08x",
                     name, table_off, zst_le32(buf), ZST_SKIPPABLE_MAGIC);
  if (zst_le32(buf + 4) != len - 8)
    return error_set(EINVAL,
                     "%s: seek table frame at offset %" PRIu64 " says %u bytes, its "
                     "footer %zu",
                     name, table_off, zst_le32(buf + 4), len - 8);
  uint32_t entries;
  bool checksums;
  uint64_t frame_size;
  int r = zst_parse_footer(name, buf + len - ZST_FOOTER_SIZE, &entries, &checksums, &frame_size);
  if (r <= 0)
    return r < 0 ? r : error_set(EINVAL, "%s: no seek table footer", name);
  if (frame_size != len)
    return error_set(EINVAL, "%s: seek table of %u entries cannot be %zu bytes", name, entries,
                     len);
  t->f = calloc(entries ? entries : 1, sizeof *t->f);
  if (!t->f)
    return error_set(ENOMEM, "%s: out of memory for a seek table of %u frames", name, entries);
  t->checksums = checksums;
  t->entries = entries;
  t->table_off = table_off;
  size_t esize = checksums ? 12 : 8;
  uint64_t coff = 0, doff = 0;
  for (uint32_t i = 0; i < entries; i++) {
    const uint8_t *e = buf + 8 + (size_t)i * esize;
    uint32_t csize = zst_le32(e), dsize = zst_le32(e + 4);
    if (csize > table_off - coff) {
      r = error_set(EINVAL,
                    "%s: seek table entry %u: frame at offset %" PRIu64 " of %u bytes "
                    "ends past the end of the frames (the seek table starts at %" PRIu64 ")",
                    name, i, coff, csize, table_off);
      goto fail;
    }
    if (dsize > ZST_MAX_FRAME) {
      r = error_set(EINVAL,
                    "%s: seek table entry %u: frame at offset %" PRIu64 " holds %u "
                    "bytes, more than the %u ferry reads",
                    name, i, coff, dsize, ZST_MAX_FRAME);
      goto fail;
    }
    if (dsize > 0) {
      struct zst_frame *f = &t->f[t->n++];
      *f = (struct zst_frame){ .coff = coff, .doff = doff, .csize = csize, .dsize = dsize };
      if (checksums)
        f->checksum = zst_le32(e + 8);
      if (dsize > t->max_dsize)
        t->max_dsize = dsize;
    }
    coff += csize;
    doff += dsize;
  }
  if (coff != table_off) {
    r = error_set(EINVAL,
                  "%s: the seek table's %u frames end at offset %" PRIu64 " but the seek "
                  "table starts at %" PRIu64,
                  name, entries, coff, table_off);
    goto fail;
  }
  t->size = doff;
  return 0;
fail:
  zst_seek_table_free(t);
  return r;
}

void
zst_seek_table_free(struct zst_seek_table *t)
{
  free(t->f);
  t->f = NULL;
  t->n = 0;
}

size_t
zst_seek_table_find(const struct zst_seek_table *t, uint64_t off)
{
  size_t lo = 0, hi = t->n;
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (t->f[mid].doff <= off)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

int
zst_build_seek_table(const struct zst_frame *f, size_t n, bool checksums, uint8_t **out,
                     size_t *len)
{
  size_t esize = checksums ? 12 : 8;
  if (n > UINT32_MAX || n * esize > UINT32_MAX - 8 - ZST_FOOTER_SIZE)
    return error_set(EINVAL, "too many frames (%zu) for a seek table", n);
  size_t size = 8 + n * esize + ZST_FOOTER_SIZE;
  uint8_t *b = malloc(size);
  if (!b)
    return error_set(ENOMEM, "out of memory for a seek table of %zu frames", n);
  zst_put_le32(b, ZST_SKIPPABLE_MAGIC);
  zst_put_le32(b + 4, (uint32_t)(size - 8));
  for (size_t i = 0; i < n; i++) {
    uint8_t *e = b + 8 + i * esize;
    zst_put_le32(e, f[i].csize);
    zst_put_le32(e + 4, f[i].dsize);
    if (checksums)
      zst_put_le32(e + 8, f[i].checksum);
  }
  uint8_t *foot = b + size - ZST_FOOTER_SIZE;
  zst_put_le32(foot, (uint32_t)n);
  foot[4] = checksums ? ZST_CHECKSUM_FLAG : 0;
  zst_put_le32(foot + 5, ZST_SEEKABLE_MAGIC);
  *out = b;
  *len = size;
  return 0;
}

int
zst_parse_frame_header(const uint8_t *p, size_t len, struct zst_frame_header *h)
{
  memset(h, 0, sizeof *h);
  if (len < 4)
    return 0;
  uint32_t magic = zst_le32(p);
  if ((magic & ZST_SKIPPABLE_MASK) == (ZST_SKIPPABLE_MAGIC & ZST_SKIPPABLE_MASK)) {
    if (len < 8)
      return 0;
    h->skippable = true;
    h->header_size = 8;
    h->skip_size = zst_le32(p + 4);
    return 1;
  }
  if (magic != ZST_MAGIC)
    return error_set(EINVAL, "not a zstd frame (starts with 0x%08x, not the magic 0x%08x)", magic,
                     ZST_MAGIC);
  if (len < 5)
    return 0;
  uint8_t fhd = p[4];
  unsigned fcs_flag = fhd >> 6, single = (fhd >> 5) & 1, dict_flag = fhd & 3;
  if (fhd & 0x08)
    return error_set(EINVAL, "zstd frame header descriptor 0x%02x has its reserved bit set", fhd);
  static const unsigned dict_bytes[4] = { 0, 1, 2, 4 };
  unsigned fcs_bytes = fcs_flag == 0 ? (single ? 1 : 0) : fcs_flag == 1 ? 2 : fcs_flag == 2 ? 4 : 8;
  size_t size = 5 + (single ? 0 : 1) + dict_bytes[dict_flag] + fcs_bytes;
  if (len < size)
    return 0;
  const uint8_t *q = p + 5 + (single ? 0 : 1);
  for (unsigned i = 0; i < dict_bytes[dict_flag]; i++)
    h->dict_id |= (uint32_t)q[i] << (8 * i);
  q += dict_bytes[dict_flag];
  if (fcs_bytes) {
    uint64_t v = 0;
    for (unsigned i = 0; i < fcs_bytes; i++)
      v |= (uint64_t)q[i] << (8 * i);
    h->has_size = true;
    h->content_size = fcs_bytes == 2 ? v + 256 : v;
  }
  h->checksum = (fhd >> 2) & 1;
  h->header_size = (uint32_t)size;
  return 1;
}

/* Bytes of the FCS field for a frame of len bytes with Single_Segment set, and its flag. */
static unsigned
fcs_field(uint32_t len, unsigned *flag)
{
  if (len < 256) {
    *flag = 0;
    return 1;
  }
  if (len < 65536 + 256) {
    *flag = 1;
    return 2;
  }
  *flag = 2;
  return 4;
}

size_t
zst_zero_frame_max(uint32_t dsize)
{
  return ZST_FRAME_HEADER_MAX + 4 * ((size_t)dsize / ZST_BLOCK_MAX + 1) + 4;
}

int
zst_zero_frame(uint32_t len, uint8_t **out, size_t *outlen)
{
  unsigned flag;
  unsigned fcs = fcs_field(len, &flag);
  size_t blocks = len ? (len + ZST_BLOCK_MAX - 1) / ZST_BLOCK_MAX : 1;
  size_t size = 5 + fcs + 4 * blocks + 4;
  uint8_t *b = malloc(size), *zeroes = calloc(1, len ? len : 1);
  if (!b || !zeroes) {
    free(b);
    free(zeroes);
    return error_set(ENOMEM, "out of memory");
  }
  zst_put_le32(b, ZST_MAGIC);
  b[4] = (uint8_t)(flag << 6 | 0x20 /* single segment */ | 0x04 /* checksum */);
  uint32_t v = flag == 1 ? len - 256 : len;
  for (unsigned i = 0; i < fcs; i++)
    b[5 + i] = (uint8_t)(v >> (8 * i));
  uint8_t *p = b + 5 + fcs;
  uint32_t left = len;
  for (size_t i = 0; i < blocks; i++) {
    uint32_t n = left < ZST_BLOCK_MAX ? left : ZST_BLOCK_MAX;
    uint32_t hdr = n << 3 | ZST_BLOCK_RLE << 1 | (i + 1 == blocks);
    p[0] = (uint8_t)hdr;
    p[1] = (uint8_t)(hdr >> 8);
    p[2] = (uint8_t)(hdr >> 16);
    p[3] = 0x00; /* the repeated byte */
    p += 4;
    left -= n;
  }
  zst_put_le32(p, (uint32_t)xxh64(zeroes, len, 0));
  free(zeroes);
  *out = b;
  *outlen = size;
  return 0;
}

int
zst_frame_is_zero(const uint8_t *frame, size_t len, uint32_t dsize, uint32_t *checksum,
                  bool *has_checksum)
{
  struct zst_frame_header h;
  if (zst_parse_frame_header(frame, len, &h) != 1 || h.skippable
      || (h.has_size && h.content_size != dsize))
    return 0;
  size_t pos = h.header_size;
  uint64_t total = 0;
  for (;;) {
    if (len - pos < 3)
      return 0;
    bool last;
    unsigned type;
    uint32_t size, content;
    zst_block_header(frame + pos, &last, &type, &size, &content);
    pos += 3;
    if (size > ZST_BLOCK_MAX || len - pos < content)
      return 0;
    if (type == ZST_BLOCK_RLE) {
      if (frame[pos] != 0)
        return 0;
    } else if (type == ZST_BLOCK_RAW) {
      for (uint32_t i = 0; i < size; i++)
        if (frame[pos + i])
          return 0;
    } else {
      return 0; /* compressed: only decompressing tells */
    }
    pos += content;
    total += size;
    if (last)
      break;
  }
  if (total != dsize)
    return 0;
  *has_checksum = h.checksum;
  if (h.checksum) {
    if (len - pos != 4)
      return 0;
    *checksum = zst_le32(frame + pos);
  } else if (pos != len) {
    return 0;
  }
  return 1;
}
