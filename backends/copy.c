/* ferry: the copy engine, see copy.h.
 *
 * Each worker owns a request-sized buffer and an extent list.  A range from the work source
 * is walked extent by extent: zero/hole extents become one volume_zero() each (or nothing
 * when the destination is known to be zero), data extents are read and written request by
 * request.  Cleanup style in this file: goto labels.
 */
#include "backends/copy.h"
#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/ratelimit.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Granularity of all-zero detection inside data that was read: small enough to find the
 * zero runs of a typical image, large enough not to fragment the writes. */
#define ZERO_BLOCK (64u << 10)
/* Largest span asked from the source's extents at once. */
#define EXTENTS_WINDOW (1ull << 30)
/* copy_volume hands out ranges of this many requests: zero extents are then zeroed in
 * batches this large, and the work source lock is taken less often. */
#define VOLUME_RANGE_REQUESTS 8
#define BACKOFF_FIRST 0.05
#define BACKOFF_MAX 2.0

/* One thread's copying context (also used by copy_range in the caller's thread). */
struct copier {
  struct volume *src, *dst;
  char *buf;
  size_t buflen;
  struct extent_list ext;
  bool sparse, dst_is_zero;
  unsigned retries;
  struct ratelimit *rate;
  volatile int *stop;
  struct progress *progress;
};

static bool
stopped(const struct copier *c)
{
  return c->stop && *c->stop;
}

/* Sleep `seconds` in short slices so a stop request is honoured quickly. */
static void
backoff(const struct copier *c, double seconds)
{
  double end = now_seconds() + seconds;
  while (!stopped(c)) {
    double left = end - now_seconds();
    if (left <= 0)
      break;
    if (left > 0.01)
      left = 0.01;
    struct timespec ts = { 0, (long)(left * 1e9) };
    nanosleep(&ts, NULL);
  }
}

/* Errors a retry cannot fix: bad range or alignment (our bug), read-only, corrupt data (a
 * compressed image whose frame fails its checks), reads out of order on a stream. */
static bool
permanent(int r)
{
  return r == -ERANGE || r == -EINVAL || r == -EROFS || r == -ENOMEM || r == -EBADMSG ||
         r == -ESPIPE;
}

/* After the last attempt: "SRC: reading N bytes at offset X failed after K attempts: why",
 * without repeating "SRC: " when the driver's message starts with it. */
static int
give_up(struct copier *c, int r, unsigned attempts, const char *what)
{
  const char *why = error_message();
  size_t n = strlen(c->src->name);
  if (strncmp(why, c->src->name, n) == 0 && strncmp(why + n, ": ", 2) == 0)
    why += n + 2;
  return error_set(-r, "%s: %s failed after %u attempt%s: %s", c->src->name, what, attempts,
                   attempts > 1 ? "s" : "", why);
}

static int
read_source(struct copier *c, void *buf, size_t len, uint64_t off)
{
  double delay = BACKOFF_FIRST;
  unsigned attempt = 0;
  int r;
  for (;;) {
    r = volume_pread(c->src, buf, len, off);
    if (r == 0)
      return 0;
    if (permanent(r) || attempt >= c->retries || stopped(c))
      break;
    attempt++;
    debug("copy", "%s: read at %" PRIu64 " failed (%s), retry %u in %.2fs", c->src->name, off,
          error_message(), attempt, delay);
    backoff(c, delay);
    delay = delay * 2 > BACKOFF_MAX ? BACKOFF_MAX : delay * 2;
  }
  char what[96];
  snprintf(what, sizeof what, "reading %zu bytes at offset %" PRIu64, len, off);
  return give_up(c, r, attempt + 1, what);
}

static int
source_extents(struct copier *c, uint64_t len, uint64_t off)
{
  double delay = BACKOFF_FIRST;
  unsigned attempt = 0;
  int r;
  for (;;) {
    extent_list_reset(&c->ext);
    r = volume_extents(c->src, len, off, &c->ext);
    if (r == 0)
      return 0;
    if (permanent(r) || attempt >= c->retries || stopped(c))
      break;
    attempt++;
    debug("copy", "%s: extents at %" PRIu64 " failed (%s), retry %u", c->src->name, off,
          error_message(), attempt);
    backoff(c, delay);
    delay = delay * 2 > BACKOFF_MAX ? BACKOFF_MAX : delay * 2;
  }
  char what[96];
  snprintf(what, sizeof what, "block status of %" PRIu64 " bytes at offset %" PRIu64, len, off);
  return give_up(c, r, attempt + 1, what);
}

