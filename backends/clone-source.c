/* ferry: the clone's side of a lost source (issue 13): on-demand reads from the source
 * retried until --source-timeout, region locks taken within the same deadline. */
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

/* Take a region's lock, waiting no longer than the request's deadline: another request may
 * hold it while it waits for a lost source. */
int
clone_lock_region_until(struct clone *c, uint64_t region, double deadline)
{
  pthread_mutex_t *lk = clone_region_lock(c, region);
  if (pthread_mutex_trylock(lk) == 0)
    return 0;
  struct timespec ts = { (time_t)deadline, (long)((deadline - (double)(time_t)deadline) * 1e9) };
  int e = pthread_mutex_clocklock(lk, CLOCK_MONOTONIC, &ts);
  if (e == 0)
    return 0;
  char msg[300];
  snprintf(msg, sizeof msg,
           "%s: region %" PRIu64 " is still being fetched from the source after %g s "
           "(--source-timeout)",
           c->v.name, region, clone_source_timeout(c));
  clone_set_error(c, false, msg);
  return error_set(EIO, "%s", msg);
}
