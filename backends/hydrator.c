/* ferry: the clone's hydrator — background copy of the regions the map still lacks.
 *
 * It drives the copy engine (copy.h) with a work source over the unhydrated regions, in large
 * batches, taking regions near recent on-demand reads first.  The engine writes into a thin
 * "target" volume rather than the destination itself: the target takes each region's lock and
 * drops the write when the region got hydrated meanwhile (a guest write or an on-demand fetch
 * won the race), so source data never overwrites newer data.  Zero/hole extents are zeroed
 * by the engine through the same target (no transfer).  The done callback marks the regions;
 * the clone's commit (destination flush, then map) makes them durable.
 *
 * No double reads: the engine reads through a "view" of the source that reads only regions
 * still unhydrated and not being fetched on demand right now (others are filled with zeroes
 * that the target drops: a hydrated region's bit never clears, and a region skipped for an
 * on-demand fetch is marked "skipped", written by nobody here and left for a later round if
 * the fetch failed).  The regions the view is reading are marked "fetching": an on-demand
 * read of one of them waits for the hydrator's copy instead of fetching it again
 * (hydrator_wait_region).  So a region crosses the link once.  bytes_copied counts what the
 * view read; bytes_skipped the regions marked here without any byte read (zero extents).
 *
 * Failures: the engine's error is kept; the hydrator retries with a growing pause and, after
 * MAX_ATTEMPTS rounds without progress, enters state "failed" (resume or a restart retries).
 * A source that is lost (its driver reconnecting, volume_health) is not a failure: the
 * hydrator waits for it to come back and carries on by itself.
 */
#include "backends/clone-internal.h"
#include "backends/copy.h"
#include "common/error.h"
#include "common/log.h"
#include "common/ratelimit.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_ATTEMPTS 5
#define BATCH_BYTES (16u << 20)     /* one work item: contiguous unhydrated regions */
#define HINT_BATCH_BYTES (1u << 20) /* near an on-demand read: smaller, sooner */
#define HINT_WINDOW_BYTES (8u << 20)

struct hydrator;

struct target {
  struct volume v;
  struct clone *c;
  struct hydrator *h;
};

/* The source as the engine sees it (see the top of the file). */
struct view {
  struct volume v;
  struct hydrator *h;
};

struct hydrator {
  struct clone *c;
  struct target target;
  struct view view;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  pthread_cond_t landed; /* regions got marked, or a read of fetching ones ended */
  uint64_t *fetching;    /* bits: regions the view is reading (or read) in a running range */
  uint64_t *skipped;     /* bits: regions the view did not read (fetched on demand) */
  bool paused, stop;
  bool halted;            /* hydrator_halt: the thread has been joined */
  volatile int stop_copy; /* tells the copy engine to finish early */
  struct ratelimit *rl;
  uint64_t *claimed; /* regions handed to the engine and not done yet (under lock) */
  uint64_t cursor;
  unsigned attempts;
  char error[512]; /* first failure of the current round */
};

/* ---- the target volume: the destination, guarded by the region locks ---- */

typedef int (*run_fn)(struct clone *c, const char *data, uint64_t n, uint64_t off, unsigned flags);

/* Lock the regions first..last (at most CLONE_LOCKS of them, so their locks are distinct) in
 * ascending lock-index order.  Every thread that holds more than one region lock takes them
 * in that global order, and the guest paths hold one at a time: no deadlock. */
static void
lock_regions(struct clone *c, uint64_t first, uint64_t last, bool lock)
{
  uint64_t n = last - first + 1, a = first % CLONE_LOCKS;
  uint64_t wrap = a + n > CLONE_LOCKS ? a + n - CLONE_LOCKS : 0;
  for (uint64_t i = 0; i < wrap; i++)
    (lock ? clone_lock_slot : clone_unlock_slot)(&c->locks[i]);
  for (uint64_t i = a; i < a + n - wrap; i++)
    (lock ? clone_lock_slot : clone_unlock_slot)(&c->locks[i]);
}

static void
landed(struct hydrator *h)
{
  pthread_mutex_lock(&h->lock);
  pthread_cond_broadcast(&h->landed);
  pthread_mutex_unlock(&h->lock);
}

