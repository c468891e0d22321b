/* ferry: the hashes ferry uses.
 *
 * XXH64 is what the zstd formats use (frame content checksums, the seekable format's seek
 * table): the low 32 bits of XXH64 with seed 0.  SHA-256 is ferry's own integrity hash (the
 * send stream's chunks, `ferry verify`'s block digest): OpenSSL's libcrypto, which uses the
 * CPU's SHA extensions where it has them (about 1 GB/s per core here, five times a portable C
 * implementation).
 */
#ifndef FERRY_HASH_H
#define FERRY_HASH_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_BYTES 32
#define SHA256_HEX (2 * SHA256_BYTES + 1)

/* XXH64 of data[0..len) (the algorithm of xxhash.com, written from its specification). */
uint64_t xxh64(const void *data, size_t len, uint64_t seed);

/* SHA-256 of data[0..len) into out.  Cannot fail short of libcrypto being unusable, in which
 * case it aborts (a hash we cannot compute must never look like one we did). */
void sha256(const void *data, size_t len, uint8_t out[SHA256_BYTES]);

/* Incremental SHA-256.  sha256_begin returns 0 or -ENOMEM (message set). */
struct sha256_ctx {
  void *md; /* gnutls_hash_hd_t */
};
int sha256_begin(struct sha256_ctx *c);
void sha256_add(struct sha256_ctx *c, const void *data, size_t len);
/* Final digest into out; frees the context (call sha256_discard instead when abandoning). */
void sha256_end(struct sha256_ctx *c, uint8_t out[SHA256_BYTES]);
void sha256_discard(struct sha256_ctx *c);

/* Lowercase hex of bin[0..n) into hex (2n+1 bytes); returns hex. */
char *hash_hex(const uint8_t *bin, size_t n, char *hex);

#endif
