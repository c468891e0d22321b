/* ferry: what clone.c shares with hydrator.c (not for frontends: use clone.h). */
#ifndef FERRY_CLONE_INTERNAL_H
#define FERRY_CLONE_INTERNAL_H

#include "backends/clone.h"
#include "backends/regionmap.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* Per-region locks are a hashed table: region r uses locks[r % CLONE_LOCKS].  A guest request
 * waits for at most one at a time (requests are processed region by region; an on-demand
 * read that fetches several cold regions at once takes the ones after its first only with
 * clone_trylock_slot, which never waits); the hydrator takes several in ascending index
 * order; the write-behind thread holds the ones handed to it and waits for nothing else: no
 * deadlock is possible. */
/* Most regions, and bytes, one on-demand read fetches from the source in one request. */
#define CLONE_FETCH_RUN 64
#define CLONE_FETCH_BYTES (1u << 20)
#define CLONE_LOCKS 1024
/* Recent on-demand reads the hydrator should serve first. */
#define CLONE_HINTS 64

struct hydrator;
struct clone_writer;

/* A region lock (clone-inflight.c): a flag rather than a mutex, so that an on-demand reader
 * can hand it to the write-behind thread; buf/region: the bytes of the region whose
 * destination write is behind (readers copy from them), NULL when none. */
struct clone_lock {
  pthread_mutex_t m;
  pthread_cond_t cv;
  bool held;
  unsigned waiters;
  uint64_t region;
  const char *buf;
};

struct clone {
  struct volume v; /* first: the clone is a volume */
  struct volume *src, *dst;
  struct regionmap *map;
  uint64_t region_size;
  unsigned shift; /* log2(region_size) */
  uint64_t regions;
  struct clone_lock locks[CLONE_LOCKS];

  /* Statistics (atomics). */
  uint64_t bytes_copied, bytes_fetched, bytes_skipped;

  /* State, last error, commits; guarded by state_lock. */
  pthread_mutex_t state_lock;
  pthread_cond_t state_changed;
  enum clone_state state;
  bool converged; /* atomic read: every region hydrated and committed, source unused */
  bool broken;    /* fail mode: a destination or map write failed; writes refused */
  bool held;      /* atomic: clone_options.hold until clone_release (see clone.h) */
  char last_error[512];
  double warned_at; /* last on-demand failure logged (at most one warning per 5 s) */
  double rate_time;
  uint64_t rate_bytes;
  double rate;

  /* Hints for the hydrator: regions read on demand, newest last; guarded by hint_lock. */
  pthread_mutex_t hint_lock;
  uint64_t hints[CLONE_HINTS];
  unsigned nhints;

  /* Background commit thread (batches map commits, about once a second). */
  pthread_t committer;
  bool committer_running, stopping;
  pthread_cond_t committer_wake;

  /* Regions being fetched on demand right now (a bit per region, atomic), so that the
   * hydrator does not fetch them a second time. */
  uint64_t *ondemand;
  /* What the source's block status said of each region (clone-source.c): known, and then
   * whether it reads as zeroes.  Its holes do not change while it is not held. */
  uint64_t *src_known, *src_zero;
  /* The source's size when opened: past it (a clone --size larger than its source) the
   * source may still grow (a qcow2 image a running guest allocates in), so its block status
   * there is never remembered. */
  uint64_t source_size;
  /* The thread that learns them for the whole volume at the start (clone-source.c). */
  pthread_t mapper;
  bool mapper_running;
  volatile int mapper_stop; /* also its wait bounds' cancel flag */

  struct hydrator *hydrator;
  struct clone_writer *writer; /* NULL: on-demand fetches are written by their readers */
  struct clone_options opts;
};

/* Atomic bits of a per-region bitmap. */
static inline bool
clone_bit_test(const uint64_t *bits, uint64_t r)
{
  return (__atomic_load_n(&bits[r / 64], __ATOMIC_ACQUIRE) >> (r % 64)) & 1;
}

/* Set; returns whether it was set already. */
static inline bool
clone_bit_set(uint64_t *bits, uint64_t r)
{
  uint64_t b = 1ull << (r % 64);
  return __atomic_fetch_or(&bits[r / 64], b, __ATOMIC_ACQ_REL) & b;
}

static inline void
clone_bit_clear(uint64_t *bits, uint64_t r)
{
  __atomic_fetch_and(&bits[r / 64], ~(1ull << (r % 64)), __ATOMIC_RELEASE);
}

static inline struct clone_lock *
clone_region_lock(struct clone *c, uint64_t region)
{
  return &c->locks[region % CLONE_LOCKS];
}