/* Mark a region the hydrator copied; bytes_skipped counts it when no byte was read. */
static void
mark_copied(struct hydrator *h, uint64_t region)
{
  struct clone *c = h->c;
  if (regionmap_mark(c->map, region) && !clone_bit_test(h->fetching, region))
    __atomic_fetch_add(&c->bytes_skipped, clone_region_length(c, region), __ATOMIC_RELAXED);
}

/* Regions the target must not write: hydrated meanwhile, or skipped by the view. */
static bool
keep_out(struct hydrator *h, uint64_t region)
{
  return regionmap_test(h->c->map, region) || clone_bit_test(h->skipped, region);
}

/* The bytes this engine worker has written (or dropped for keep_out regions) contiguously:
 * a region is marked as soon as the span covers it, even when its bytes came in several
 * pieces (data and zero runs of one request, or a region larger than a request), instead of
 * waiting for the end of the whole range (work_done) while readers wait for it.  Only the
 * hydrator writes an unhydrated region (under its lock), so a covered one is complete.
 * Reset when a write fails and at the end of every range. */
static _Thread_local uint64_t span_start = UINT64_MAX, span_end = UINT64_MAX;

static void
span_reset(void)
{
  span_start = span_end = UINT64_MAX;
}

/* Apply fn to the parts of [off, off+len) whose regions are not hydrated, with their locks
 * held (re-checked under the locks: a guest write or an on-demand fetch may have won), in
 * runs as long as possible.  A region the worker's span covers whole is marked at once,
 * still under its lock and after the write: a crash then loses at most the requests in
 * flight and what the last commit did not cover. */
static int
guarded(struct hydrator *h, const char *data, uint64_t len, uint64_t off, unsigned flags, run_fn fn)
{
  struct clone *c = h->c;
  int r = 0;
  const uint64_t base = off;
  bool marked = false;
  if (off != span_end)
    span_start = off;
  span_end = off + len;
  while (len > 0 && r == 0) {
    uint64_t first = off >> c->shift;
    uint64_t end = min_u64(off + len, clone_region_offset(c, first + CLONE_LOCKS));
    uint64_t last = (end - 1) >> c->shift;
    lock_regions(c, first, last, true);
    uint64_t pos = off;
    while (pos < end && r == 0) {
      uint64_t region = pos >> c->shift;
      uint64_t next = min_u64(end, clone_region_offset(c, region + 1));
      if (keep_out(h, region)) {
        pos = next;
        continue;
      }
      uint64_t run_end = next;
      while (run_end < end && !keep_out(h, run_end >> c->shift))
        run_end = min_u64(end, clone_region_offset(c, (run_end >> c->shift) + 1));
      r = fn(c, data ? data + (pos - base) : NULL, run_end - pos, pos, flags);
      pos = run_end;
    }
    /* Regions that end in this window and that the span covers from their start: complete.
     * Marked under their lock, after the write (a lock-free writer then sees the bit only
     * after the fill it must not race with). */
    for (uint64_t k = first; r == 0 && k <= last; k++) {
      uint64_t ks = clone_region_offset(c, k), ke = ks + clone_region_length(c, k);
      if (ke <= end && ke > off && ks >= span_start && !keep_out(h, k)) {
        mark_copied(h, k);
        marked = true;
      }
    }
    lock_regions(c, first, last, false);
    len -= end - off;
    off = end;
  }
  if (r < 0)
    span_reset();
  if (marked)
    landed(h); /* on-demand readers waiting for these regions */
  return r;
}

static int
run_write(struct clone *c, const char *data, uint64_t n, uint64_t off, unsigned flags)
{
  (void)flags;
  /* Bulk: a file destination drops what the hydrator wrote from the page cache once it is
   * written back.  Left there, its 1 MiB writes stay cached as large folios, and every 4 KiB
   * write the guest makes later (ext4, Linux 6.x) walks the whole folio's buffer heads:
   * a converged clone (or the plain file after it) wrote 4 KiB at QD32 4x slower than the
   * same file uncached (docs/PERFORMANCE.md, bench/serve). */
  return volume_pwrite(c->dst, data, n, off, VOLUME_BULK);
}

static int
run_zero(struct clone *c, const char *data, uint64_t n, uint64_t off, unsigned flags)
{
  (void)data;
  return volume_zero(c->dst, n, off, flags & (VOLUME_MAY_TRIM | VOLUME_FAST_ZERO));
}

