/* ferry: the zstd seekable format, pure functions (no I/O), unit-tested in test-zst-format.c.
 *
 * A seekable image is a run of independent zstd frames followed by one skippable frame that
 * holds the seek table (facebook/zstd contrib/seekable_format/
 * zstd_seekable_compression_format.md):
 *
 *   frame 0 | frame 1 | ... | frame N-1 | seek table frame
 *   seek table frame = u32 0x184D2A5E | u32 frame size | N entries | footer (9 bytes)
 *   entry            = u32 compressed size | u32 decompressed size | [u32 checksum]
 *   footer           = u32 N | u8 descriptor (bit 7: entries carry checksums; bits 2-6
 *                      reserved, must be 0) | u32 0x8F92EAB1
 *
 * All little-endian.  The checksum is the low 32 bits of XXH64 of the frame's decompressed
 * bytes.  A plain `zstd -d` skips the seek table frame, so it decompresses the image whole.
 * ferry writes frames of ZST_FRAME_SIZE input bytes each, every frame with its content size
 * and content checksum, and all-zero frames as RLE blocks of 0x00 (recognised on reading
 * without decompressing: extents report them as zero).
 */
#ifndef FERRY_ZST_FORMAT_H
#define FERRY_ZST_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZST_FRAME_SIZE (1u << 20) /* input bytes per frame ferry writes */
#define ZST_MAX_FRAME (64u << 20) /* largest decompressed frame ferry reads */
#define ZST_MAGIC 0xFD2FB528u
#define ZST_SKIPPABLE_MAGIC 0x184D2A5Eu
#define ZST_SKIPPABLE_MASK 0xFFFFFFF0u /* skippable frames: 0x184D2A50..5F */
#define ZST_SEEKABLE_MAGIC 0x8F92EAB1u
#define ZST_FOOTER_SIZE 9
#define ZST_CHECKSUM_FLAG 0x80u
#define ZST_RESERVED_BITS 0x7Cu

struct zst_frame {
  uint64_t coff;     /* offset of the frame in the compressed file */
  uint64_t doff;     /* offset of its bytes in the image */
  uint32_t csize;    /* compressed bytes */
  uint32_t dsize;    /* decompressed bytes */
  uint32_t checksum; /* when the table has checksums */
};

/* The frames that hold data (entries of decompressed size 0, e.g. skippable frames, are
 * counted for offsets but not kept). */
struct zst_seek_table {
  struct zst_frame *f;
  size_t n;
  bool checksums;
  uint32_t entries;   /* Number_Of_Frames */
  uint64_t table_off; /* where the seek table frame starts (= end of the last frame) */
  uint64_t size;      /* decompressed size of the image */
  uint32_t max_dsize; /* largest frame */
};

/* True when a volume URI names a zstd image: "zst:URI", or a name ending in ".zst" (for a
 * URI with a scheme, the part before ?query or #fragment); never for "raw:URI". */
bool zst_name_matches(const char *uri);

/* Footer: 1 when foot (the file's last 9 bytes) ends with the seekable magic, with the number
 * of entries and the table frame's total size; 0 when there is no seek table; -EINVAL (message
 * naming `name`) for reserved bits. */
int zst_parse_footer(const char *name, const uint8_t foot[ZST_FOOTER_SIZE], uint32_t *entries,
                     bool *checksums, uint64_t *table_frame_size);

/* The seek table frame buf[0..len) found at table_off in a file of file_size bytes: checks
 * its header and that the frames it describes end exactly where it starts; fills t (free with
 * zst_seek_table_free).  Errors name the entry and the offsets involved. */
int zst_parse_seek_table(const char *name, const uint8_t *buf, size_t len, uint64_t table_off,
                         struct zst_seek_table *t);
void zst_seek_table_free(struct zst_seek_table *t);

/* The frame holding image offset off (< t->size): index into t->f. */
size_t zst_seek_table_find(const struct zst_seek_table *t, uint64_t off);

/* Serialise a seek table for n frames into a malloc'd buffer.  0 or -ENOMEM. */
int zst_build_seek_table(const struct zst_frame *f, size_t n, bool checksums, uint8_t **out,
                         size_t *len);

/* The frame ferry writes for len all-zero bytes (len <= ZST_MAX_FRAME): header with content
 * size, RLE blocks of 0x00, content checksum.  Malloc'd.  0 or -ENOMEM. */
int zst_zero_frame(uint32_t len, uint8_t **out, size_t *outlen);
/* Largest compressed size an all-zero frame of dsize bytes can have in the RLE form above
 * (frames bigger than this are data without looking). */
size_t zst_zero_frame_max(uint32_t dsize);

/* 1 when frame[0..len) is a complete zstd frame of dsize bytes made only of RLE (or raw)
 * blocks of 0x00, with its content checksum field (if it has one) in *checksum: the caller
 * checks that against XXH64 of dsize zeroes.  0 when it is anything else (it must then be
 * decompressed to know). */
int zst_frame_is_zero(const uint8_t *frame, size_t len, uint32_t dsize, uint32_t *checksum,
                      bool *has_checksum);

/* A frame header (zstd or skippable). */
struct zst_frame_header {
  uint32_t header_size; /* bytes up to the first block (skippable: 8) */
  bool skippable;       /* a skippable frame: skip_size bytes follow the 8-byte header */
  uint32_t skip_size;
  bool has_size; /* Frame_Content_Size present */
  uint64_t content_size;
  bool checksum; /* 4 bytes of content checksum after the last block */
  uint32_t dict_id;
};
#define ZST_FRAME_HEADER_MAX 18
#define ZST_BLOCK_MAX (128u << 10)

/* Parse the frame header at p[0..len): 1 parsed, 0 len is too short to tell, -EINVAL when
 * p is no zstd frame (bad magic, reserved bit set) with a message naming what was found. */
int zst_parse_frame_header(const uint8_t *p, size_t len, struct zst_frame_header *h);

enum { ZST_BLOCK_RAW = 0, ZST_BLOCK_RLE = 1, ZST_BLOCK_COMPRESSED = 2, ZST_BLOCK_RESERVED = 3 };
/* The 3-byte block header at p; *content is the number of bytes of block content that
 * follow it (1 for RLE). */
static inline void
zst_block_header(const uint8_t *p, bool *last, unsigned *type, uint32_t *size, uint32_t *content)
{
  uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
  *last = v & 1;
  *type = (v >> 1) & 3;
  *size = v >> 3;
  *content = *type == ZST_BLOCK_RLE ? 1 : *size;
}

static inline uint32_t
zst_le32(const uint8_t *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void
zst_put_le32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

#endif
