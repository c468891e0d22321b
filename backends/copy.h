/* ferry: the copy engine — parallel, sparse-aware copying between two volumes.
 *
 * `ferry copy` drives it over a whole volume; the clone's hydrator drives it over the regions
 * its map still lacks.  The engine runs `workers` threads; each takes the next range from
 * the work source, asks the source for extents (when sparse), reads data extents and writes
 * them, turns zero/hole extents into volume_zero(VOLUME_MAY_TRIM) on the destination (never
 * a data read), and reports the finished range.  It does not flush: the caller decides when
 * data must be durable (the hydrator flushes before it commits its map).
 */
#ifndef FERRY_COPY_H
#define FERRY_COPY_H

#include "backends/volume.h"

#include <stdbool.h>
#include <stdint.h>

struct ratelimit;

struct copy_stats {
  uint64_t bytes_read;     /* data read from the source */
  uint64_t bytes_written;  /* data written to the destination */
  uint64_t bytes_zeroed;   /* zero/hole bytes turned into zero/trim (not read) */
  uint64_t requests;
  double seconds;
};

/* What one worker did with one range (for the done callback). */
struct copy_range_result {
  uint64_t bytes_read, bytes_written, bytes_zeroed;
};

struct copy_work {
  /* Next range to copy: 1 with *off and *len set, 0 when there is no more work, negative errno
   * to stop with an error.  Called with the engine's lock held (never concurrently). */
  int (*next)(void *opaque, uint64_t *off, uint64_t *len);
  /* Called by the worker after the range is written (not yet flushed), or with err < 0
   * when it failed.  May be called concurrently from several workers. */
  void (*done)(void *opaque, uint64_t off, uint64_t len, int err,
               const struct copy_range_result *res);
  void *opaque;
};

struct copy_options {
  unsigned workers;          /* parallel requests in flight (default 16) */
  uint64_t request_size;     /* bytes per read/write request (default 4 MiB) */
  bool sparse;               /* detect zero/hole extents and zero buffers (default true) */
  struct ratelimit *rate;    /* optional: shared token bucket for bytes read */
  volatile int *stop;        /* optional: set non-zero to make workers finish early */
  struct progress *progress; /* optional: completed bytes are added here */
};

void copy_options_init(struct copy_options *o);

/* Run the workers until next() returns 0 or an error; returns 0 or the first error. */
int copy_run(struct volume *src, struct volume *dst, const struct copy_work *work,
             const struct copy_options *o, struct copy_stats *stats);

/* Copy [0, src->size) in order (what `ferry copy` does). */
int copy_volume(struct volume *src, struct volume *dst, const struct copy_options *o,
                struct copy_stats *stats);

/* One range, synchronously, in the calling thread (on-demand fetch uses this too). */
int copy_range(struct volume *src, struct volume *dst, uint64_t off, uint64_t len, void *buf,
               size_t buflen, bool sparse, struct copy_range_result *res);

#endif