static int
zero_out(struct copier *c, uint64_t len, uint64_t off, struct copy_range_result *res)
{
  /* A new destination already reads as zeroes: nothing to send. */
  if (!c->dst_is_zero) {
    int r = volume_zero(c->dst, len, off, VOLUME_MAY_TRIM);
    if (r < 0)
      return r;
  }
  res->bytes_zeroed += len;
  progress_add(c->progress, len);
  return 0;
}

static int
write_out(struct copier *c, const char *buf, size_t len, uint64_t off,
          struct copy_range_result *res)
{
  int r = volume_pwrite(c->dst, buf, len, off, 0);
  if (r < 0)
    return r;
  res->bytes_written += len;
  progress_add(c->progress, len);
  return 0;
}

/* Write what was read: runs of all-zero blocks are zeroed, the rest written. */
static int
write_buffer(struct copier *c, const char *buf, size_t len, uint64_t off,
             struct copy_range_result *res)
{
  if (!c->sparse)
    return write_out(c, buf, len, off, res);
  size_t pos = 0;
  while (pos < len) {
    size_t n = len - pos < ZERO_BLOCK ? len - pos : ZERO_BLOCK;
    bool zero = buffer_is_zero(buf + pos, n);
    size_t end = pos + n;
    while (end < len) {
      size_t m = len - end < ZERO_BLOCK ? len - end : ZERO_BLOCK;
      if (buffer_is_zero(buf + end, m) != zero)
        break;
      end += m;
    }
    int r = zero ? zero_out(c, end - pos, off + pos, res)
                 : write_out(c, buf + pos, end - pos, off + pos, res);
    if (r < 0)
      return r;
    pos = end;
  }
  return 0;
}

static int
copy_data(struct copier *c, uint64_t len, uint64_t off, struct copy_range_result *res)
{
  while (len > 0) {
    if (stopped(c))
      return error_set(ECANCELED, "copy stopped");
    size_t n = (size_t)min_u64(len, c->buflen);
    ratelimit_take(c->rate, n);
    int r = read_source(c, c->buf, n, off);
    if (r < 0)
      return r;
    res->bytes_read += n;
    if ((r = write_buffer(c, c->buf, n, off, res)) < 0)
      return r;
    off += n;
    len -= n;
  }
  return 0;
}

/* Copy [off, off+len): the core shared by the workers and copy_range(). */
static int
copy_one_range(struct copier *c, uint64_t off, uint64_t len, struct copy_range_result *res)
{
  uint64_t end = off + len;
  bool extents = c->sparse && volume_can(c->src, VOLUME_CAN_EXTENTS);
  while (off < end) {
    if (stopped(c))
      return error_set(ECANCELED, "copy stopped");
    if (!extents) {
      uint64_t n = min_u64(end - off, c->buflen);
      int r = copy_data(c, n, off, res);
      if (r < 0)
        return r;
      off += n;
      continue;
    }
    int r = source_extents(c, min_u64(end - off, EXTENTS_WINDOW), off);
    if (r < 0)
      return r;
    uint64_t pos = off;
    for (size_t i = 0; i < c->ext.n && pos < end; i++) {
      const struct extent *e = &c->ext.v[i];
      uint64_t e_end = min_u64(e->offset + e->length, end);
      if (e_end <= pos)
        continue;
      if (e->offset > pos) /* a gap in the driver's answer: ask again from pos */
        break;
      r = (e->flags & EXTENT_ZERO) ? zero_out(c, e_end - pos, pos, res)
                                   : copy_data(c, e_end - pos, pos, res);
      if (r < 0)
        return r;
      pos = e_end;
    }
    if (pos == off)
      return error_set(EIO, "%s: block status at offset %" PRIu64 " made no progress", c->src->name,
                       off);
    off = pos;
  }
  return 0;
}

void
copy_options_init(struct copy_options *o)
{
  memset(o, 0, sizeof *o);
  o->workers = 16;
  o->request_size = COPY_DEFAULT_REQUEST_SIZE;
  o->sparse = true;
  o->retries = 5;
}

static int
check_request_size(struct volume *src, struct volume *dst, uint64_t size)
{
  uint32_t align = src->min_block > dst->min_block ? src->min_block : dst->min_block;
  if (size == 0 || size > (1u << 30) || size % align)
    return error_set(EINVAL, "request size %" PRIu64 " must be a multiple of %u bytes up to 1 GiB",
                     size, align);
  return 0;
}

/* ---- the parallel engine ---- */

