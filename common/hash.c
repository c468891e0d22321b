/* ferry: XXH64 and SHA-256, see hash.h. */
#include "common/hash.h"
#include "common/error.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- XXH64 ---- */

static const uint64_t P1 = 0x9E3779B185EBCA87ull;
static const uint64_t P2 = 0xC2B2AE3D27D4EB4Full;
static const uint64_t P3 = 0x165667B19E3779F9ull;
static const uint64_t P4 = 0x85EBCA77C2B2AE63ull;
static const uint64_t P5 = 0x27D4EB2F165667C5ull;

static inline uint64_t
rotl(uint64_t x, unsigned r)
{
  return (x << r) | (x >> (64 - r));
}

static inline uint64_t
le64(const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static inline uint32_t
le32(const uint8_t *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t
round64(uint64_t acc, uint64_t input)
{
  acc += input * P2;
  acc = rotl(acc, 31);
  return acc * P1;
}

static inline uint64_t
merge64(uint64_t acc, uint64_t v)
{
  acc ^= round64(0, v);
  return acc * P1 + P4;
}

uint64_t
xxh64(const void *data, size_t len, uint64_t seed)
{
  const uint8_t *p = data, *end = p + len;
  uint64_t h;
  if (len >= 32) {
    uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
    for (; end - p >= 32; p += 32) {
      v1 = round64(v1, le64(p));
      v2 = round64(v2, le64(p + 8));
      v3 = round64(v3, le64(p + 16));
      v4 = round64(v4, le64(p + 24));
    }
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    h = merge64(h, v1);
    h = merge64(h, v2);
    h = merge64(h, v3);
    h = merge64(h, v4);
  } else {
    h = seed + P5;
  }
  h += (uint64_t)len;
  for (; end - p >= 8; p += 8) {
    h ^= round64(0, le64(p));
    h = rotl(h, 27) * P1 + P4;
  }
  if (end - p >= 4) {
    h ^= (uint64_t)le32(p) * P1;
    h = rotl(h, 23) * P2 + P3;
    p += 4;
  }
  for (; p < end; p++) {
    h ^= (uint64_t)*p * P5;
    h = rotl(h, 11) * P1;
  }
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

/* ---- SHA-256 (GnuTLS, i.e. nettle: the CPU's SHA instructions where it has them) ---- */

static void
sha256_failed(int rc)
{
  fprintf(stderr, "ferry: GnuTLS cannot compute SHA-256: %s\n", gnutls_strerror(rc));
  abort();
}

void
sha256(const void *data, size_t len, uint8_t out[SHA256_BYTES])
{
  int rc = gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, out);
  if (rc < 0)
    sha256_failed(rc);
}

int
sha256_begin(struct sha256_ctx *c)
{
  gnutls_hash_hd_t h;
  int rc = gnutls_hash_init(&h, GNUTLS_DIG_SHA256);
  if (rc < 0) {
    c->md = NULL;
    return error_set(ENOMEM, "cannot start a SHA-256 digest: %s", gnutls_strerror(rc));
  }
  c->md = h;
  return 0;
}

void
sha256_add(struct sha256_ctx *c, const void *data, size_t len)
{
  int rc = gnutls_hash(c->md, data, len);
  if (rc < 0)
    sha256_failed(rc);
}

void
sha256_end(struct sha256_ctx *c, uint8_t out[SHA256_BYTES])
{
  gnutls_hash_deinit(c->md, out);
  c->md = NULL;
}

void
sha256_discard(struct sha256_ctx *c)
{
  if (c->md)
    gnutls_hash_deinit(c->md, NULL);
  c->md = NULL;
}

char *
hash_hex(const uint8_t *bin, size_t n, char *hex)
{
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    hex[2 * i] = digits[bin[i] >> 4];
    hex[2 * i + 1] = digits[bin[i] & 15];
  }
  hex[2 * n] = '\0';
  return hex;
}