static int
target_pwrite(struct volume *v, const void *buf, size_t len, uint64_t off, unsigned flags)
{
  return guarded(((struct target *)v)->h, buf, len, off, flags, run_write);
}

static int
target_zero(struct volume *v, uint64_t len, uint64_t off, unsigned flags)
{
  return guarded(((struct target *)v)->h, NULL, len, off, flags, run_zero);
}

static int
target_pread(struct volume *v, void *buf, size_t len, uint64_t off)
{
  return volume_pread(((struct target *)v)->c->dst, buf, len, off);
}

/* The hydrator commits through clone_commit; the engine never flushes. */
static int
target_flush(struct volume *v)
{
  (void)v;
  return 0;
}

static void
target_close(struct volume *v)
{
  free(v->name);
  v->name = NULL;
}

static const struct volume_ops target_ops = {
  .driver = "clone-target",
  .pread = target_pread,
  .pwrite = target_pwrite,
  .zero = target_zero,
  .flush = target_flush,
  .close = target_close,
};

/* ---- the source view ---- */

/* Does the view read this region, or fill it with zeroes the target will drop? */
static bool
view_reads(struct hydrator *h, uint64_t region)
{
  struct clone *c = h->c;
  if (regionmap_test(c->map, region))
    return false; /* hydrated: its bit never clears, the target drops the zeroes */
  if (clone_bit_test(c->ondemand, region)) {
    clone_bit_set(h->skipped, region); /* an on-demand fetch has it: not ours */
    return false;
  }
  clone_bit_set(h->fetching, region);
  return true;
}

static int
view_pread(struct volume *v, void *buf, size_t len, uint64_t off)
{
  struct hydrator *h = ((struct view *)v)->h;
  struct clone *c = h->c;
  char *out = buf;
  uint64_t pos = off, end = off + len;
  /* view_reads decides once per region: a run of regions to read, then the one that ended
   * it (if any) is filled. */
  bool fill = false;
  while (pos < end) {
    uint64_t region = pos >> c->shift;
    uint64_t next = min_u64(end, clone_region_offset(c, region + 1));
    if (fill || !view_reads(h, region)) {
      memset(out + (pos - off), 0, next - pos);
      pos = next;
      fill = false;
      continue;
    }
    uint64_t run_end = next;
    while (run_end < end && !fill) {
      if (view_reads(h, run_end >> c->shift))
        run_end = min_u64(end, clone_region_offset(c, (run_end >> c->shift) + 1));
      else
        fill = true;
    }
    int r = volume_pread(c->src, out + (pos - off), run_end - pos, pos);
    if (r < 0) {
      /* Not ours any more: readers waiting for these regions fetch them themselves. */
      for (uint64_t k = region; k <= (run_end - 1) >> c->shift; k++)
        clone_bit_clear(h->fetching, k);
      landed(h);
      return r;
    }
    __atomic_fetch_add(&c->bytes_copied, run_end - pos, __ATOMIC_RELAXED);
    pos = run_end;
  }
  return 0;
}

static int
view_extents(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out)
{
  return volume_extents(((struct view *)v)->h->c->src, len, off, out);
}

static void
view_close(struct volume *v)
{
  free(v->name);
  v->name = NULL;
}

static const struct volume_ops view_ops = {
  .driver = "clone-source-view",
  .pread = view_pread,
  .extents = view_extents,
  .close = view_close,
};

/* Longest an on-demand read waits for the hydrator's copy of its region before fetching it
 * itself: the copy of one request lands within a round trip and its transfer time; beyond
 * that the hydrator is held back (rate limit, a slow link) and the reader must not be. */
#define WAIT_FOR_COPY 2.0

bool
hydrator_fetching(struct hydrator *h, uint64_t region)
{
  return clone_bit_test(h->fetching, region) && !regionmap_test(h->c->map, region);
}

void
hydrator_wait_region(struct hydrator *h, uint64_t region, double deadline)
{
  if (!hydrator_fetching(h, region))
    return;
  double t0 = now_seconds();
  if (deadline > t0 + WAIT_FOR_COPY)
    deadline = t0 + WAIT_FOR_COPY;
  pthread_mutex_lock(&h->lock);
  while (hydrator_fetching(h, region)) {
    double now = now_seconds();
    if (now >= deadline)
      break;
    double t = now + (deadline - now < 1.0 ? deadline - now : 1.0);
    struct timespec ts = { (time_t)t, (long)((t - (double)(time_t)t) * 1e9) };
    pthread_cond_timedwait(&h->landed, &h->lock, &ts);
  }
  pthread_mutex_unlock(&h->lock);
  debug("hydrator", "region %" PRIu64 ": waited %.3f s for the hydrator's copy", region,
        now_seconds() - t0);
}

