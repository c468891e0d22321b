/* The FUSE session's worker loop: ferry-fuse's replacement for fuse_session_loop_mt.
 *
 * Why not libfuse's loop: every idle libfuse worker sleeps in read() on /dev/fuse, so each
 * request the kernel queues wakes a sleeping thread.  On a virtual machine whose idle vCPU
 * halts that wake-up costs more than answering a 4 KiB read (the same finding as ferry-nbd's
 * --poll-us, nbd-server/serve.c).  Here one thread at a time, the leader, reads the device;
 * the others wait on a condition variable of ours.  The leader spins briefly (poll with a
 * zero timeout) before it sleeps in read(), and at queue depth 1 the thread that answered a
 * request is the one that takes the next, so no thread is woken at all.
 *
 * Two modes, chosen from what the requests do:
 *  - concurrent (the start): the leader hands the device to another worker as soon as it
 *    has a request (waking an idle one, or starting one up to the thread limit), so the
 *    requests that come while it works are read at once;
 *  - solo: after SOLO_AFTER requests in a row that each came while no other request was
 *    being answered, the leader keeps the device and answers the request itself.  It hands
 *    the device over when it is about to sleep on the volume (a cold fetch from a slow
 *    source, a region another thread holds: wait_hook in common/util.h).  It returns to
 *    concurrent mode at the second request in a row that overlaps: one that is waiting when
 *    the leader comes back to the device, or comes while another worker is still answering
 *    one.  (A single overlap is not enough: on a loaded machine a leader preempted after its
 *    reply finds the client's next request waiting, and a worker preempted between its
 *    reply and its busy count looks busy.)  The price of solo mode: requests that come while
 *    the leader answers from a file without sleeping on our side (a page cache miss) wait
 *    until the leader is done, for up to two requests, before the mode changes.
 *
 * The spin uses a process-wide spin slot (spin_slot_take) and the adaptive state of
 * common/util.h; it runs only while no other request is being answered (their own spins for
 * NBD replies are worth more then). */
#include "fuse-mount/devloop.h"

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define DEVICE_SPIN 50e-6
#define SOLO_AFTER 8   /* quiet requests in a row before solo mode, at first */
#define SOLO_MAX 4096  /* ... at most, after short stints */
#define SOLO_LONG 1024 /* a stint this long puts SOLO_AFTER back */
#define SOLO_STRIKES 2 /* overlaps in a row that end solo mode */

struct devloop {
  struct fuse_session *se;
  int fd;
  pthread_mutex_t lock;
  pthread_cond_t lead; /* a follower may become the leader */
  bool leader;         /* solo: the thread that reads the device */
  bool ended;
  unsigned busy;    /* threads answering a request */
  unsigned idle;    /* threads waiting to lead (solo) */
  unsigned reading; /* threads in (or about to be in) a receive */
  unsigned threads; /* started, the caller's included */
  unsigned max_threads;
  bool solo;
  unsigned quiet;      /* requests in a row that came with nothing else being answered */
  unsigned solo_after; /* quiet requests that turn solo mode on */
  unsigned stint;      /* requests answered in the current solo stint */
  unsigned strikes;    /* overlaps in a row seen in solo mode */
  unsigned long solos;
  int error;        /* the first receive error, as libfuse's loop returns it */
  bool first;       /* the next receive is INIT, already read by the supervisor */
  struct spin spin; /* the leader's */
  pthread_t *tids;  /* threads[1..] */
};

static void *worker_main(void *arg);

/* With the lock held: one more thread, up to the limit. */
static void
start_worker(struct devloop *d)
{
  if (d->ended || d->threads >= d->max_threads)
    return;
  int e = pthread_create(&d->tids[d->threads], NULL, worker_main, d);
  if (e != 0) {
    log_warning("cannot start a FUSE worker thread: %s", strerror(e));
    return;
  }
  d->threads++;
}

/* With the lock held: a solo leader is going to sleep on the volume; get another thread to
 * read the device meanwhile (an idle one, else a new one). */
static void
hand_over(struct devloop *d)
{
  if (d->leader || d->reading > 0 || d->ended) {
    debug("devloop", "the solo reader sleeps on the volume: another thread is reading already");
    return;
  }
  debug("devloop", "the solo reader sleeps on the volume: another thread reads the device");
  if (d->idle > 0)
    pthread_cond_signal(&d->lead);
  else
    start_worker(d);
}

/* wait_hook: a solo leader is about to sleep on the volume. */
static void
about_to_sleep(void *arg)
{
  struct devloop *d = arg;
  pthread_mutex_lock(&d->lock);
  hand_over(d);
  pthread_mutex_unlock(&d->lock);
}

/* As the leader: wait for a request on the device, spinning first if that pays.  Returns
 * whether one was already there when we looked (it came while no thread was reading). */
