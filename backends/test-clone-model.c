/* Model test of the clone: threads issue random reads, writes, write-zeroes, trims, flushes
 * and cache hints through the clone while the hydrator runs; every read is compared with an
 * in-memory model, and the final destination must equal the model.
 *
 * Ownership keeps the model exact under concurrency: in the first half of the volume 4 KiB
 * blocks belong to the threads round-robin (so several threads write different parts of the
 * same region at once, racing the hydrator and on-demand fetches of that region); in the
 * second half 96 KiB chunks do (so requests span several regions).  A thread touches only
 * what it owns.  Trimmed bytes become "unknown" until written again.
 *
 * Phases: 1. hydrator paused (copy-on-read only), close; 2. reopen (map persisted) with the
 * hydrator rate-limited and the threads running; 3. unlimited, wait converged, close;
 * 4. compare the destination file with the model and reopen converged.
 */
#include "backends/clone.h"
#include "common/error.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REGION (16u << 10)
#define SIZE ((24u << 20) + 12288) /* a short last region */
#define HALF (12u << 20)
#define BLOCK 4096u
#define CHUNK (96u << 10)
#define THREADS 4
#define OPS 1500

static unsigned char *model;   /* expected bytes */
static unsigned char *unknown; /* 1 where a trim left the bytes unspecified */
static char dir[] = "/tmp/test-clone-model.XXXXXX";
static char src_path[300], dst_path[300], map_path[300];
static int failures;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      pthread_mutex_lock(&fail_lock);                                                              \
      fprintf(stderr, "%s:%d: check failed: %s (%s)\n", __FILE__, __LINE__, #cond,                 \
              error_message());                                                                    \
      failures++;                                                                                  \
      pthread_mutex_unlock(&fail_lock);                                                            \
    }                                                                                              \
  } while (0)