/* ---- work source ---- */

static bool
claimed(const struct hydrator *h, uint64_t r)
{
  return (h->claimed[r / 64] >> (r % 64)) & 1;
}

static void
set_claimed(struct hydrator *h, uint64_t first, uint64_t n, bool on)
{
  for (uint64_t r = first; r < first + n; r++) {
    if (on)
      h->claimed[r / 64] |= 1ull << (r % 64);
    else
      h->claimed[r / 64] &= ~(1ull << (r % 64));
  }
}

/* First region in [from, to) neither hydrated nor claimed; `to` when none. */
static uint64_t
find_free(struct hydrator *h, uint64_t from, uint64_t to)
{
  struct clone *c = h->c;
  for (uint64_t r = regionmap_next_clear(c->map, from); r < to;
       r = regionmap_next_clear(c->map, r + 1))
    if (!claimed(h, r))
      return r;
  return to;
}

static int
take_run(struct hydrator *h, uint64_t first, uint64_t max_bytes, uint64_t *off, uint64_t *len)
{
  struct clone *c = h->c;
  uint64_t max_regions = max_bytes >> c->shift ? max_bytes >> c->shift : 1;
  uint64_t n = 1;
  while (n < max_regions && first + n < c->regions && !regionmap_test(c->map, first + n)
         && !claimed(h, first + n))
    n++;
  set_claimed(h, first, n, true);
  *off = clone_region_offset(c, first);
  *len = min_u64(c->v.size, clone_region_offset(c, first + n)) - *off;
  return 1;
}

static int
work_next(void *opaque, uint64_t *off, uint64_t *len)
{
  struct hydrator *h = opaque;
  struct clone *c = h->c;
  int r = 0;
  pthread_mutex_lock(&h->lock);
  if (h->stop_copy)
    goto out;
  /* Regions just after recent on-demand reads first: the guest is likely to go on there. */
  uint64_t hint;
  while (clone_take_hint(c, &hint)) {
    if (hint >= c->regions)
      continue;
    uint64_t window = min_u64(c->regions, hint + (HINT_WINDOW_BYTES >> c->shift) + 1);
    uint64_t first = find_free(h, hint, window);
    if (first < window) {
      debug("hydrator", "region %" PRIu64 " first (near an on-demand read)", first);
      r = take_run(h, first, HINT_BATCH_BYTES, off, len);
      goto out;
    }
  }
  /* Then in order from where the last batch ended, wrapping around once. */
  uint64_t first = find_free(h, h->cursor, c->regions);
  if (first == c->regions) {
    first = find_free(h, 0, h->cursor);
    if (first == h->cursor)
      goto out; /* nothing left that is not already being copied */
  }
  r = take_run(h, first, BATCH_BYTES, off, len);
  h->cursor = (*off + *len) >> c->shift;
  if (h->cursor >= c->regions)
    h->cursor = 0;
out:
  pthread_mutex_unlock(&h->lock);
  return r;
}

static void
work_done(void *opaque, uint64_t off, uint64_t len, int err, const struct copy_range_result *res)
{
  struct hydrator *h = opaque;
  struct clone *c = h->c;
  uint64_t first = off >> c->shift, last = (off + len - 1) >> c->shift;
  (void)res; /* the view and mark_copied count what crossed the link and what did not */
  span_reset();
  if (err == 0) {
    /* The range's data is written (not yet durable): mark under each region's lock so a
     * lock-free writer only ever sees the bit after the fill it must not race with.
     * Regions the view skipped were not written here: they are not ours to mark. */
    for (uint64_t r = first; r <= last; r++) {
      if (clone_bit_test(h->skipped, r))
        continue;
      struct clone_lock *lk = clone_region_lock(c, r);
      clone_lock_slot(lk);
      mark_copied(h, r);
      clone_unlock_slot(lk);
    }
  }
  for (uint64_t r = first; r <= last; r++) {
    clone_bit_clear(h->fetching, r);
    clone_bit_clear(h->skipped, r);
  }
  pthread_mutex_lock(&h->lock);
  pthread_cond_broadcast(&h->landed);
  if (err < 0 && !h->error[0])
    snprintf(h->error, sizeof h->error, "%s",
             error_message()[0] ? error_message() : strerror(-err));
  set_claimed(h, first, last - first + 1, false);
  pthread_mutex_unlock(&h->lock);
}

