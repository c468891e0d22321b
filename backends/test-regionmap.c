/* Unit tests for the region map: format round trip, refusals, commit ordering and torn
 * commits (simulated by reverting sectors of the newest slot to their older contents). */
#include "backends/regionmap.h"
#include "common/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s (%s)\n", __FILE__, __LINE__, #cond,                 \
              error_message());                                                                    \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static char dir[] = "/tmp/test-regionmap.XXXXXX";
static char path[256];

static struct regionmap_params
params(void)
{
  /* 1000 regions of 64 KiB minus a short last one: not a multiple of 64 bits either. */
  return (struct regionmap_params){ .volume_size = 1000 * 65536ull - 4096,
                                    .region_size = 65536,
                                    .source_size = 1000 * 65536ull - 4096,
                                    .source_id = "nbd+unix:///src?socket=/tmp/x" };
}

static char *
slurp(size_t *len)
{
  int fd = open(path, O_RDONLY);
  struct stat st;
  fstat(fd, &st);
  char *b = malloc((size_t)st.st_size + 1);
  *len = (size_t)st.st_size;
  if (pread(fd, b, *len, 0) != (ssize_t)*len)
    abort();
  close(fd);
  return b;
}

static void
spit(const char *b, size_t len)
{
  int fd = open(path, O_WRONLY | O_TRUNC);
  if (pwrite(fd, b, len, 0) != (ssize_t)len)
    abort();
  close(fd);
}

static void
test_crc(void)
{
  /* The standard check value of CRC-32C. */
  CHECK(regionmap_crc32c(0, "123456789", 9) == 0xE3069283u);
  char buf[100];
  memset(buf, 0xa5, sizeof buf);
  uint32_t whole = regionmap_crc32c(0, buf, sizeof buf);
  CHECK(regionmap_crc32c(regionmap_crc32c(0, buf, 37), buf + 37, 63) == whole);
}

static void
test_roundtrip(void)
{
  struct regionmap_params p = params();
  struct regionmap *m;
  CHECK(regionmap_open(path, &p, &m) == 0);
  CHECK(regionmap_regions(m) == 1000);
  CHECK(regionmap_count(m) == 0 && !regionmap_complete(m));
  CHECK(regionmap_generation(m) == 1);
  CHECK(regionmap_mark(m, 0) && regionmap_mark(m, 63) && regionmap_mark(m, 64));
  CHECK(regionmap_mark(m, 999));
  CHECK(!regionmap_mark(m, 999)); /* already set */
  CHECK(regionmap_dirty(m) == 4 && regionmap_count(m) == 4);
  CHECK(regionmap_next_clear(m, 0) == 1 && regionmap_next_clear(m, 63) == 65);
  CHECK(regionmap_next_set(m, 1) == 63 && regionmap_next_set(m, 65) == 999);
  CHECK(regionmap_next_set(m, 1000) == 1000);
  CHECK(regionmap_commit(m, NULL, NULL) == 0);
  CHECK(regionmap_dirty(m) == 0 && regionmap_generation(m) == 2);
  CHECK(regionmap_commit(m, NULL, NULL) == 0); /* nothing dirty: no new generation */
  CHECK(regionmap_generation(m) == 2);
  regionmap_close(m);

  p.region_size = 0; /* take the map's */
  CHECK(regionmap_open(path, &p, &m) == 0);
  CHECK(regionmap_region_size(m) == 65536 && regionmap_generation(m) == 2);
  CHECK(regionmap_count(m) == 4 && regionmap_test(m, 63) && regionmap_test(m, 999));
  CHECK(!regionmap_test(m, 1) && !regionmap_test(m, 998));
  for (uint64_t r = 0; r < 1000; r++)
    regionmap_mark(m, r);
  CHECK(regionmap_complete(m) && regionmap_next_clear(m, 0) == 1000);
  CHECK(regionmap_commit(m, NULL, NULL) == 0);
  regionmap_close(m);
  CHECK(regionmap_open(path, &p, &m) == 0);
  CHECK(regionmap_complete(m));
  regionmap_close(m);
  unlink(path);
}

