/* ferry: token bucket, see ratelimit.h. */
#include "common/ratelimit.h"
#include "common/util.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct ratelimit {
  pthread_mutex_t lock;
  pthread_cond_t changed;
  uint64_t rate;   /* bytes per second, 0 = unlimited */
  double tokens;   /* may go negative: a large request borrows from the future */
  double last;     /* time tokens were last refilled */
  unsigned generation;
};

struct ratelimit *
ratelimit_new(uint64_t rate)
{
  struct ratelimit *rl = calloc(1, sizeof *rl);
  if (!rl)
    return NULL;
  pthread_mutex_init(&rl->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&rl->changed, &ca);
  pthread_condattr_destroy(&ca);
  rl->rate = rate;
  rl->last = now_seconds();
  return rl;
}

void
ratelimit_set(struct ratelimit *rl, uint64_t rate)
{
  pthread_mutex_lock(&rl->lock);
  rl->rate = rate;
  rl->tokens = 0;
  rl->last = now_seconds();
  rl->generation++;
  pthread_cond_broadcast(&rl->changed);
  pthread_mutex_unlock(&rl->lock);
}

uint64_t
ratelimit_get(struct ratelimit *rl)
{
  pthread_mutex_lock(&rl->lock);
  uint64_t r = rl->rate;
  pthread_mutex_unlock(&rl->lock);
  return r;
}

void
ratelimit_wake(struct ratelimit *rl)
{
  pthread_mutex_lock(&rl->lock);
  rl->generation++;
  pthread_cond_broadcast(&rl->changed);
  pthread_mutex_unlock(&rl->lock);
}

void
ratelimit_take(struct ratelimit *rl, uint64_t bytes)
{
  if (!rl)
    return;
  pthread_mutex_lock(&rl->lock);
  if (rl->rate == 0) {
    pthread_mutex_unlock(&rl->lock);
    return;
  }
  double now = now_seconds();
  /* Refill, allowing at most a quarter second of burst. */
  rl->tokens += (now - rl->last) * (double)rl->rate;
  if (rl->tokens > rl->rate / 4.0)
    rl->tokens = rl->rate / 4.0;
  rl->last = now;
  rl->tokens -= (double)bytes;
  if (rl->tokens < 0) {
    double wait = -rl->tokens / (double)rl->rate;
    unsigned gen = rl->generation;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double frac = wait - floor(wait);
    ts.tv_sec += (time_t)floor(wait);
    ts.tv_nsec += (long)(frac * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    while (gen == rl->generation &&
           pthread_cond_timedwait(&rl->changed, &rl->lock, &ts) != ETIMEDOUT)
      ;
  }
  pthread_mutex_unlock(&rl->lock);
}

void
ratelimit_free(struct ratelimit *rl)
{
  if (!rl)
    return;
  pthread_mutex_destroy(&rl->lock);
  pthread_cond_destroy(&rl->changed);
  free(rl);
}