/* ---- the hydrator thread ---- */

/* Wait on h->wake for up to `seconds` (< 0: until woken); h->lock held. */
static void
wait_locked(struct hydrator *h, double seconds)
{
  if (seconds < 0) {
    pthread_cond_wait(&h->wake, &h->lock);
    return;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  double t = (double)ts.tv_sec + ts.tv_nsec / 1e9 + seconds;
  ts.tv_sec = (time_t)t;
  ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
  pthread_cond_timedwait(&h->wake, &h->lock, &ts);
}

static void *
hydrator_main(void *opaque)
{
  struct hydrator *h = opaque;
  struct clone *c = h->c;
  const struct copy_work work = { work_next, work_done, h };
  for (;;) {
    pthread_mutex_lock(&h->lock);
    while (h->paused && !h->stop)
      wait_locked(h, -1);
    bool stop = h->stop;
    h->stop_copy = 0;
    h->error[0] = 0;
    pthread_mutex_unlock(&h->lock);
    if (stop)
      break;
    if (regionmap_complete(c->map)) {
      /* The last commit: destination flush, then the full map; then converged. */
      if (clone_commit(c) < 0 || c->converged)
        break;
    }

    uint64_t before = regionmap_count(c->map);
    struct copy_options co;
    copy_options_init(&co);
    if (c->opts.workers)
      co.workers = c->opts.workers;
    if (c->opts.request_size)
      co.request_size = c->opts.request_size;
    co.rate = h->rl;
    co.stop = &h->stop_copy;
    co.sparse = true;
    struct copy_stats st;
    memset(&st, 0, sizeof st);
    int r = copy_run(&h->view.v, &h->target.v, &work, &co, &st);
    if (r < 0) {
      pthread_mutex_lock(&h->lock);
      if (!h->error[0])
        snprintf(h->error, sizeof h->error, "%s", error_message());
      pthread_mutex_unlock(&h->lock);
    }
    /* Whatever the engine finished is written; make it durable and record it. */
    if (clone_commit(c) < 0)
      break; /* fail mode: state failed with the reason, never silently back to work */

    pthread_mutex_lock(&h->lock);
    memset(h->claimed, 0, ((c->regions + 63) / 64) * 8);
    bool interrupted = h->stop || h->paused;
    bool progress = regionmap_count(c->map) > before;
    bool failed_round = h->error[0] != 0 || !progress;
    char why[400];
    if (!interrupted && failed_round && !regionmap_complete(c->map)
        && volume_health(c->src, why, sizeof why) != 0) {
      /* The source is lost and its driver reconnects: wait for it, however long (status
       * says "reconnecting"); this is not a failed attempt. */
      debug("hydrator", "%s: source lost (%s): waiting for it", c->v.name, why);
      while (!h->stop && !h->paused && volume_health(c->src, why, sizeof why) != 0)
        wait_locked(h, 0.2);
      h->attempts = 0;
    } else if (!interrupted && failed_round && !regionmap_complete(c->map)) {
      if (progress)
        h->attempts = 0;
      h->attempts++;
      char msg[700];
      snprintf(msg, sizeof msg, "%s: hydration %s (attempt %u of %d): %s", c->v.name,
               h->attempts >= MAX_ATTEMPTS ? "failed" : "interrupted", h->attempts, MAX_ATTEMPTS,
               h->error[0] ? h->error : "no progress");
      if (h->attempts >= MAX_ATTEMPTS) {
        pthread_mutex_unlock(&h->lock);
        clone_set_error(c, true, msg);
        pthread_mutex_lock(&h->lock);
        /* Failed: stay idle until resume (or stop); a restart of the process also resumes. */
        h->paused = true;
        while (h->paused && !h->stop)
          wait_locked(h, -1);
        h->attempts = 0;
      } else {
        pthread_mutex_unlock(&h->lock);
        clone_set_error(c, false, msg);
        pthread_mutex_lock(&h->lock);
        wait_locked(h, 0.1 * (double)(1u << (h->attempts - 1)));
      }
    } else if (progress) {
      h->attempts = 0;
    }
    pthread_mutex_unlock(&h->lock);
  }
  error_clear(); /* thread-local message: would leak with the thread */
  return NULL;
}

int
hydrator_start(struct clone *c, struct hydrator **out)
{
  struct hydrator *h = calloc(1, sizeof *h);
  if (!h)
    return error_set(ENOMEM, "out of memory");
  h->c = c;
  h->claimed = calloc((c->regions + 63) / 64 + 1, 8);
  h->fetching = calloc((c->regions + 63) / 64 + 1, 8);
  h->skipped = calloc((c->regions + 63) / 64 + 1, 8);
  h->rl = ratelimit_new(c->opts.rate);
  h->paused = c->opts.start_paused;
  pthread_mutex_init(&h->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->wake, &ca);
  pthread_cond_init(&h->landed, &ca);
  pthread_condattr_destroy(&ca);
  struct volume *t = &h->target.v;
  h->target.c = c;
  h->target.h = h;
  struct volume *sv = &h->view.v;
  h->view.h = h;
  sv->min_block = c->src->min_block;
  sv->preferred_block = c->src->preferred_block;
  sv->max_request = c->src->max_request;
  sv->caps = c->src->caps & (VOLUME_CAN_EXTENTS | VOLUME_MULTI_CONN);
  t->min_block = c->dst->min_block;
  t->max_request = 64u << 20;
  t->caps = VOLUME_CAN_WRITE | VOLUME_CAN_ZERO | VOLUME_CAN_FLUSH | VOLUME_MULTI_CONN
            | (c->dst->caps & VOLUME_CAN_FAST_ZERO);
  int r = 0;
  if (!h->claimed || !h->fetching || !h->skipped || !h->rl)
    r = error_set(ENOMEM, "out of memory");
  else if (volume_init(t, &target_ops, c->dst->name, c->v.size) < 0
           || volume_init(sv, &view_ops, c->src->name, c->v.size) < 0)
    r = -ENOMEM;
  else if (pthread_create(&h->thread, NULL, hydrator_main, h) != 0)
    r = error_set(EAGAIN, "%s: cannot start the hydrator thread", c->v.name);
  if (r < 0) {
    target_close(t);
    view_close(sv);
    ratelimit_free(h->rl);
    free(h->claimed);
    free(h->fetching);
    free(h->skipped);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->wake);
    pthread_cond_destroy(&h->landed);
    free(h);
    return r;
  }
  *out = h;
  return 0;
}

