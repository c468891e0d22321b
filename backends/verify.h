/* ferry: are two volumes identical?  The block digest, and a parallel sparse-aware compare.
 *
 * The digest of a volume is SHA-256 over
 *     "ferry-blocks-v1\0" (16 bytes) | size (u64 LE) | block size (u32 LE, 1 MiB)
 *     | SHA-256 of block 0 | SHA-256 of block 1 | ...
 * where block i is bytes [i MiB, (i+1) MiB) (the last one shorter).  It depends only on the
 * volume's bytes, not on how they are stored (a hole and written zeroes hash the same), so two
 * sites can compare volumes by exchanging one line, printed as "sha256/1M:<64 hex digits>".
 * An all-zero block's hash is known in advance: blocks that extents report as zero are never
 * read.  The `ferry send` stream carries its source's digest in its last record and
 * `ferry receive` checks what it wrote against it.
 */
#ifndef FERRY_VERIFY_H
#define FERRY_VERIFY_H

#include "backends/volume.h"
#include "common/hash.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VERIFY_BLOCK (1u << 20)
#define VERIFY_DIGEST_PREFIX "sha256/1M:"
#define VERIFY_DIGEST_LEN (sizeof VERIFY_DIGEST_PREFIX - 1 + 2 * SHA256_BYTES + 1)

/* SHA-256 of block data[0..n): the cached zero-block hash when it is all zeroes. */
void verify_block_hash(const void *data, uint32_t n, uint8_t out[SHA256_BYTES]);
/* SHA-256 of n zero bytes (cached for a whole block). */
void verify_zero_hash(uint32_t n, uint8_t out[SHA256_BYTES]);

/* Building a digest from block hashes given in order. */
struct blockdigest {
  struct sha256_ctx c;
  uint64_t size, done; /* bytes of the volume, bytes accounted so far */
};
int blockdigest_begin(struct blockdigest *d, uint64_t size);
/* The next block (len bytes: VERIFY_BLOCK, or less for the last). */
void blockdigest_block(struct blockdigest *d, const uint8_t hash[SHA256_BYTES], uint32_t len);
/* The next len bytes (from a block boundary) are zeroes. */
void blockdigest_zero(struct blockdigest *d, uint64_t len);
/* The digest string; -EINVAL (message) when the blocks given do not cover the size.  Frees d. */
int blockdigest_end(struct blockdigest *d, char out[VERIFY_DIGEST_LEN]);
/* The same as 32 bytes (what the send stream carries). */
int blockdigest_end_bytes(struct blockdigest *d, uint8_t out[SHA256_BYTES]);
/* Those 32 bytes as the digest string. */
void verify_format_digest(const uint8_t raw[SHA256_BYTES], char out[VERIFY_DIGEST_LEN]);
void blockdigest_discard(struct blockdigest *d);

struct verify_options {
  unsigned workers;          /* parallel blocks in flight (default 8; 1 for a sequential volume) */
  size_t max_ranges;         /* differing ranges kept in the result (default 1000) */
  struct progress *progress; /* optional: bytes compared */
};
void verify_options_init(struct verify_options *o);

struct verify_range {
  uint64_t offset, length;
};

struct verify_side {
  char digest[VERIFY_DIGEST_LEN];
  uint64_t size;
  uint64_t bytes_read;    /* data read and hashed */
  uint64_t bytes_skipped; /* reported zero by extents: neither read nor hashed */
};

struct verify_result {
  struct verify_side a, b;
  bool equal;
  struct verify_range *ranges; /* the first max_ranges differing ranges, in order, merged */
  size_t n_ranges;             /* how many are kept */
  uint64_t total_ranges;       /* how many there are */
  uint64_t bytes_differing;    /* including the tail of the longer volume */
  double seconds;
};

/* The digest of one volume.  0 or -errno with a message naming the volume. */
int verify_digest(struct volume *v, const struct verify_options *o, struct verify_side *out);
/* Compare a and b (any sizes) and compute both digests in one pass.  0 (r->equal says the
 * answer) or -errno when a volume could not be read. */
int verify_compare(struct volume *a, struct volume *b, const struct verify_options *o,
                   struct verify_result *r);
void verify_result_free(struct verify_result *r);

#endif
