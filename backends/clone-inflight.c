/* ferry: the clone's region locks and its write-behind of on-demand fetches (issue 15).
 *
 * A region lock is not a pthread mutex but a "held" flag under a small mutex, so that its
 * ownership can pass from the thread that took it to another one: an on-demand reader takes
 * the lock, fetches the region from the source, copies the reader's bytes out and hands the
 * lock together with the region's buffer to the writer thread, which writes the destination,
 * marks the region and only then releases the lock.  The reader is answered as soon as the
 * source bytes are in hand; the map's rule is unchanged (a region is marked only after its
 * data is written, with its lock held; clone_commit flushes the destination before writing
 * the map).  While the write is behind, the buffer is published on the lock: other readers
 * of that region copy from it instead of waiting; writers and the hydrator wait for the lock
 * as before.
 */
#include "backends/clone-internal.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bytes of fetched regions whose destination writes may be behind their readers at once;
 * beyond that the reader writes itself (the destination is slower than the source). */
#define WRITE_BEHIND_BYTES (16u << 20)
#define WRITE_BEHIND_MAX_JOBS 256

struct write_job {
  uint64_t region;
  unsigned regions; /* consecutive, from region; buf holds them all */
  char *buf;
};

struct clone_writer {
  pthread_mutex_t lock;
  pthread_cond_t work, idle;
  struct write_job *jobs; /* ring of cap entries */
  unsigned cap, head, count;
  unsigned queued; /* regions in the queued jobs: at most cap */
  bool busy; /* a job taken off the ring is being written */
  bool stopping;
  pthread_t thread;
};

/* ---- region locks ---- */

void
clone_locks_init(struct clone *c)
{
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  for (int i = 0; i < CLONE_LOCKS; i++) {
    pthread_mutex_init(&c->locks[i].m, NULL);
    pthread_cond_init(&c->locks[i].cv, &ca);
  }
  pthread_condattr_destroy(&ca);
}

void
clone_locks_destroy(struct clone *c)
{
  for (int i = 0; i < CLONE_LOCKS; i++) {
    pthread_mutex_destroy(&c->locks[i].m);
    pthread_cond_destroy(&c->locks[i].cv);
  }
}

void
clone_lock_slot(struct clone_lock *l)
{
  pthread_mutex_lock(&l->m);
  while (l->held) {
    l->waiters++;
    wait_hook_run();
    pthread_cond_wait(&l->cv, &l->m);
    l->waiters--;
  }
  l->held = true;
  pthread_mutex_unlock(&l->m);
}

bool
clone_trylock_slot(struct clone_lock *l)
{
  pthread_mutex_lock(&l->m);
  bool got = !l->held;
  l->held = true;
  pthread_mutex_unlock(&l->m);
  return got;
}

void
clone_unlock_slot(struct clone_lock *l)
{
  pthread_mutex_lock(&l->m);
  l->held = false;
  l->buf = NULL;
  if (l->waiters)
    pthread_cond_broadcast(&l->cv);
  pthread_mutex_unlock(&l->m);
}

/* Take region's lock by `deadline`, or (copy_out != NULL) copy its bytes
 * [skip, skip+n) from the buffer of a write that is behind: 0 locked, 1 copied, or EIO. */
static int
lock_until(struct clone *c, uint64_t region, double deadline, void *copy_out, uint64_t skip,
           uint64_t n)
{
  struct clone_lock *l = clone_region_lock(c, region);
  struct timespec ts = { (time_t)deadline, (long)((deadline - (double)(time_t)deadline) * 1e9) };
  int r = 0;
  pthread_mutex_lock(&l->m);
  while (l->held) {
    if (copy_out && l->buf && l->region == region) {
      memcpy(copy_out, l->buf + skip, n);
      r = 1;
      break;
    }
    l->waiters++;
    wait_hook_run();
    int e = pthread_cond_timedwait(&l->cv, &l->m, &ts);
    l->waiters--;
    if (e == ETIMEDOUT && l->held) {
      r = -1;
      break;
    }
  }
  if (r == 0)
    l->held = true;
  pthread_mutex_unlock(&l->m);
  if (r >= 0)
    return r;
  char msg[300];
  snprintf(msg, sizeof msg,
           "%s: region %" PRIu64 " is still being fetched from the source after %g s "
           "(--source-timeout)",
           c->v.name, region, clone_source_timeout(c));
  clone_set_error(c, false, msg);
  return error_set(EIO, "%s", msg);
}

int
clone_lock_region_until(struct clone *c, uint64_t region, double deadline)
{
  return lock_until(c, region, deadline, NULL, 0, 0);
}

int
clone_lock_or_copy(struct clone *c, uint64_t region, double deadline, void *out, uint64_t len,
                   uint64_t off)
{
  return lock_until(c, region, deadline, out, off - clone_region_offset(c, region), len);
}

/* ---- write-behind ---- */