void
hydrator_halt(struct hydrator *h)
{
  pthread_mutex_lock(&h->lock);
  bool running = !h->halted;
  h->stop = true;
  h->stop_copy = 1;
  h->halted = true;
  pthread_cond_broadcast(&h->wake);
  pthread_mutex_unlock(&h->lock);
  ratelimit_wake(h->rl);
  if (running)
    pthread_join(h->thread, NULL);
}

void
hydrator_stop(struct hydrator *h)
{
  hydrator_halt(h);
  target_close(&h->target.v);
  view_close(&h->view.v);
  ratelimit_free(h->rl);
  free(h->claimed);
  free(h->fetching);
  free(h->skipped);
  pthread_mutex_destroy(&h->lock);
  pthread_cond_destroy(&h->wake);
  pthread_cond_destroy(&h->landed);
  free(h);
}

void
hydrator_pause(struct hydrator *h)
{
  pthread_mutex_lock(&h->lock);
  h->paused = true;
  h->stop_copy = 1;
  pthread_mutex_unlock(&h->lock);
  ratelimit_wake(h->rl);
  clone_set_state(h->c, CLONE_PAUSED);
}

void
hydrator_resume(struct hydrator *h)
{
  pthread_mutex_lock(&h->lock);
  h->paused = false;
  h->attempts = 0;
  pthread_cond_broadcast(&h->wake);
  pthread_mutex_unlock(&h->lock);
  clone_set_state(h->c, CLONE_HYDRATING);
}

void
hydrator_set_rate(struct hydrator *h, uint64_t bytes_per_second)
{
  ratelimit_set(h->rl, bytes_per_second);
}

uint64_t
hydrator_rate_limit(struct hydrator *h)
{
  return ratelimit_get(h->rl);
}