static bool
await_request(struct devloop *d, bool others_busy)
{
  struct pollfd p = { .fd = d->fd, .events = POLLIN };
  int n;
  if (!others_busy && d->spin.on && spin_slot_take()) {
    double end = now_seconds() + DEVICE_SPIN;
    unsigned looks = 0;
    while ((n = poll(&p, 1, 0)) == 0 && now_seconds() < end)
      looks++;
    spin_slot_put();
    if (n != 0 && looks == 0)
      return true; /* waiting already (or an error for read() to report) */
    spin_note(&d->spin, n != 0);
    if (n != 0)
      return false;
  } else {
    if (poll(&p, 1, 0) != 0)
      return true;
    if (others_busy || d->spin.on)
      return false; /* read() sleeps: no spin to account for */
  }
  /* Sleep in poll, not read: timed, to turn the spin back on when it would have caught it. */
  double t0 = now_seconds();
  if (poll(&p, 1, -1) > 0)
    spin_note_sleep(&d->spin, now_seconds() - t0, DEVICE_SPIN);
  return false;
}

static void
work(struct devloop *d)
{
  struct fuse_buf buf = { .mem = NULL };
  pthread_mutex_lock(&d->lock);
  for (;;) {
    /* Solo: one reader, the leader; the others wait here.  Concurrent: everyone reads. */
    while (d->solo && d->leader && !d->ended) {
      d->idle++;
      pthread_cond_wait(&d->lead, &d->lock);
      d->idle--;
    }
    if (d->ended)
      break;
    bool leading = d->solo;
    d->leader |= leading;
    d->reading++;
    bool others_busy = d->busy > 0;
    /* Workers still in a read from concurrent mode can take the request the leader saw
     * waiting, and the leader's read then returns a later one: no sign of overlap then. */
    bool alone = d->reading == 1;
    pthread_mutex_unlock(&d->lock);

    bool waiting = false;
    if (d->first)
      d->first = false; /* before any other thread starts: no race */
    else if (leading)
      waiting = await_request(d, others_busy) && alone;
    int r = fuse_session_receive_buf(d->se, &buf);

    pthread_mutex_lock(&d->lock);
    d->reading--;
    if (leading)
      d->leader = false;
    if (r == -EINTR || r == -EAGAIN)
      continue;
    if (r <= 0) {
      if (r < 0 && !d->error)
        d->error = r;
      fuse_session_exit(d->se);
      d->ended = true;
      pthread_cond_broadcast(&d->lead);
      break;
    }
    if (waiting || d->busy > 0) {
      d->quiet = 0;
      /* One overlap alone may be a solo reader preempted after its reply, or a late worker
       * still counted busy: solo mode ends at the second in a row. */
      if (d->solo && ++d->strikes >= SOLO_STRIKES) {
        d->solo = false;
        pthread_cond_broadcast(&d->lead); /* everyone reads again */
        debug("devloop", "concurrent mode after %u solo requests (%s)", d->stint,
              waiting ? "a request was waiting" : "another was being answered");
        /* A short stint: the load is concurrent with gaps; ask for a longer quiet run. */
        if (d->stint < SOLO_LONG && d->solo_after < SOLO_MAX)
          d->solo_after *= 2;
      }
    } else if (d->solo) {
      d->strikes = 0;
      if (++d->stint == SOLO_LONG)
        d->solo_after = SOLO_AFTER;
    } else if (++d->quiet >= d->solo_after) {
      d->solo = true;
      d->stint = 0;
      d->strikes = 0;
      d->solos++;
      debug("devloop", "solo mode after %u quiet requests", d->quiet);
    }
    d->busy++;
    bool solo = d->solo;
    if (!solo && d->reading == 0 && d->idle == 0)
      start_worker(d); /* nobody left to read what comes while we answer */
    pthread_mutex_unlock(&d->lock);

    if (solo)
      wait_hook_set(about_to_sleep, d);
    fuse_session_process_buf(d->se, &buf);
    wait_hook_set(NULL, NULL);

    pthread_mutex_lock(&d->lock);
    d->busy--;
    if (fuse_session_exited(d->se)) {
      d->ended = true;
      pthread_cond_broadcast(&d->lead);
      break;
    }
  }
  pthread_mutex_unlock(&d->lock);
  free(buf.mem);
  error_clear(); /* thread-local message: free it before the thread goes */
}

static void *
worker_main(void *arg)
{
  work(arg);
  return NULL;
}

int
devloop_run(struct fuse_session *se, unsigned max_threads, bool init_buffered)
{
  struct devloop d = {
    .se = se,
    .fd = fuse_session_fd(se),
    .max_threads = max_threads ? max_threads : 1,
    .threads = 1,
    .solo_after = SOLO_AFTER,
    .first = init_buffered,
    .spin = { .on = true },
  };
  d.tids = calloc(d.max_threads, sizeof *d.tids);
  if (!d.tids)
    return -ENOMEM;
  pthread_mutex_init(&d.lock, NULL);
  pthread_cond_init(&d.lead, NULL);
  work(&d);
  pthread_mutex_lock(&d.lock);
  unsigned n = d.threads;
  pthread_mutex_unlock(&d.lock);
  /* No thread starts once ended is set: tids[1..n) are all there is. */
  for (unsigned i = 1; i < n; i++)
    pthread_join(d.tids[i], NULL);
  pthread_cond_destroy(&d.lead);
  pthread_mutex_destroy(&d.lock);
  free(d.tids);
  debug("devloop", "session ended: %lu solo stints, %u threads", d.solos, d.threads);
  return d.error;
}
