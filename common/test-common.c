/* Unit tests for common/: size parsing, errors, progress formatting, hashes. */
#include "common/error.h"
#include "common/hash.h"
#include "common/progress.h"
#include "common/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                     \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static void
test_parse_size(void)
{
  uint64_t v;
  CHECK(parse_size("x", "65536", &v) == 0 && v == 65536);
  CHECK(parse_size("x", "64K", &v) == 0 && v == 65536);
  CHECK(parse_size("x", "64KiB", &v) == 0 && v == 65536);
  CHECK(parse_size("x", "4m", &v) == 0 && v == 4u << 20);
  CHECK(parse_size("x", "2G", &v) == 0 && v == 2ull << 30);
  CHECK(parse_size("x", "1T", &v) == 0 && v == 1ull << 40);
  CHECK(parse_size("x", "10B", &v) == 0 && v == 10);
  CHECK(parse_size("--rate", "abc", &v) == -EINVAL);
  CHECK(strcmp(error_message(), "--rate: 'abc' is not a size (expected e.g. 65536, 64K, 4M, 2G)")
        == 0);
  CHECK(parse_size("x", "4X", &v) == -EINVAL);
  CHECK(strstr(error_message(), "unknown unit") != NULL);
  CHECK(parse_size("x", "4KB2", &v) == -EINVAL);
  CHECK(parse_size("x", "99999999999999999999", &v) == -ERANGE);
  CHECK(parse_size("x", "16777216T", &v) == -ERANGE);
  CHECK(parse_size("x", "-1", &v) == -EINVAL);
  CHECK(parse_size("x", "", &v) == -EINVAL);
}

static void
test_parse_uint(void)
{
  uint64_t v;
  CHECK(parse_uint("--workers", "8", 1, 64, &v) == 0 && v == 8);
  CHECK(parse_uint("--workers", "0", 1, 64, &v) == -ERANGE);
  CHECK(strcmp(error_message(), "--workers: 0 is out of range (1..64)") == 0);
  CHECK(parse_uint("--workers", "8x", 1, 64, &v) == -EINVAL);
}

static void
test_errors(void)
{
  errno = 42;
  CHECK(error_set(ENOENT, "map.bin: %s", "missing") == -ENOENT);
  CHECK(errno == 42);
  CHECK(error_prefix("open") == -ENOENT);
  CHECK(strcmp(error_message(), "open: map.bin: missing") == 0);
  CHECK(error_set_errno(EACCES, "x") == -EACCES);
  CHECK(strcmp(error_message(), "x: Permission denied") == 0);
  error_clear();
  CHECK(strcmp(error_message(), "") == 0);
}

static void
test_progress_format(void)
{
  char buf[256];
  progress_format(buf, sizeof buf, "copy", 512, 1024, 0, 10);
  CHECK(strcmp(buf, "copy [#####     ]  50% 512 B/1.0 KiB 0 B/s") == 0);
  char sz[32];
  CHECK(strcmp(format_size(sz, sizeof sz, 1536.0 * 1024 * 1024), "1.5 GiB") == 0);
}

/* Known answers (FIPS 180-2 examples; XXH64 of nothing) and incremental == one-shot.  XXH64
 * is checked against libzstd's frame checksums in backends/test-zst-format.c. */
static void
test_hashes(void)
{
  uint8_t d[SHA256_BYTES];
  char hex[SHA256_HEX];
  sha256("abc", 3, d);
  CHECK(strcmp(hash_hex(d, sizeof d, hex),
               "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        == 0);
  sha256("", 0, d);
  CHECK(strcmp(hash_hex(d, sizeof d, hex),
               "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        == 0);
  const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  struct sha256_ctx c;
  CHECK(sha256_begin(&c) == 0);
  sha256_add(&c, two, 20);
  sha256_add(&c, two + 20, strlen(two) - 20);
  sha256_end(&c, d);
  CHECK(strcmp(hash_hex(d, sizeof d, hex),
               "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        == 0);
  CHECK(xxh64("", 0, 0) == 0xEF46DB3751D8E999ull);
}

int
main(void)
{
  test_parse_size();
  test_parse_uint();
  test_errors();
  test_progress_format();
  test_hashes();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  return 0;
}
