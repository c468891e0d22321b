/* clonetool: drive a clone (backends/clone.h) from test scripts.
 *
 *   clonetool writer SRC MAP DEST LOG BLOCKS SEED RATE
 *     A guest that writes 4 KiB blocks through the clone (hydrator running at RATE bytes/s,
 *     0 = unlimited) and flushes every few writes; after each successful flush it appends the
 *     number of writes now durable to LOG (fsync'ed).  On start it first checks, through the
 *     clone, every write LOG says was flushed ("no flushed write lost"), then continues where
 *     LOG left off, and finally waits until the clone has converged.  Killed at any moment and
 *     restarted, it must end with the destination equal to `expected`.
 *   clonetool expected SRCFILE OUT BLOCKS SEED
 *     Write the image the writer must produce: SRCFILE with the writer's blocks applied.
 *   clonetool latency SRC MAP DEST COUNT SIZE
 *     bench/clone: COUNT reads of SIZE bytes at random distinct region-aligned offsets, each
 *     straight from the source volume and through a fresh clone (no hydrator, so every clone
 *     read is an on-demand fetch of an unhydrated region), interleaved so both see the same
 *     machine load; prints p50/p99 of both in µs.
 *   clonetool verify SRC MAP DEST EXPECTED
 *     A reader: reads the whole clone in random order and sizes (no hydrator), comparing with
 *     EXPECTED.  Failed reads are allowed (counted); a wrong byte is not.
 *
 * $CLONETOOL_SOURCE_TIMEOUT (seconds) sets the clone's --source-timeout (default 60).
 *
 * Exit: 0 ok, 1 error, 3 a check failed (lost write / wrong data).
 */
#include "backends/clone.h"
#include "common/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096u
#define FLUSH_EVERY 8

static void
options_from_env(struct clone_options *o)
{
  const char *t = getenv("CLONETOOL_SOURCE_TIMEOUT");
  if (t && *t)
    o->source_timeout = strtod(t, NULL);
}