static uint64_t
xorshift(uint64_t *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* A random range owned by thread t: [*off, *off + *len). */
static void
pick(int t, uint64_t *rng, uint64_t *off, uint64_t *len)
{
  if (xorshift(rng) % 2) {
    uint64_t nblocks = HALF / BLOCK / THREADS;
    uint64_t b = (xorshift(rng) % nblocks) * THREADS + (uint64_t)t;
    uint64_t a = xorshift(rng) % BLOCK, z = xorshift(rng) % BLOCK;
    if (a > z) {
      uint64_t x = a;
      a = z;
      z = x;
    }
    *off = b * BLOCK + a;
    *len = z - a + 1;
  } else {
    uint64_t nchunks = (SIZE - HALF) / CHUNK;
    uint64_t mine = (nchunks - (uint64_t)t + THREADS - 1) / THREADS;
    uint64_t c = (xorshift(rng) % mine) * THREADS + (uint64_t)t;
    uint64_t start = HALF + c * CHUNK;
    uint64_t end = c == nchunks - 1 ? SIZE : start + CHUNK; /* last chunk takes the tail */
    uint64_t a = start + xorshift(rng) % (end - start);
    uint64_t n = 1 + xorshift(rng) % (end - a);
    *off = a;
    *len = n;
  }
}

struct worker {
  struct volume *v;
  int t;
  uint64_t rng;
  int ops;
};

static void
check_read(struct worker *w, uint64_t off, uint64_t len, const unsigned char *got)
{
  for (uint64_t i = 0; i < len; i++) {
    if (!unknown[off + i] && got[i] != model[off + i]) {
      pthread_mutex_lock(&fail_lock);
      fprintf(stderr, "thread %d: read at %llu+%llu: byte %llu is 0x%02x, model 0x%02x\n", w->t,
              (unsigned long long)off, (unsigned long long)len, (unsigned long long)(off + i),
              got[i], model[off + i]);
      failures++;
      pthread_mutex_unlock(&fail_lock);
      return;
    }
  }
}

static void *
worker_main(void *arg)
{
  struct worker *w = arg;
  unsigned char *buf = malloc(2 * CHUNK); /* the last chunk also takes the tail */
  for (int i = 0; i < w->ops; i++) {
    uint64_t off, len;
    pick(w->t, &w->rng, &off, &len);
    unsigned op = (unsigned)(xorshift(&w->rng) % 100);
    if (op < 40) {
      CHECK(volume_pread(w->v, buf, len, off) == 0);
      check_read(w, off, len, buf);
    } else if (op < 70) {
      for (uint64_t k = 0; k < len; k++)
        buf[k] = (unsigned char)xorshift(&w->rng);
      unsigned flags = xorshift(&w->rng) % 8 == 0 ? VOLUME_FUA : 0;
      CHECK(volume_pwrite(w->v, buf, len, off, flags) == 0);
      memcpy(model + off, buf, len);
      memset(unknown + off, 0, len);
    } else if (op < 80) {
      CHECK(volume_zero(w->v, len, off, xorshift(&w->rng) % 2 ? VOLUME_MAY_TRIM : 0) == 0);
      memset(model + off, 0, len);
      memset(unknown + off, 0, len);
    } else if (op < 90) {
      CHECK(volume_trim(w->v, len, off, 0) == 0);
      memset(unknown + off, 1, len);
    } else if (op < 95) {
      CHECK(volume_flush(w->v) == 0);
    } else {
      CHECK(volume_cache(w->v, len, off) == 0);
    }
  }
  free(buf);
  error_clear();
  return NULL;
}

static void
run_threads(struct clone *c, uint64_t seed, int ops)
{
  pthread_t th[THREADS];
  struct worker w[THREADS];
  for (int t = 0; t < THREADS; t++) {
    w[t] = (struct worker){ clone_volume(c), t, seed * 7919 + (uint64_t)t * 104729 + 1, ops };
    pthread_create(&th[t], NULL, worker_main, &w[t]);
  }
  for (int t = 0; t < THREADS; t++)
    pthread_join(th[t], NULL);
}

static void
make_source(void)
{
  uint64_t rng = 12345;
  for (uint64_t i = 0; i < SIZE; i++)
    model[i] = (unsigned char)xorshift(&rng);
  /* Some zero stretches (sparse in the file: holes) and zero runs inside data. */
  memset(model + (1u << 20), 0, 512u << 10);
  memset(model + (6u << 20), 0, 300u << 10);
  memset(model + (16u << 20), 0, 3u << 20);
  memset(model + (3u << 20) + 1000, 0, 40000);
  int fd = open(src_path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  for (uint64_t off = 0; off < SIZE; off += 4096) {
    uint64_t n = SIZE - off < 4096 ? SIZE - off : 4096;
    bool zero = true;
    for (uint64_t k = 0; k < n && zero; k++)
      zero = model[off + k] == 0;
    if (!zero && pwrite(fd, model + off, n, (off_t)off) != (ssize_t)n)
      abort();
  }
  if (ftruncate(fd, SIZE) < 0)
    abort();
  close(fd);
  fd = open(dst_path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  /* Garbage in the destination: the clone must never show it. */
  unsigned char junk[4096];
  memset(junk, 0xee, sizeof junk);
  for (uint64_t off = 0; off < SIZE; off += 65536)
    if (pwrite(fd, junk, sizeof junk, (off_t)off) != (ssize_t)sizeof junk)
      abort();
  if (ftruncate(fd, SIZE + 8192) < 0) /* larger than the source is allowed */
    abort();
  close(fd);
}

static void
compare_destination(void)
{
  int fd = open(dst_path, O_RDONLY);
  unsigned char *d = malloc(SIZE);
  CHECK(pread(fd, d, SIZE, 0) == (ssize_t)SIZE);
  close(fd);
  uint64_t diffs = 0;
  for (uint64_t i = 0; i < SIZE; i++)
    if (!unknown[i] && d[i] != model[i] && diffs++ < 5)
      fprintf(stderr, "destination byte %llu is 0x%02x, model 0x%02x\n", (unsigned long long)i,
              d[i], model[i]);
  CHECK(diffs == 0);
  free(d);
}

/* Regions just after an on-demand read are hydrated before the rest (one slow worker: the
 * first range it takes must be the hinted one, not region 0). */
static void
test_hint_first(void)
{
  char hs[320], hd[320], hm[320];
  snprintf(hs, sizeof hs, "%s/hsrc", dir);
  snprintf(hd, sizeof hd, "%s/hdst", dir);
  snprintf(hm, sizeof hm, "%s/hmap", dir);
  int fd = open(hs, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  unsigned char *b = malloc(1u << 20);
  memset(b, 0x5a, 1u << 20);
  for (int i = 0; i < 32; i++)
    CHECK(pwrite(fd, b, 1u << 20, (off_t)i << 20) == 1 << 20);
  close(fd);
  fd = open(hd, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(ftruncate(fd, 32u << 20) == 0);
  close(fd);
  struct clone_options o;
  clone_options_init(&o);
  o.start_paused = true;
  o.workers = 1;
  o.rate = 2u << 20;
  struct clone *c;
  CHECK(clone_open(hs, hm, hd, &o, &c) == 0);
  if (!c)
    return;
  const uint64_t at = 20u << 20; /* region 320 */
  CHECK(volume_pread(clone_volume(c), b, 4096, at) == 0 && b[0] == 0x5a);
  clone_resume(c);
  struct clone_status st;
  for (int i = 0; i < 500; i++) {
    clone_get_status(c, &st);
    if (st.regions_hydrated > 1)
      break;
    nanosleep(&(struct timespec){ 0, 10000000L }, NULL);
  }
  struct extent_list x = { 0 };
  CHECK(clone_hydrated_extents(c, 65536, at + 65536, &x) == 0);
  CHECK(x.n == 1 && x.v[0].flags == CLONE_EXTENT_HYDRATED); /* next to the read: first */
  extent_list_reset(&x);
  CHECK(clone_hydrated_extents(c, 65536, 0, &x) == 0);
  CHECK(x.n == 1 && x.v[0].flags == 0); /* region 0: not yet */
  extent_list_free(&x);
  CHECK(clone_close(c) == 0);
  free(b);
  unlink(hs);
  unlink(hd);
  unlink(hm);
}

int
main(void)
{
  if (!mkdtemp(dir))
    return 1;
  snprintf(src_path, sizeof src_path, "%s/src", dir);
  snprintf(dst_path, sizeof dst_path, "%s/dst", dir);
  snprintf(map_path, sizeof map_path, "%s/map", dir);
  model = malloc(SIZE);
  unknown = calloc(1, SIZE);
  make_source();

  struct clone_options o;
  clone_options_init(&o);
  o.region_size = REGION;
  o.workers = 4;
  o.request_size = 256u << 10;
  o.new_map = true; /* the destination holds garbage the clone may discard */
  struct clone *c;

  /* 1: copy-on-read only. */
  o.start_paused = true;
  CHECK(clone_open(src_path, map_path, dst_path, &o, &c) == 0);
  if (!c)
    return 1;
  struct clone_status st;
  clone_get_status(c, &st);
  CHECK(st.state == CLONE_PAUSED && st.regions_total == (SIZE + REGION - 1) / REGION);
  run_threads(c, 1, OPS / 5);
  clone_get_status(c, &st);
  CHECK(st.bytes_copied == 0 && st.bytes_fetched > 0);
  uint64_t hydrated1 = st.regions_hydrated;
  CHECK(clone_close(c) == 0);

  /* 2: the map was persisted; hydrator running slowly while the threads work. */
  o.start_paused = false;
  o.rate = 12u << 20;
  o.region_size = 0;
  CHECK(clone_open(src_path, map_path, dst_path, &o, &c) == 0);
  clone_get_status(c, &st);
  CHECK(st.regions_hydrated >= hydrated1 && st.region_size == REGION);
  run_threads(c, 2, OPS / 2);
  clone_pause(c);
  clone_get_status(c, &st);
  /* (the threads may have touched every region already: then it has converged) */
  CHECK(st.state == CLONE_PAUSED || st.state == CLONE_CONVERGED);
  run_threads(c, 3, OPS / 3);
  clone_resume(c);

  /* 3: full speed until converged. */
  clone_set_rate(c, 0);
  run_threads(c, 4, OPS / 3);
  CHECK(clone_wait(c, 30) == 0);
  clone_get_status(c, &st);
  CHECK(st.state == CLONE_CONVERGED && st.regions_hydrated == st.regions_total);
  CHECK(st.bytes_copied > 0 && st.bytes_skipped > 0);
  fprintf(stderr, "copied %llu, fetched %llu, skipped %llu bytes\n",
          (unsigned long long)st.bytes_copied, (unsigned long long)st.bytes_fetched,
          (unsigned long long)st.bytes_skipped);
  struct extent_list hx = { 0 };
  CHECK(clone_hydrated_extents(c, SIZE, 0, &hx) == 0);
  CHECK(hx.n == 1 && hx.v[0].length == SIZE && hx.v[0].flags == CLONE_EXTENT_HYDRATED);
  extent_list_free(&hx);
  run_threads(c, 5, OPS / 3); /* converged: straight to the destination */
  CHECK(clone_close(c) == 0);

  /* 4: the destination alone holds the model; a reopen is converged at once. */
  compare_destination();
  CHECK(unlink(src_path) == 0); /* converged: the source is never read again... */
  int fd = open(src_path, O_CREAT | O_WRONLY, 0644); /* ...but must still match by size */
  CHECK(ftruncate(fd, SIZE) == 0);
  close(fd);
  CHECK(clone_open(src_path, map_path, dst_path, &o, &c) == 0);
  clone_get_status(c, &st);
  CHECK(st.state == CLONE_CONVERGED);
  unsigned char *all = malloc(SIZE);
  CHECK(volume_pread(clone_volume(c), all, SIZE, 0) == 0);
  for (uint64_t i = 0; i < SIZE; i++)
    if (!unknown[i] && all[i] != model[i]) {
      CHECK(!"reopened converged clone differs from the model");
      break;
    }
  free(all);
  CHECK(clone_close(c) == 0);

  test_hint_first();
  unlink(src_path);
  unlink(dst_path);
  unlink(map_path);
  rmdir(dir);
  free(model);
  free(unknown);
  error_clear();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("clone model: all checks passed\n");
  return 0;
}