/* Every refusal names the file and leaves it byte for byte unchanged. */
static void
expect_refusal(struct regionmap_params *p, const char *text)
{
  size_t l1, l2;
  char *before = slurp(&l1);
  struct regionmap *m = NULL;
  CHECK(regionmap_open(path, p, &m) < 0 && m == NULL);
  CHECK(strstr(error_message(), path) != NULL);
  if (!strstr(error_message(), text)) {
    fprintf(stderr, "message '%s' lacks '%s'\n", error_message(), text);
    failures++;
  }
  char *after = slurp(&l2);
  CHECK(l1 == l2 && memcmp(before, after, l1) == 0);
  free(before);
  free(after);
}

static void
test_refusals(void)
{
  struct regionmap_params p = params();
  struct regionmap *m, *m2;
  CHECK(regionmap_open(path, &p, &m) == 0);
  regionmap_mark(m, 5);
  CHECK(regionmap_commit(m, NULL, NULL) == 0);
  /* A second user of the same map is refused while the first holds it. */
  CHECK(regionmap_open(path, &p, &m2) == -EBUSY);
  CHECK(strstr(error_message(), "in use") != NULL);
  regionmap_close(m);

  struct regionmap_params q = p;
  q.volume_size += 65536;
  expect_refusal(&q, "map is for a volume of");
  q = p;
  q.region_size = 131072;
  expect_refusal(&q, "region size 65536 does not match 131072");
  q = p;
  q.source_id = "nbd://other/export";
  expect_refusal(&q, "map belongs to another source");
  q = p;
  q.source_size -= 4096;
  expect_refusal(&q, "map belongs to another source");
  q = p;
  q.region_size = 3000;
  expect_refusal(&q, "must be a power of two");

  size_t len;
  char *img = slurp(&len);
  char *bad = malloc(len);
  memcpy(bad, img, len);
  bad[100] ^= 1;  /* slot 0 header */
  bad[4196] ^= 1; /* slot 1 header */
  spit(bad, len);
  expect_refusal(&p, "corrupt region map (bad header checksum)");
  memset(bad, 'x', len);
  spit(bad, len);
  expect_refusal(&p, "bad magic");
  spit(img, 100); /* truncated */
  expect_refusal(&p, "corrupt region map");
  free(bad);
  free(img);
  unlink(path);

  /* An empty file (e.g. from mktemp) becomes a new map. */
  close(open(path, O_CREAT | O_WRONLY, 0644));
  CHECK(regionmap_open(path, &p, &m) == 0);
  CHECK(regionmap_count(m) == 0);
  regionmap_close(m);
  unlink(path);
}

static void
put32le(char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (char)(v >> (8 * i));
}

/* The map knows its destination: recorded at creation, another one refused; a version-1
 * map (no destination recorded) adopts the one it is opened with at its next commit; a
 * missing map is not created when the caller says the destination holds data. */
static void
test_destination(void)
{
  struct regionmap_params p = params();
  p.dest_id = "inode 1234";
  p.dest_size = p.volume_size + 8192;
  struct regionmap *m;
  struct regionmap_params q = p;
  q.no_create = true;
  CHECK(regionmap_open(path, &q, &m) == -ENOENT && m == NULL);
  CHECK(strstr(error_message(), "already holds data") && strstr(error_message(), "--new-map"));
  CHECK(access(path, F_OK) < 0); /* nothing created */
  CHECK(regionmap_open(path, &p, &m) == 0);
  regionmap_mark(m, 3);
  CHECK(regionmap_commit(m, NULL, NULL) == 0);
  regionmap_close(m);
  CHECK(regionmap_open(path, &q, &m) == 0); /* an existing map is used as it is */
  regionmap_close(m);
  q = p;
  q.dest_id = "inode 99";
  expect_refusal(&q, "map belongs to another destination (inode 1234");
  q = p;
  q.dest_size += 4096;
  expect_refusal(&q, "map belongs to another destination");
  q = p;
  q.dest_id = NULL; /* a caller that does not check */
  CHECK(regionmap_open(path, &q, &m) == 0);
  regionmap_close(m);

  /* Make it a version-1 map: version 1, no destination fields, header CRCs redone. */
  size_t len;
  char *img = slurp(&len);
  for (int slot = 0; slot < 2; slot++) {
    char *h = img + 4096 * slot;
    if (memcmp(h, "FERRYMAP", 8) != 0)
      continue;
    put32le(h + 8, 1);
    memset(h + 1088, 0, 4096 - 4 - 1088);
    put32le(h + 4092, regionmap_crc32c(0, h, 4092));
  }
  spit(img, len);
  free(img);
  q = p;
  q.dest_id = "inode 777";
  CHECK(regionmap_open(path, &q, &m) == 0); /* nothing recorded: adopted */
  CHECK(regionmap_count(m) == 1 && regionmap_test(m, 3));
  CHECK(regionmap_commit(m, NULL, NULL) == 0); /* written although nothing is dirty */
  CHECK(regionmap_generation(m) == 3);
  regionmap_close(m);
  expect_refusal(&p, "map belongs to another destination (inode 777");
  CHECK(regionmap_open(path, &q, &m) == 0);
  regionmap_close(m);
  unlink(path);
}