static uint64_t
xorshift(uint64_t *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Write i goes to a distinct block (odd stride over a power-of-two count of blocks), at
 * a 4 KiB position inside its region: a partial-region write. */
static uint64_t
block_of(uint64_t i, uint64_t nblocks_pow2)
{
  return (i * 7919 + 13) & (nblocks_pow2 - 1);
}

static void
block_data(uint64_t seed, uint64_t i, unsigned char *buf)
{
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull + 1;
  for (unsigned k = 0; k < BLOCK; k += 8) {
    uint64_t v = xorshift(&s);
    memcpy(buf + k, &v, 8);
  }
}

static uint64_t
pow2_blocks(uint64_t size)
{
  uint64_t n = 1;
  while (n * 2 * BLOCK <= size)
    n *= 2;
  return n;
}

static int
die(const char *what)
{
  fprintf(stderr, "clonetool: %s: %s\n", what,
          error_message()[0] ? error_message() : strerror(errno));
  return 1;
}

static int
writer(char **a)
{
  const char *src = a[0], *map = a[1], *dest = a[2], *logpath = a[3];
  uint64_t nwrites = strtoull(a[4], NULL, 10), seed = strtoull(a[5], NULL, 10);
  struct clone_options o;
  clone_options_init(&o);
  options_from_env(&o);
  o.rate = strtoull(a[6], NULL, 10);
  o.workers = 2;
  o.request_size = 256u << 10;
  o.commit_interval = 0.2; /* as the crash test's ferry hydrate: little rework per kill */
  struct clone *c;
  if (clone_open(src, map, dest, &o, &c) < 0)
    return die("open");
  struct volume *v = clone_volume(c);
  uint64_t nblocks = pow2_blocks(v->size);
  if (nwrites > nblocks) {
    fprintf(stderr, "clonetool: too many writes for the volume\n");
    clone_close(c);
    return 1;
  }
  int logfd = open(logpath, O_RDWR | O_CREAT | O_APPEND, 0644);
  struct stat st;
  if (logfd < 0 || fstat(logfd, &st) < 0) {
    clone_close(c);
    return die(logpath);
  }
  uint64_t durable = 0;
  if (st.st_size >= 8 && pread(logfd, &durable, 8, (st.st_size / 8 - 1) * 8) != 8)
    durable = 0;
  unsigned char want[BLOCK], got[BLOCK];
  int status = 0;
  for (uint64_t i = 0; i < durable; i++) {
    uint64_t b = block_of(i, nblocks);
    block_data(seed, i, want);
    if (volume_pread(v, got, BLOCK, b * BLOCK) < 0) {
      status = die("verify read");
      goto out;
    }
    if (memcmp(want, got, BLOCK) != 0) {
      fprintf(stderr, "clonetool: LOST flushed write %llu (block %llu)\n", (unsigned long long)i,
              (unsigned long long)b);
      status = 3;
      goto out;
    }
  }
  printf("verified %llu flushed writes\n", (unsigned long long)durable);
  fflush(stdout);
  for (uint64_t i = durable; i < nwrites; i++) {
    block_data(seed, i, want);
    if (volume_pwrite(v, want, BLOCK, block_of(i, nblocks) * BLOCK, 0) < 0) {
      status = die("write");
      goto out;
    }
    if ((i + 1) % FLUSH_EVERY == 0 || i + 1 == nwrites) {
      /* Only a write acknowledged by flush counts as durable: log it after the flush. */
      if (volume_flush(v) < 0) {
        status = die("flush");
        goto out;
      }
      uint64_t n = i + 1;
      if (write(logfd, &n, 8) != 8 || fsync(logfd) < 0) {
        status = die(logpath);
        goto out;
      }
    }
  }
  if (clone_wait(c, 120) < 0)
    status = die("wait");
out:
  close(logfd);
  if (clone_close(c) < 0 && status == 0)
    status = die("close");
  return status;
}

static int
expected(char **a)
{
  const char *srcfile = a[0], *out = a[1];
  uint64_t nwrites = strtoull(a[2], NULL, 10), seed = strtoull(a[3], NULL, 10);
  int in = open(srcfile, O_RDONLY), fd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0644);
  struct stat st;
  if (in < 0 || fd < 0 || fstat(in, &st) < 0)
    return die("expected");
  char *buf = malloc(1u << 20);
  for (off_t off = 0; off < st.st_size;) {
    ssize_t n = pread(in, buf, 1u << 20, off);
    if (n <= 0 || pwrite(fd, buf, (size_t)n, off) != n)
      return die("copy");
    off += n;
  }
  free(buf);
  uint64_t nblocks = pow2_blocks((uint64_t)st.st_size);
  unsigned char b[BLOCK];
  for (uint64_t i = 0; i < nwrites; i++) {
    block_data(seed, i, b);
    if (pwrite(fd, b, BLOCK, (off_t)(block_of(i, nblocks) * BLOCK)) != BLOCK)
      return die("write");
  }
  close(in);
  close(fd);
  return 0;
}

static int
verify(char **a)
{
  struct clone_options o;
  clone_options_init(&o);
  options_from_env(&o);
  o.hydrate = false;
  struct clone *c;
  if (clone_open(a[0], a[1], a[2], &o, &c) < 0)
    return die("open");
  struct volume *v = clone_volume(c);
  int fd = open(a[3], O_RDONLY);
  if (fd < 0) {
    clone_close(c);
    return die(a[3]);
  }
  unsigned char *got = malloc(1u << 20), *want = malloc(1u << 20);
  uint64_t rng = 99, ok = 0, failed = 0, wrong = 0;
  /* Random offsets and sizes until every byte was asked at least once in order. */
  for (uint64_t off = 0; off < v->size;) {
    uint64_t len = 1 + xorshift(&rng) % (1u << 20);
    uint64_t roff = xorshift(&rng) % 2 ? off : xorshift(&rng) % v->size;
    if (len > v->size - roff)
      len = v->size - roff;
    if (volume_pread(v, got, len, roff) < 0) {
      failed++;
      error_clear();
      if (roff == off)
        off += len; /* move on: a source that stays down must not hang the reader */
      continue;
    }
    if (pread(fd, want, len, (off_t)roff) != (ssize_t)len) {
      free(got);
      free(want);
      clone_close(c);
      return die("read expected");
    }
    if (memcmp(got, want, len) != 0) {
      wrong++;
      fprintf(stderr, "clonetool: WRONG data read at %llu+%llu\n", (unsigned long long)roff,
              (unsigned long long)len);
    } else
      ok++;
    if (roff == off)
      off += len;
  }
  printf("reads ok %llu, failed %llu, wrong %llu\n", (unsigned long long)ok,
         (unsigned long long)failed, (unsigned long long)wrong);
  free(got);
  free(want);
  close(fd);
  clone_close(c);
  error_clear();
  return wrong ? 3 : 0;
}

