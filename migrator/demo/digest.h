/* ferry: SHA-256 of volume images, for the demo's verification. */
#ifndef FERRY_DIGEST_H
#define FERRY_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sha256 {
  uint32_t h[8];
  uint8_t block[64];
  size_t fill;
  uint64_t total;
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t len);
/* Final digest as 64 lowercase hex characters + NUL into hex[65]. */
void sha256_final(struct sha256 *s, char hex[65]);

/* SHA-256 of a file's whole content (what `sha256sum FILE` prints) when sparse is false.
 * With sparse true, a digest that does not read holes: SHA-256 over, for every 64 KiB block
 * that is not all zeroes, its offset (8 bytes little-endian) then its bytes — equal for two
 * files exactly when their contents are equal, whatever their allocation, and fast on a 64 GiB
 * sparse image.  0 or -errno with a message naming the file. */
int digest_file(const char *path, bool sparse, char hex[65]);

#endif