/* The flush callback runs before the map is written, and a failing flush aborts the
 * commit with the bits kept dirty. */
struct order {
  int calls;
  uint64_t generation_seen;
  int fail;
};

static int
check_flush(void *opaque)
{
  struct order *o = opaque;
  o->calls++;
  struct regionmap_params p = params();
  (void)p;
  /* Read the file's newest header generation directly: must still be the old one. */
  int fd = open(path, O_RDONLY);
  unsigned char h[2][24];
  if (pread(fd, h[0], 24, 0) != 24 || pread(fd, h[1], 24, 4096) != 24)
    abort();
  close(fd);
  uint64_t g = 0;
  for (int s = 0; s < 2; s++) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
      v = v << 8 | h[s][16 + i];
    if (memcmp(h[s], "FERRYMAP", 8) == 0 && v > g)
      g = v;
  }
  o->generation_seen = g;
  return o->fail ? error_set(EIO, "destination flush failed") : 0;
}

static void
test_commit_order(void)
{
  struct regionmap_params p = params();
  struct regionmap *m;
  CHECK(regionmap_open(path, &p, &m) == 0);
  regionmap_mark(m, 7);
  struct order o = { 0, 0, 1 };
  CHECK(regionmap_commit(m, check_flush, &o) == -EIO);
  CHECK(o.calls == 1 && regionmap_generation(m) == 1 && regionmap_dirty(m) == 1);
  o.fail = 0;
  CHECK(regionmap_commit(m, check_flush, &o) == 0);
  CHECK(o.calls == 2 && o.generation_seen == 1 && regionmap_generation(m) == 2);
  regionmap_close(m);
  unlink(path);
}

/* Torn commit: the newest slot is only partly written.  Any subset of its 512-byte sectors
 * reverted to the previous contents must open as either the new or the old map, exactly. */
static void
test_torn(void)
{
  struct regionmap_params p = params();
  struct regionmap *m;
  CHECK(regionmap_open(path, &p, &m) == 0);
  regionmap_mark(m, 1);
  CHECK(regionmap_commit(m, NULL, NULL) == 0); /* gen 2 in slot 1 */
  regionmap_mark(m, 2);
  CHECK(regionmap_commit(m, NULL, NULL) == 0); /* gen 3 in slot 0 */
  size_t len;
  char *old = slurp(&len); /* slot 0 = gen 3, slot 1 = gen 2 */
  regionmap_mark(m, 500);
  regionmap_mark(m, 999);
  CHECK(regionmap_commit(m, NULL, NULL) == 0); /* gen 4 in slot 1, over gen 2 */
  regionmap_close(m);
  size_t len2;
  char *new = slurp(&len2);
  CHECK(len == len2);
  char *mix = malloc(len);
  srand(42);
  int saw_old = 0, saw_new = 0;
  size_t sectors = len / 512;
  for (int trial = 0; trial < 300; trial++) {
    memcpy(mix, new, len);
    int mode = trial % 3;
    size_t cut = (size_t)rand() % sectors;
    for (size_t s = 0; s < sectors; s++) {
      bool revert = mode == 0 ? rand() % 2 : mode == 1 ? s >= cut : rand() % 16 == 0;
      if (revert)
        memcpy(mix + s * 512, old + s * 512, 512);
    }
    spit(mix, len);
    struct regionmap *t;
    if (regionmap_open(path, &p, &t) < 0) {
      CHECK(!"a torn commit made the map unreadable");
      continue;
    }
    uint64_t g = regionmap_generation(t);
    bool ok;
    if (g == 4) {
      saw_new++;
      ok = regionmap_count(t) == 4 && regionmap_test(t, 500) && regionmap_test(t, 999);
    } else {
      saw_old++;
      ok = g == 3 && regionmap_count(t) == 2 && regionmap_test(t, 1) && regionmap_test(t, 2);
    }
    CHECK(ok);
    regionmap_close(t);
  }
  CHECK(saw_old > 0 && saw_new > 0);
  /* Only the newest bitmap torn: the older slot is used, with a warning naming both. */
  memcpy(mix, new, len);
  memcpy(mix + 8192 + 4096, old + 8192 + 4096, 512); /* slot 1's bitmap, first sector */
  spit(mix, len);
  char logf[200];
  snprintf(logf, sizeof logf, "%s/stderr", dir);
  fflush(stderr);
  int saved = dup(2), lfd = open(logf, O_CREAT | O_TRUNC | O_WRONLY, 0644);
  dup2(lfd, 2);
  struct regionmap *t = NULL;
  int r = regionmap_open(path, &p, &t);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  close(lfd);
  CHECK(r == 0 && regionmap_generation(t) == 3);
  regionmap_close(t);
  size_t ll;
  char *saved_path = strdup(path), *text;
  snprintf(path, sizeof path, "%s", logf);
  text = slurp(&ll);
  text[ll] = 0;
  snprintf(path, sizeof path, "%s", saved_path);
  free(saved_path);
  CHECK(strstr(text, "warning") && strstr(text, "generation 4") && strstr(text, "generation 3"));
  free(text);
  unlink(logf);
  free(mix);
  free(old);
  free(new);
  unlink(path);
}

