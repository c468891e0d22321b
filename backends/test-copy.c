/* Unit test of the copy engine's contract (copy.h) as the hydrator uses it: a custom work
 * source handing out ranges out of order, the done callback, errors from next() and from
 * worker threads reaching the caller, the stop flag, copy_range.  Real files in a temp dir. */
#include "backends/copy.h"
#include "common/error.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MiB (1u << 20)
#define SIZE (24 * MiB + 12288)

static char dir[] = "/tmp/ferry-test-copy.XXXXXX";
static char src_path[64], dst_path[64];
static int failures;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: CHECK failed: %s (error: %s)\n", __FILE__, __LINE__, #cond,          \
              error_message());                                                                    \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static void
make_source(void)
{
  int fd = open(src_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || ftruncate(fd, SIZE) < 0)
    abort();
  char *buf = malloc(MiB);
  unsigned seed = 7;
  /* Every third MiB a hole, every fifth written zeroes, the rest pseudo-random. */
  for (unsigned i = 0; i < SIZE / MiB; i++) {
    if (i % 3 == 1)
      continue;
    for (unsigned j = 0; j < MiB; j++)
      buf[j] = i % 5 == 2 ? 0 : (char)(seed = seed * 1103515245 + 12345) >> 16;
    if (pwrite(fd, buf, MiB, (off_t)i * MiB) != MiB)
      abort();
  }
  memset(buf, 0x5a, 12288);
  if (pwrite(fd, buf, 12288, SIZE - 12288) != 12288)
    abort();
  free(buf);
  close(fd);
}

static struct volume *
open_file(const char *path, bool readonly, uint64_t create_size)
{
  struct volume_options o;
  volume_options_init(&o);
  o.readonly = readonly;
  o.create = create_size > 0;
  o.create_size = create_size;
  struct volume *v;
  if (volume_open(path, &o, &v) < 0) {
    fprintf(stderr, "%s\n", error_message());
    abort();
  }
  return v;
}

static bool
files_equal(void)
{
  FILE *a = fopen(src_path, "rb"), *b = fopen(dst_path, "rb");
  int ca, cb;
  bool same = a && b;
  while (same && (ca = getc(a)) != EOF) {
    cb = getc(b);
    same = ca == cb;
  }
  if (a)
    fclose(a);
  if (b)
    fclose(b);
  return same;
}

/* Work source: fixed-size ranges handed out from the end backwards. */
struct backwards {
  uint64_t step, next_end;
  pthread_mutex_t lock;
  uint64_t done_bytes, done_calls, failed_calls, cancelled_calls;
  int fail_at; /* > 0: next() fails on this call */
  int calls;
  volatile int *stop_after_first;
};

static int
backwards_next(void *opaque, uint64_t *off, uint64_t *len)
{
  struct backwards *w = opaque;
  if (w->fail_at && ++w->calls == w->fail_at)
    return error_set(EPROTO, "work source broke at call %d", w->calls);
  if (w->next_end == 0)
    return 0;
  uint64_t start = w->next_end > w->step ? w->next_end - w->step : 0;
  *off = start;
  *len = w->next_end - start;
  w->next_end = start;
  return 1;
}

static void
backwards_done(void *opaque, uint64_t off, uint64_t len, int err,
               const struct copy_range_result *res)
{
  struct backwards *w = opaque;
  (void)off;
  pthread_mutex_lock(&w->lock);
  if (err == 0) {
    w->done_bytes += len;
    w->done_calls++;
    if (res->bytes_written + res->bytes_zeroed != len)
      w->failed_calls += 1000; /* accounting broken */
  } else if (err == -ECANCELED)
    w->cancelled_calls++;
  else
    w->failed_calls++;
  if (w->stop_after_first)
    *w->stop_after_first = 1;
  pthread_mutex_unlock(&w->lock);
}

static void
test_out_of_order(void)
{
  unlink(dst_path);
  struct volume *src = open_file(src_path, true, 0);
  struct volume *dst = open_file(dst_path, false, SIZE);
  /* 3 MiB + 4 KiB ranges: never aligned to the 1 MiB request size. */
  struct backwards w = { .step = 3 * MiB + 4096, .next_end = SIZE };
  pthread_mutex_init(&w.lock, NULL);
  struct copy_work work = { backwards_next, backwards_done, &w };
  struct copy_options o;
  copy_options_init(&o);
  o.workers = 5;
  o.request_size = MiB;
  struct copy_stats st;
  CHECK(copy_run(src, dst, &work, &o, &st) == 0);
  CHECK(w.done_bytes == SIZE);
  CHECK(w.failed_calls == 0);
  CHECK(st.requests == w.done_calls);
  CHECK(st.bytes_written + st.bytes_zeroed == SIZE);
  CHECK(st.bytes_read < SIZE); /* holes were not read */
  CHECK(volume_flush(dst) == 0);
  volume_close(dst);
  volume_close(src);
  CHECK(files_equal());
  pthread_mutex_destroy(&w.lock);
}