struct engine {
  struct volume *src, *dst;
  const struct copy_work *work;
  const struct copy_options *o;
  pthread_mutex_t lock;
  int err;        /* first error, negative errno; 0 */
  char *errmsg;   /* its message, taken from the worker thread */
  bool finished;  /* next() said there is no more work */
  bool cancelled; /* a range was cut short by *stop */
  _Atomic uint64_t bytes_read, bytes_written, bytes_zeroed, requests;
  /* dst->write_window: workers and their ranges, so none starts too far ahead */
  uint64_t window;
  pthread_cond_t range_done;
  struct worker *workers;
  size_t nworkers;
};

struct worker {
  struct engine *e;
  pthread_t thread;
  struct copier c;
  uint64_t active; /* start of the range being copied; UINT64_MAX when none (engine lock) */
};

/* With a write window: wait (engine lock held) until no other worker's unfinished range
 * starts more than the window before `off`.  The worker with the lowest range never waits,
 * so the copy always progresses.  Woken when a range finishes; polls for *stop. */
static void
wait_for_window(struct worker *w, uint64_t off)
{
  struct engine *e = w->e;
  for (;;) {
    uint64_t lowest = UINT64_MAX;
    for (size_t i = 0; i < e->nworkers; i++)
      if (&e->workers[i] != w && e->workers[i].active < lowest)
        lowest = e->workers[i].active;
    if (lowest == UINT64_MAX || off < lowest || off - lowest < e->window || e->err
        || stopped(&w->c))
      return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 20 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&e->range_done, &e->lock, &ts);
  }
}

/* Keep the first error and its message (error_message() is thread-local). */
static void
record_error(struct engine *e, int err)
{
  if (e->err)
    return;
  e->err = err ? err : -EIO;
  e->errmsg = strdup(*error_message() ? error_message() : "unknown error");
}

static void *
worker_main(void *arg)
{
  struct worker *w = arg;
  struct engine *e = w->e;
  /* A driver waiting for a lost connection gives up when the copy is stopped (pause). */
  struct volume_wait_bounds bounds = { 0, w->c.stop };
  volume_set_wait_bounds(&bounds);
  for (;;) {
    uint64_t off = 0, len = 0;
    int r = 0;
    pthread_mutex_lock(&e->lock);
    if (!e->err && !e->finished && !stopped(&w->c)) {
      r = e->work->next(e->work->opaque, &off, &len);
      if (r == 0)
        e->finished = true;
      else if (r < 0)
        record_error(e, r);
    }
    if (r > 0) {
      w->active = off;
      if (e->window)
        wait_for_window(w, off);
    }
    pthread_mutex_unlock(&e->lock);
    if (r <= 0)
      break;

    struct copy_range_result res = { 0, 0, 0 };
    r = copy_one_range(&w->c, off, len, &res);
    atomic_fetch_add(&e->bytes_read, res.bytes_read);
    atomic_fetch_add(&e->bytes_written, res.bytes_written);
    atomic_fetch_add(&e->bytes_zeroed, res.bytes_zeroed);
    if (r == 0)
      atomic_fetch_add(&e->requests, 1);
    if (e->work->done)
      e->work->done(e->work->opaque, off, len, r, &res);
    pthread_mutex_lock(&e->lock);
    w->active = UINT64_MAX;
    if (e->window)
      pthread_cond_broadcast(&e->range_done);
    pthread_mutex_unlock(&e->lock);
    if (r < 0) {
      pthread_mutex_lock(&e->lock);
      if (r == -ECANCELED && stopped(&w->c))
        e->cancelled = true;
      else
        record_error(e, r);
      pthread_mutex_unlock(&e->lock);
      break;
    }
  }
  /* The message (if any) was copied by record_error; a thread-local one would leak. */
  error_clear();
  return NULL;
}