static double
now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void
report(const char *what, double *t, size_t n)
{
  qsort(t, n, sizeof *t, cmp_double);
  printf("%s: p50 %.0f us, p99 %.0f us\n", what, t[n / 2] * 1e6, t[(n * 99) / 100] * 1e6);
}

static int
latency(char **a)
{
  size_t count = strtoull(a[3], NULL, 10), size = strtoull(a[4], NULL, 10);
  struct volume_options so;
  volume_options_init(&so);
  so.readonly = true;
  struct volume *src;
  if (volume_open(a[0], &so, &src) < 0)
    return die("open source");
  uint64_t slots = src->size / size;
  if (count > slots)
    count = slots;
  uint64_t *offs = malloc(count * sizeof *offs);
  double *direct = malloc(count * sizeof *direct), *cloned = malloc(count * sizeof *cloned);
  char *buf = malloc(size);
  uint64_t rng = 4242;
  /* Distinct slots: a random odd stride over a power of two covering them. */
  uint64_t p2 = 1;
  while (p2 < slots)
    p2 *= 2;
  uint64_t stride = (xorshift(&rng) & (p2 - 1)) | 1, k = 0;
  for (uint64_t i = 0; k < count; i++) {
    uint64_t slot = (i * stride) & (p2 - 1);
    if (slot < slots)
      offs[k++] = slot * size;
  }
  struct clone_options o;
  clone_options_init(&o);
  options_from_env(&o);
  o.hydrate = false;
  o.region_size = size;
  struct clone *c;
  if (clone_open(a[0], a[1], a[2], &o, &c) < 0)
    return die("open clone");
  /* Interleaved (alternating which goes first), so both see the same machine load. */
  for (size_t i = 0; i < count; i++) {
    for (int k = 0; k < 2; k++) {
      bool via_clone = (k + (int)i) % 2;
      struct volume *v = via_clone ? clone_volume(c) : src;
      double t = now();
      if (volume_pread(v, buf, size, offs[i]) < 0)
        return die(via_clone ? "read clone" : "read source");
      (via_clone ? cloned : direct)[i] = now() - t;
    }
  }
  volume_close(src);
  clone_close(c);
  report("direct source read", direct, count);
  report("clone on-demand read", cloned, count);
  printf("p50 ratio %.2f, p99 ratio %.2f\n", cloned[count / 2] / direct[count / 2],
         cloned[(count * 99) / 100] / direct[(count * 99) / 100]);
  free(offs);
  free(direct);
  free(cloned);
  free(buf);
  error_clear();
  return 0;
}

int
main(int argc, char **argv)
{
  if (argc == 7 && strcmp(argv[1], "latency") == 0)
    return latency(argv + 2);
  if (argc == 9 && strcmp(argv[1], "writer") == 0)
    return writer(argv + 2);
  if (argc == 6 && strcmp(argv[1], "expected") == 0)
    return expected(argv + 2);
  if (argc == 6 && strcmp(argv[1], "verify") == 0)
    return verify(argv + 2);
  fprintf(stderr, "usage: clonetool writer SRC MAP DEST LOG WRITES SEED RATE\n"
                  "       clonetool expected SRCFILE OUT WRITES SEED\n"
                  "       clonetool verify SRC MAP DEST EXPECTED\n");
  return 1;
}