/* A process that dies before committing loses no mark (the marks file, same boot); after a
 * reboot (another boot id) only the committed map counts; a new map ignores old marks. */
static void
test_marks(void)
{
  struct regionmap_params p = params();
  struct regionmap *m;
  char marks[300];
  snprintf(marks, sizeof marks, "%s.marks", path);
  setenv("FERRY_BOOT_ID", "boot-a", 1);
  CHECK(regionmap_open(path, &p, &m) == 0);
  CHECK(regionmap_mark(m, 5) && regionmap_commit(m, NULL, NULL) == 0);
  CHECK(regionmap_mark(m, 7) && regionmap_mark(m, 999) && regionmap_mark(m, 64));
  regionmap_close(m); /* no commit: as after kill -9 */
  CHECK(access(marks, F_OK) == 0);

  CHECK(regionmap_open(path, &p, &m) == 0);
  CHECK(regionmap_count(m) == 4 && regionmap_dirty(m) == 3);
  CHECK(regionmap_test(m, 5) && regionmap_test(m, 7) && regionmap_test(m, 64));
  CHECK(regionmap_test(m, 999) && !regionmap_test(m, 6));
  regionmap_close(m);

  /* Another boot: the marks (whose data the page cache may have lost) are ignored. */
  setenv("FERRY_BOOT_ID", "boot-b", 1);
  CHECK(regionmap_open(path, &p, &m) == 0);
  CHECK(regionmap_count(m) == 1 && regionmap_test(m, 5) && !regionmap_test(m, 7));
  CHECK(regionmap_mark(m, 8));
  regionmap_close(m);

  /* A clean end (everything committed) removes the file. */
  CHECK(regionmap_open(path, &p, &m) == 0);
  CHECK(regionmap_count(m) == 2 && regionmap_commit(m, NULL, NULL) == 0);
  regionmap_close(m);
  CHECK(access(marks, F_OK) != 0);

  /* Marks left by a map that was deleted mean nothing to a new map at the same path. */
  CHECK(regionmap_open(path, &p, &m) == 0);
  CHECK(regionmap_mark(m, 100));
  regionmap_close(m);
  unlink(path);
  CHECK(regionmap_open(path, &p, &m) == 0);
  CHECK(regionmap_count(m) == 0);
  regionmap_close(m);
  unlink(path);
  unlink(marks);
  unsetenv("FERRY_BOOT_ID");
}

int
main(void)
{
  if (!mkdtemp(dir))
    return 1;
  snprintf(path, sizeof path, "%s/map.bin", dir);
  test_crc();
  test_roundtrip();
  test_refusals();
  test_destination();
  test_commit_order();
  test_torn();
  test_marks();
  unlink(path);
  char tmp[300];
  snprintf(tmp, sizeof tmp, "%s.new", path);
  unlink(tmp);
  snprintf(tmp, sizeof tmp, "%s.marks", path);
  unlink(tmp);
  rmdir(dir);
  error_clear();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("regionmap: all checks passed\n");
  return 0;
}