int
copy_run(struct volume *src, struct volume *dst, const struct copy_work *work,
         const struct copy_options *o, struct copy_stats *stats)
{
  struct copy_options defaults;
  if (!o) {
    copy_options_init(&defaults);
    o = &defaults;
  }
  double start = now_seconds();
  struct engine e = { .src = src, .dst = dst, .work = work, .o = o, .window = dst->write_window };
  unsigned nworkers = o->workers ? o->workers : 1;
  /* A stream without a seek table is read in order, by one worker. */
  if (volume_can(src, VOLUME_SEQUENTIAL))
    nworkers = 1;
  size_t started = 0;
  int r = check_request_size(src, dst, o->request_size);
  if (r < 0)
    goto out_stats;
  if (dst->size < src->size) {
    r = error_set(
        ENOSPC, "%s: destination is %" PRIu64 " bytes, smaller than the source (%" PRIu64 " bytes)",
        dst->name, dst->size, src->size);
    goto out_stats;
  }
  struct worker *w = calloc(nworkers, sizeof *w);
  if (!w) {
    r = error_set(ENOMEM, "out of memory for %u copy workers", nworkers);
    goto out_stats;
  }
  pthread_mutex_init(&e.lock, NULL);
  pthread_cond_init(&e.range_done, NULL);
  e.workers = w;
  e.nworkers = nworkers;
  for (size_t i = 0; i < nworkers; i++)
    w[i].active = UINT64_MAX;
  uint32_t align = src->min_block > 4096 ? src->min_block : 4096;
  for (size_t i = 0; i < nworkers; i++) {
    struct copier *c = &w[i].c;
    w[i].e = &e;
    *c = (struct copier){ .src = src,
                          .dst = dst,
                          .buflen = o->request_size,
                          .sparse = o->sparse,
                          .dst_is_zero = o->dst_is_zero,
                          .retries = o->retries,
                          .rate = o->rate,
                          .stop = o->stop,
                          .progress = o->progress };
    void *buf;
    /* Aligned for O_DIRECT volumes, which then need no bounce buffer. */
    if (posix_memalign(&buf, align, o->request_size)) {
      r = error_set(ENOMEM, "out of memory for copy buffers (%u x %" PRIu64 " bytes)", nworkers,
                    o->request_size);
      break;
    }
    c->buf = buf;
    int err = pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
    if (err) {
      free(buf);
      c->buf = NULL;
      if (started == 0)
        r = error_set_errno(err, "cannot start copy workers");
      break; /* fewer workers still copy everything */
    }
    started++;
  }
  if (r < 0 && started > 0) {
    /* Out of memory after some workers started: stop handing out work, then report. */
    pthread_mutex_lock(&e.lock);
    record_error(&e, r);
    pthread_mutex_unlock(&e.lock);
  }
  for (size_t i = 0; i < started; i++)
    pthread_join(w[i].thread, NULL);
  for (size_t i = 0; i < nworkers; i++) {
    free(w[i].c.buf);
    extent_list_free(&w[i].c.ext);
  }
  free(w);
  pthread_cond_destroy(&e.range_done);
  pthread_mutex_destroy(&e.lock);
  if (started > 0) {
    if (e.err)
      r = error_set(-e.err, "%s", e.errmsg ? e.errmsg : "copy failed");
    else if (e.cancelled || !e.finished)
      r = error_set(ECANCELED, "copy stopped");
    else
      r = 0;
  }
  free(e.errmsg);

out_stats:
  if (stats) {
    stats->bytes_read = atomic_load(&e.bytes_read);
    stats->bytes_written = atomic_load(&e.bytes_written);
    stats->bytes_zeroed = atomic_load(&e.bytes_zeroed);
    stats->requests = atomic_load(&e.requests);
    stats->seconds = now_seconds() - start;
  }
  return r;
}

/* The work source of copy_volume: the whole volume in order. */
struct sequential {
  uint64_t next, size, step;
};

static int
sequential_next(void *opaque, uint64_t *off, uint64_t *len)
{
  struct sequential *s = opaque;
  if (s->next >= s->size)
    return 0;
  *off = s->next;
  *len = min_u64(s->step, s->size - s->next);
  s->next += *len;
  return 1;
}

int
copy_volume(struct volume *src, struct volume *dst, const struct copy_options *o,
            struct copy_stats *stats)
{
  struct copy_options defaults;
  if (!o) {
    copy_options_init(&defaults);
    o = &defaults;
  }
  struct sequential s = { 0, src->size, o->request_size * VOLUME_RANGE_REQUESTS };
  struct copy_work work = { .next = sequential_next, .opaque = &s };
  debug("copy", "%s -> %s: %" PRIu64 " bytes, %u workers, %" PRIu64 "-byte requests%s", src->name,
        dst->name, src->size, o->workers, o->request_size, o->sparse ? ", sparse" : "");
  return copy_run(src, dst, &work, o, stats);
}

int
copy_range(struct volume *src, struct volume *dst, uint64_t off, uint64_t len, void *buf,
           size_t buflen, bool sparse, struct copy_range_result *res)
{
  struct copy_options defaults;
  copy_options_init(&defaults);
  struct copy_range_result local = { 0, 0, 0 };
  struct copier c = { .src = src,
                      .dst = dst,
                      .buf = buf,
                      .buflen = buflen,
                      .sparse = sparse,
                      .retries = defaults.retries };
  int r = check_request_size(src, dst, buflen);
  if (r == 0)
    r = copy_one_range(&c, off, len, res ? res : &local);
  extent_list_free(&c.ext);
  return r;
}