static void
test_next_error(void)
{
  struct volume *src = open_file(src_path, true, 0);
  struct volume *dst = open_file(dst_path, false, 0);
  struct backwards w = { .step = MiB, .next_end = SIZE, .fail_at = 4 };
  pthread_mutex_init(&w.lock, NULL);
  struct copy_work work = { backwards_next, backwards_done, &w };
  struct copy_options o;
  copy_options_init(&o);
  o.workers = 3;
  error_clear();
  CHECK(copy_run(src, dst, &work, &o, NULL) == -EPROTO);
  CHECK(strcmp(error_message(), "work source broke at call 4") == 0);
  volume_close(dst);
  volume_close(src);
  pthread_mutex_destroy(&w.lock);
}

/* A write refused in a worker thread: its message reaches this thread. */
static void
test_worker_error(void)
{
  struct volume *src = open_file(src_path, true, 0);
  struct volume *dst = open_file(dst_path, true, 0);
  struct backwards w = { .step = MiB, .next_end = SIZE };
  pthread_mutex_init(&w.lock, NULL);
  struct copy_work work = { backwards_next, backwards_done, &w };
  error_clear();
  CHECK(copy_run(src, dst, &work, NULL, NULL) == -EROFS);
  CHECK(strstr(error_message(), "the volume is read-only") != NULL);
  CHECK(strstr(error_message(), dst_path) != NULL);
  CHECK(w.failed_calls > 0);
  volume_close(dst);
  volume_close(src);
  pthread_mutex_destroy(&w.lock);
}

static void
test_stop(void)
{
  struct volume *src = open_file(src_path, true, 0);
  struct volume *dst = open_file(dst_path, false, 0);
  volatile int stop = 0;
  struct backwards w = { .step = MiB, .next_end = SIZE, .stop_after_first = &stop };
  pthread_mutex_init(&w.lock, NULL);
  struct copy_work work = { backwards_next, backwards_done, &w };
  struct copy_options o;
  copy_options_init(&o);
  o.workers = 2;
  o.stop = &stop;
  error_clear();
  CHECK(copy_run(src, dst, &work, &o, NULL) == -ECANCELED);
  CHECK(strcmp(error_message(), "copy stopped") == 0);
  CHECK(w.done_bytes < SIZE);
  CHECK(w.failed_calls == 0);
  volume_close(dst);
  volume_close(src);
  pthread_mutex_destroy(&w.lock);
}

static void
test_copy_range_and_size(void)
{
  struct volume *src = open_file(src_path, true, 0);
  struct volume *dst = open_file(dst_path, false, 0);
  void *buf = malloc(256 * 1024);
  struct copy_range_result res = { 0, 0, 0 };
  /* Chunk 1 is a hole, chunk 2 written zeroes, 3 data. */
  CHECK(copy_range(src, dst, MiB, 3 * MiB, buf, 256 * 1024, true, &res) == 0);
  CHECK(res.bytes_read == 2 * MiB);
  CHECK(res.bytes_zeroed == 2 * MiB);
  CHECK(res.bytes_written == MiB);
  CHECK(copy_range(src, dst, 0, MiB, buf, 0, true, NULL) == -EINVAL);
  free(buf);
  volume_close(dst);

  /* A smaller destination is refused before any worker starts. */
  unlink(dst_path);
  dst = open_file(dst_path, false, SIZE - 4096);
  error_clear();
  CHECK(copy_volume(src, dst, NULL, NULL) == -ENOSPC);
  CHECK(strstr(error_message(), "smaller than the source") != NULL);
  volume_close(dst);
  volume_close(src);
}

int
main(void)
{
  if (!mkdtemp(dir))
    return 1;
  snprintf(src_path, sizeof src_path, "%s/src", dir);
  snprintf(dst_path, sizeof dst_path, "%s/dst", dir);
  make_source();
  test_out_of_order();
  test_next_error();
  test_worker_error();
  test_stop();
  test_copy_range_and_size();
  unlink(src_path);
  unlink(dst_path);
  rmdir(dir);
  error_clear();
  if (failures)
    fprintf(stderr, "%d failures\n", failures);
  else
    printf("copy engine ok\n");
  return failures ? 1 : 0;
}
