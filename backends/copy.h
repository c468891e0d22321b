/* ferry: the copy engine — parallel, sparse-aware copying between two volumes.
 *
 * `ferry copy` drives it over a whole volume; the clone's hydrator drives it over the regions
 * its map still lacks.  The engine runs `workers` threads; each takes the next range from
 * the work source, asks the source for extents (when sparse), reads data extents and writes
 * them, turns zero/hole extents into volume_zero(VOLUME_MAY_TRIM) on the destination (never
 * a data read), and reports the finished range.  A data buffer that turns out to hold zero
 * blocks is not written either: those blocks are zeroed instead.  It does not flush: the
 * caller decides when data must be durable (the hydrator flushes before it commits its map).
 *
 * Source reads and extent queries that fail are retried (copy_options.retries, with
 * exponential backoff) before the copy fails; the message then names the source, the offset
 * and the driver's reason.  Errors raised in worker threads are handed to the caller's
 * thread: after copy_run() fails, error_message() in the caller describes the first error.
 */
#ifndef FERRY_COPY_H
#define FERRY_COPY_H

#include "backends/volume.h"

#include <stdbool.h>
#include <stdint.h>

struct ratelimit;
struct progress;

struct copy_stats {
  uint64_t bytes_read;    /* data read from the source */
  uint64_t bytes_written; /* data written to the destination */
  uint64_t bytes_zeroed;  /* zero bytes not written as data: zero/hole extents (never read)
                           * plus all-zero blocks found in data that was read */
  uint64_t requests;      /* ranges completed */
  double seconds;
};

/* What one worker did with one range (for the done callback). */
struct copy_range_result {
  uint64_t bytes_read, bytes_written, bytes_zeroed;
};

struct copy_work {
  /* Next range to copy: 1 with *off and *len set, 0 when there is no more work, negative errno
   * (message set) to stop with an error.  Called with the engine's lock held (never
   * concurrently).  A range may be of any length: the engine splits it into requests. */
  int (*next)(void *opaque, uint64_t *off, uint64_t *len);
  /* Optional.  Called by the worker after the whole range is written (not yet flushed,
   * err == 0), or with err < 0 when it failed or was cut short by *stop (-ECANCELED); res
   * then counts what was done before.  May be called concurrently from several workers. */
  void (*done)(void *opaque, uint64_t off, uint64_t len, int err,
               const struct copy_range_result *res);
  void *opaque;
};

/* 1 MiB, not more: a worker's buffer then stays in the CPU's L2 cache between the read and
 * the write; 4 MiB buffers made copies ~1.5x slower here (docs/PERFORMANCE.md, bench/copy).
 * Larger requests (--request-size) still help on high-latency links. */
#define COPY_DEFAULT_REQUEST_SIZE (1u << 20)

struct copy_options {
  unsigned workers;          /* parallel requests in flight (default 16) */
  uint64_t request_size;     /* bytes per read/write request (default 1 MiB) */
  bool sparse;               /* detect zero/hole extents and zero buffers (default true) */
  bool dst_is_zero;          /* the destination already reads as zeroes (a new file): zero
                              * ranges need no request at all (default false) */
  unsigned retries;          /* attempts after a failed source read/extents (default 5) */
  struct ratelimit *rate;    /* optional: shared token bucket for bytes read */
  volatile int *stop;        /* optional: set non-zero to make workers finish early; also call
                              * ratelimit_wake() so none waits for tokens */
  struct progress *progress; /* optional: completed bytes (written or zeroed) are added here */
};

void copy_options_init(struct copy_options *o);

/* Run the workers until next() returns 0 or an error.  Returns 0 when every range was copied,
 * -ECANCELED when *stop cut the work short (message "copy stopped"), else the first error
 * (with its message).  stats (optional) is filled in every case. */
int copy_run(struct volume *src, struct volume *dst, const struct copy_work *work,
             const struct copy_options *o, struct copy_stats *stats);

/* Copy [0, src->size) (what `ferry copy` does). */
int copy_volume(struct volume *src, struct volume *dst, const struct copy_options *o,
                struct copy_stats *stats);

/* One range, synchronously, in the calling thread (on-demand fetch uses this too), with
 * the same retries as the engine (copy_options defaults).  buf (buflen bytes, a multiple of
 * both volumes' min_block) is the bounce buffer; res (optional) counts what was done. */
int copy_range(struct volume *src, struct volume *dst, uint64_t off, uint64_t len, void *buf,
               size_t buflen, bool sparse, struct copy_range_result *res);

#endif