/* With region's lock held: write its fetched bytes, mark it, clear its on-demand bit. */
int
clone_store_fetched(struct clone *c, uint64_t region, const char *buf)
{
  uint64_t off = clone_region_offset(c, region), len = clone_region_length(c, region);
  int r = buffer_is_zero(buf, len) ? volume_zero(c->dst, len, off, VOLUME_MAY_TRIM)
                                   : volume_pwrite(c->dst, buf, len, off, 0);
  /* Marked only now that the data is written, still under the lock: a lock-free writer
   * never races with this fill, and a commit (flush, then map) covers only written data. */
  if (r == 0)
    regionmap_mark(c->map, region);
  clone_bit_clear(c->ondemand, region);
  return r;
}

static void *
writer_main(void *opaque)
{
  struct clone *c = opaque;
  struct clone_writer *w = c->writer;
  pthread_mutex_lock(&w->lock);
  for (;;) {
    while (w->count == 0 && !w->stopping)
      pthread_cond_wait(&w->work, &w->lock);
    if (w->count == 0)
      break; /* stopping, and every job is written */
    struct write_job j = w->jobs[w->head];
    w->head = (w->head + 1) % w->cap;
    w->count--;
    w->busy = true;
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < j.regions; i++) {
      uint64_t region = j.region + i;
      if (clone_store_fetched(c, region, j.buf + i * c->region_size) < 0) {
        /* The reader has its bytes; the region stays on the source and is fetched again. */
        char msg[600];
        snprintf(msg, sizeof msg, "%s: region %" PRIu64 " fetched on demand not kept: %s",
                 c->v.name, region, error_message());
        clone_set_error(c, false, msg);
        log_warning("%s", msg);
        error_clear();
      }
      clone_unlock_slot(clone_region_lock(c, region));
    }
    free(j.buf); /* its later regions were readable from it until their unlock */
    pthread_mutex_lock(&w->lock);
    w->queued -= j.regions;
    w->busy = false;
    if (w->count == 0)
      pthread_cond_broadcast(&w->idle);
  }
  pthread_mutex_unlock(&w->lock);
  error_clear();
  return NULL;
}

int
clone_writer_start(struct clone *c)
{
  struct clone_writer *w = calloc(1, sizeof *w);
  uint64_t cap = WRITE_BEHIND_BYTES / c->region_size;
  cap = cap < 1 ? 1 : cap > WRITE_BEHIND_MAX_JOBS ? WRITE_BEHIND_MAX_JOBS : cap;
  if (!w || !(w->jobs = calloc(cap, sizeof *w->jobs))) {
    free(w);
    return error_set(ENOMEM, "%s: out of memory", c->v.name);
  }
  w->cap = (unsigned)cap;
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->work, NULL);
  pthread_cond_init(&w->idle, NULL);
  c->writer = w;
  if (pthread_create(&w->thread, NULL, writer_main, c) != 0) {
    c->writer = NULL;
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->work);
    pthread_cond_destroy(&w->idle);
    free(w->jobs);
    free(w);
    return error_set(EAGAIN, "%s: cannot start the write-behind thread", c->v.name);
  }
  return 0;
}

bool
clone_write_behind(struct clone *c, uint64_t region, unsigned regions, char *buf)
{
  struct clone_writer *w = c->writer;
  if (!w)
    return false;
  pthread_mutex_lock(&w->lock);
  /* Jobs are at most as many as regions: the ring of cap jobs cannot overflow. */
  bool queued = !w->stopping && w->queued + regions <= w->cap;
  if (queued) {
    /* Published before the job can run: the writer clears each when it releases the lock. */
    for (unsigned i = 0; i < regions; i++) {
      struct clone_lock *l = clone_region_lock(c, region + i);
      pthread_mutex_lock(&l->m);
      l->region = region + i;
      l->buf = buf + i * c->region_size;
      if (l->waiters)
        pthread_cond_broadcast(&l->cv); /* readers of this region can copy now */
      pthread_mutex_unlock(&l->m);
    }
    w->jobs[(w->head + w->count) % w->cap] = (struct write_job){ region, regions, buf };
    w->count++;
    w->queued += regions;
    pthread_cond_signal(&w->work);
  }
  pthread_mutex_unlock(&w->lock);
  return queued;
}

void
clone_writer_drain(struct clone *c)
{
  struct clone_writer *w = c->writer;
  if (!w)
    return;
  pthread_mutex_lock(&w->lock);
  while (w->count > 0 || w->busy)
    pthread_cond_wait(&w->idle, &w->lock);
  pthread_mutex_unlock(&w->lock);
}

void
clone_writer_stop(struct clone *c)
{
  struct clone_writer *w = c->writer;
  if (!w)
    return;
  pthread_mutex_lock(&w->lock);
  w->stopping = true;
  pthread_cond_signal(&w->work);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->thread, NULL); /* writes every queued job first */
  c->writer = NULL;
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->work);
  pthread_cond_destroy(&w->idle);
  free(w->jobs);
  free(w);
}