static inline uint64_t
clone_region_offset(const struct clone *c, uint64_t region)
{
  return region << c->shift;
}

/* Bytes of region (the last one may be short). */
static inline uint64_t
clone_region_length(const struct clone *c, uint64_t region)
{
  uint64_t off = region << c->shift;
  return c->v.size - off < c->region_size ? c->v.size - off : c->region_size;
}

/* Bytes of the `count` regions from region (the last one may be short). */
static inline uint64_t
clone_run_length(const struct clone *c, uint64_t region, uint64_t count)
{
  return clone_region_offset(c, region + count - 1) + clone_region_length(c, region + count - 1)
         - clone_region_offset(c, region);
}

/* Flush the destination, then commit the map; converges when complete.  0 or -errno. */
int clone_commit(struct clone *c);
/* Record an error: state failed (when fatal) and last_error. */
void clone_set_error(struct clone *c, bool fatal, const char *msg);
void clone_set_state(struct clone *c, enum clone_state s);
/* Take the newest hint (false when none). */
bool clone_take_hint(struct clone *c, uint64_t *region);

/* clone-source.c: the --source-timeout in seconds; a read from the source retried until
 * deadline (0, or EIO with a message, logged at most once per 5 s); a region's lock taken
 * within deadline (0, or EIO). */
double clone_source_timeout(const struct clone *c);
int clone_fetch(struct clone *c, void *buf, uint64_t len, uint64_t off, double deadline);
/* Whether region reads as zeroes on the source (its block status, asked once per window of
 * regions and remembered); false when unknown.  Not for a held clone. */
bool clone_source_zero(struct clone *c, uint64_t region);
/* Learn the source's block status for every region in the background, so that no read pays
 * the round trip for a window; stopped (and joined) by clone_mapper_stop.  0 or -errno. */
int clone_mapper_start(struct clone *c);
void clone_mapper_stop(struct clone *c);

/* clone-inflight.c: region locks and the write-behind of on-demand fetches. */
void clone_locks_init(struct clone *c);
void clone_locks_destroy(struct clone *c);
void clone_lock_slot(struct clone_lock *l);
void clone_unlock_slot(struct clone_lock *l);
/* Take it only if nobody holds it: never waits (so any order is deadlock-free). */
bool clone_trylock_slot(struct clone_lock *l);
int clone_lock_region_until(struct clone *c, uint64_t region, double deadline);
/* Take region's lock by deadline (0), or copy [off, off+len) of it from the buffer of its
 * destination write that is behind (1); EIO at the deadline. */
int clone_lock_or_copy(struct clone *c, uint64_t region, double deadline, void *out, uint64_t len,
                       uint64_t off);
/* With region's lock held: store its fetched bytes (buf, the whole region) on the
 * destination, mark it after the write, clear its on-demand bit.  0 or -errno. */
int clone_store_fetched(struct clone *c, uint64_t region, const char *buf);
int clone_writer_start(struct clone *c);
/* Hand the locks of `regions` consecutive regions from region and their fetched bytes (one
 * malloc'd buffer, region_size bytes per region, freed by the writer) to the writer thread,
 * which stores, marks and unlocks each.  false when there is no room (or no writer): the
 * caller still owns them all. */
bool clone_write_behind(struct clone *c, uint64_t region, unsigned regions, char *buf);
void clone_writer_drain(struct clone *c); /* until every handed region is written */
void clone_writer_stop(struct clone *c);  /* drains, joins, frees */

/* clone-dest.c: the destination's identity for the map ("inode N", ...), and whether it
 * already holds data (1), reads as zeroes (0), or -errno. */
void clone_dest_identity(const char *uri, char *out, size_t len);
int clone_dest_has_data(struct volume *dst, uint64_t size);

/* hydrator.c */
int hydrator_start(struct clone *c, struct hydrator **out);
void hydrator_stop(struct hydrator *h); /* joins, frees */
void hydrator_halt(struct hydrator *h); /* stops and joins the thread; the object stays */
void hydrator_pause(struct hydrator *h);
void hydrator_resume(struct hydrator *h);
void hydrator_set_rate(struct hydrator *h, uint64_t bytes_per_second);
uint64_t hydrator_rate_limit(struct hydrator *h);
/* An on-demand fetch of `region` is about to start: while the hydrator is reading that
 * region from the source, wait for its copy to land instead of reading it again (until it is
 * hydrated, the hydrator's read failed, or `deadline`).  Call without the region's lock. */
void hydrator_wait_region(struct hydrator *h, uint64_t region, double deadline);
/* Is the hydrator reading region from the source right now? */
bool hydrator_fetching(struct hydrator *h, uint64_t region);

#endif
