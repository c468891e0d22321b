/* ferry: the clone's side of a lost source (issue 13): on-demand reads from the source
 * retried until --source-timeout (region locks within the same deadline: clone-inflight.c). */
#include "backends/clone-internal.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#define DEFAULT_SOURCE_TIMEOUT 60.0
/* Pauses between on-demand source reads that failed: 50 ms doubling to 1 s. */
#define FETCH_BACKOFF_FIRST 0.05
#define FETCH_BACKOFF_MAX 1.0
/* The source's block status is asked for this much at once, the first time a read needs to
 * know whether a region on the source is a hole. */
#define SOURCE_EXTENTS_WINDOW (256ull << 20)

/* Seconds an on-demand request may wait for the source (--source-timeout). */
double
clone_source_timeout(const struct clone *c)
{
  return c->opts.source_timeout > 0 ? c->opts.source_timeout : DEFAULT_SOURCE_TIMEOUT;
}

/* Read from the source, retrying failures with a growing pause until `deadline` (the same
 * time-bounded retry the hydrator gets from the copy engine and the driver's reconnection):
 * the driver waits for a lost connection within the same deadline.  A reader gets either
 * the source's bytes or an error, never anything else. */
int
clone_fetch(struct clone *c, void *buf, uint64_t len, uint64_t off, double deadline)
{
  struct volume_wait_bounds bounds = { deadline, NULL };
  struct volume_wait_bounds old = volume_set_wait_bounds(&bounds);
  double t0 = now_seconds(), pause = FETCH_BACKOFF_FIRST;
  unsigned attempt = 0;
  int r;
  for (;;) {
    attempt++;
    r = volume_pread(c->src, buf, len, off);
    double now = now_seconds();
    if (r == 0 || r == -ERANGE || r == -EINVAL || now >= deadline)
      break;
    debug("clone", "source read at %" PRIu64 " failed (attempt %u): %s", off, attempt,
          error_message());
    double nap = deadline - now < pause ? deadline - now : pause;
    nanosleep(&(struct timespec){ (time_t)nap, (long)((nap - (double)(time_t)nap) * 1e9) }, NULL);
    pause = pause * 2 > FETCH_BACKOFF_MAX ? FETCH_BACKOFF_MAX : pause * 2;
  }
  volume_set_wait_bounds(&old);
  if (r == 0)
    return 0;
  char msg[700];
  snprintf(msg, sizeof msg,
           "%s: source read of %" PRIu64 " bytes at %" PRIu64
           " failed (%u attempts in %.1f s, --source-timeout %g): %s",
           c->v.name, len, off, attempt, now_seconds() - t0, clone_source_timeout(c),
           error_message());
  clone_set_error(c, false, msg);
  /* The reader gets EIO; the log says why, without a line per retry of a guest. */
  pthread_mutex_lock(&c->state_lock);
  double now = now_seconds();
  bool say = now - c->warned_at >= 5.0;
  if (say)
    c->warned_at = now;
  pthread_mutex_unlock(&c->state_lock);
  if (say)
    log_warning("%s", msg);
  return error_set(EIO, "%s", msg);
}

/* Ask the source which regions of the window at `region` read as zeroes, and remember it
 * (src_known, src_zero).  A failure or a lost source leaves them unknown: read as data. */
static void
learn_source_extents(struct clone *c, uint64_t region)
{
  char why[256];
  if (volume_health(c->src, why, sizeof why) != 0)
    return;
  uint64_t off = clone_region_offset(c, region);
  uint64_t len = c->v.size - off < SOURCE_EXTENTS_WINDOW ? c->v.size - off : SOURCE_EXTENTS_WINDOW;
  struct extent_list l = { 0 };
  struct volume_wait_bounds bounds = { now_seconds() + clone_source_timeout(c), &c->mapper_stop };
  struct volume_wait_bounds old = volume_set_wait_bounds(&bounds);
  int r = volume_extents(c->src, len, off, &l);
  volume_set_wait_bounds(&old);
  if (r < 0 || l.n == 0) {
    debug("clone", "%s: source extents at %" PRIu64 ": %s (reported as data)", c->v.name, off,
          r < 0 ? error_message() : "none");
    error_clear();
    extent_list_free(&l);
    return;
  }
  uint64_t covered = l.v[l.n - 1].offset + l.v[l.n - 1].length;
  if (covered > c->v.size)
    covered = c->v.size;
  /* Past the source's size at open, the zeroes of the extension are not for keeps. */
  if (covered > c->source_size)
    covered = c->source_size;
  /* Zero bits first, then known (release): whoever sees known sees the zero bit too. */
  for (size_t i = 0; i < l.n; i++) {
    if (!(l.v[i].flags & EXTENT_ZERO))
      continue;
    uint64_t s = l.v[i].offset, e = s + l.v[i].length;
    for (uint64_t k = (s + c->region_size - 1) >> c->shift; k < c->regions; k++) {
      uint64_t ks = clone_region_offset(c, k);
      if (ks >= e || ks + clone_region_length(c, k) > e)
        break;
      clone_bit_set(c->src_zero, k);
    }
  }
  for (uint64_t k = region; k < c->regions; k++) {
    if (clone_region_offset(c, k) + clone_region_length(c, k) > covered)
      break;
    clone_bit_set(c->src_known, k);
  }
  extent_list_free(&l);
}

bool
clone_source_zero(struct clone *c, uint64_t region)
{
  if (!clone_bit_test(c->src_known, region))
    learn_source_extents(c, region);
  return clone_bit_test(c->src_known, region) && clone_bit_test(c->src_zero, region);
}

/* The mapper: the first read of each window used to ask the source for its block status
 * (a round trip, and on nbdkit's file plugin a walk of the window's holes): 300-850 us more
 * for the first read of each 256 MiB, which put bench/clone's hop p99 behind nbdkit's cow
 * filter, and a guest's first reads after a move are the ones it waits on most.  So the
 * clone asks for the whole volume at once, window by window, as soon as it opens (a held
 * clone: when released, its source final).  A source that fails (lost, no answer) ends the
 * walk: reads then learn as before. */
static void *
mapper_main(void *opaque)
{
  struct clone *c = opaque;
  uint64_t asked = 0;
  for (uint64_t k = 0; k < c->regions && !__atomic_load_n(&c->mapper_stop, __ATOMIC_RELAXED);) {
    if (clone_bit_test(c->src_known, k)) {
      k++;
      continue;
    }
    learn_source_extents(c, k);
    asked++;
    if (!clone_bit_test(c->src_known, k))
      break;
  }
  debug("clone", "%s: the source's block status learned in %" PRIu64 " requests", c->v.name,
        asked);
  error_clear();
  return NULL;
}

/* Started at open, or at release for a clone opened held (from the control thread): under
 * state_lock, and never again once stopped. */
int
clone_mapper_start(struct clone *c)
{
  int r = 0;
  pthread_mutex_lock(&c->state_lock);
  if (!c->mapper_running && !c->mapper_stop) {
    if (pthread_create(&c->mapper, NULL, mapper_main, c) != 0)
      r = error_set(EAGAIN, "%s: cannot start the source map thread", c->v.name);
    else
      c->mapper_running = true;
  }
  pthread_mutex_unlock(&c->state_lock);
  return r;
}

void
clone_mapper_stop(struct clone *c)
{
  pthread_mutex_lock(&c->state_lock);
  __atomic_store_n(&c->mapper_stop, 1, __ATOMIC_RELAXED);
  bool running = c->mapper_running;
  c->mapper_running = false;
  pthread_mutex_unlock(&c->state_lock);
  if (running)
    pthread_join(c->mapper, NULL);
}
