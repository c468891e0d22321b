/* ferry: the volume interface.
 *
 * Every driver (file, nbd, http, ...) and the clone implement struct volume_ops.  Frontends
 * (ferry-nbd, ferry-fuse, ferry copy) call the volume_*() dispatch functions below, never the
 * ops directly: the dispatcher checks ranges and read-only-ness, splits requests larger than
 * max_request, and emulates what a driver leaves out (zero by writing zeroes, FUA by flush,
 * extents as "all data"), so a driver stays small.
 *
 * Threads: every op may be called concurrently from many threads; a driver that needs
 * serialisation does it inside.  Errors: ops return 0 or a negative errno and describe the
 * failure with error_set() (common/error.h), naming the volume.  A driver never exits.
 */
#ifndef FERRY_VOLUME_H
#define FERRY_VOLUME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Capabilities (struct volume.caps). */
enum {
  VOLUME_CAN_WRITE = 1u << 0,
  VOLUME_CAN_TRIM = 1u << 1,      /* trim op does something (else a no-op) */
  VOLUME_CAN_ZERO = 1u << 2,      /* zero op is cheaper than writing zeroes */
  VOLUME_CAN_FAST_ZERO = 1u << 3, /* zero with VOLUME_FAST_ZERO may succeed */
  VOLUME_CAN_EXTENTS = 1u << 4,   /* extents op reports real holes/zeroes */
  VOLUME_CAN_FUA = 1u << 5,       /* native FUA (else emulated by flush) */
  VOLUME_CAN_FLUSH = 1u << 6,
  VOLUME_CAN_CACHE = 1u << 7, /* cache op prefetches */
  /* A flush through any handle/thread makes every completed write durable: true for all
   * our drivers; ferry-nbd advertises NBD multi-conn only when set. */
  VOLUME_MULTI_CONN = 1u << 8,
  /* Reads must come in order, each starting where the previous one ended, from one thread
   * (a plain zstd stream, volume_options.sequential): the copy engine then runs one worker. */
  VOLUME_SEQUENTIAL = 1u << 9,
};

/* Request flags. */
enum {
  VOLUME_FUA = 1u << 0,       /* pwrite/zero/trim: durable before returning */
  VOLUME_MAY_TRIM = 1u << 1,  /* zero: may deallocate (NBD: NO_HOLE not set) */
  VOLUME_FAST_ZERO = 1u << 2, /* zero: fail with -ENOTSUP rather than be slow */
  VOLUME_BULK = 1u << 3,      /* pwrite: part of a bulk copy (the hydrator's): a file starts
                                 its write-back and drops it from the page cache behind it */
};

/* Extent flags: the same values as NBD base:allocation. */
enum {
  EXTENT_HOLE = 1u << 0, /* not allocated */
  EXTENT_ZERO = 1u << 1, /* reads as zeroes */
};

struct extent {
  uint64_t offset;
  uint64_t length;
  uint32_t flags;
};

struct extent_list {
  struct extent *v;
  size_t n, cap;
};

/* Append, merging with the last extent when contiguous with the same flags. 0 or -ENOMEM. */
int extent_list_add(struct extent_list *l, uint64_t offset, uint64_t length, uint32_t flags);
void extent_list_reset(struct extent_list *l); /* n = 0, keeps memory */
void extent_list_free(struct extent_list *l);

struct volume;

struct volume_ops {
  const char *driver; /* "file", "nbd", "http", "clone" */
  int (*pread)(struct volume *v, void *buf, size_t len, uint64_t off);
  int (*pwrite)(struct volume *v, const void *buf, size_t len, uint64_t off, unsigned flags);
  int (*zero)(struct volume *v, uint64_t len, uint64_t off, unsigned flags);
  int (*trim)(struct volume *v, uint64_t len, uint64_t off, unsigned flags);
  int (*flush)(struct volume *v);
  /* Describe [off, off+len): append at least one extent starting at off; may stop early. */
  int (*extents)(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out);
  int (*cache)(struct volume *v, uint64_t len, uint64_t off);
  /* Optional: extents as far as the volume knows them without a round trip to anything
   * remote (the clone: a region still on the source is "data"); same contract as extents.
   * Missing: extents is used. */
  int (*known_extents)(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out);
  void (*close)(struct volume *v); /* frees the volume */
  /* Optional: 0 when the volume can serve now, 1 while it waits for a lost connection to
   * come back (reason filled: "connection lost: ...; reconnecting"). */
  int (*health)(struct volume *v, char *reason, size_t len);
  /* Optional: a file another process may still be appending to (the qcow2 image a running
   * guest grows until ferry live-move pauses it): re-read the size; v->size only grows. */
  void (*refresh_size)(struct volume *v);
  /* Optional: a file whose bytes [*foff, *foff+len) are the volume's [off, off+len) now, for
   * zero-copy replies (ferry-nbd splices from it); a negative errno, no error set, when the
   * range has no such file (O_DIRECT, regions not yet local, ...). */
  int (*file_range)(struct volume *v, uint64_t len, uint64_t off, int *fd, uint64_t *foff);
};

/* Drivers embed this as their first member. */
struct volume {
  const struct volume_ops *ops;
  char *name;               /* for messages: the URI as given (no password) */
  uint64_t size;            /* bytes */
  uint32_t min_block;       /* requests must be aligned to this (1, 512 or 4096) */
  uint32_t preferred_block; /* e.g. 4096 */
  uint32_t max_request;     /* largest single op the driver takes; the dispatcher splits */
  unsigned caps;
  /* 0, or a writer of a sequential format (a compressed image, the send stream) that holds
   * out-of-order writes in memory until the gap before them is filled: the copy engine starts
   * no range more than this many bytes past the first one not finished yet. */
  uint64_t write_window;
};

struct volume_options {
  bool readonly;
  bool direct;       /* file: O_DIRECT */
  bool write_behind; /* file: the destination of a bulk copy: start write-back as data lands
                      * and drop written data from the page cache (not read back soon) */
  bool create;       /* file: create a missing regular file of create_size bytes */
  uint64_t create_size;
  unsigned connections; /* nbd, http: parallel connections (0 = driver default) */
  double timeout;       /* http: seconds to connect, or without a byte received; nbd:
                         * seconds of server silence while requests wait before the
                         * connection is dropped (0 = default) */
  unsigned retries;     /* http, nbd: attempts after a transient failure (0 = default) */
  bool sequential;      /* zst: a plain (non-seekable) .zst may be opened for in-order reads
                         * (VOLUME_SEQUENTIAL) instead of being refused */
  /* nbd, http: seconds a request waits for a lost connection to come back (nbd reconnects
   * in the background with backoff and retries the requests that were in flight; http
   * retries its connection failures) before it fails (0 = 60 s). */
  double reconnect_wait;
};

void volume_options_init(struct volume_options *o);

struct volume_driver {
  const char *name;
  /* true when this driver handles the URI (scheme match); the file driver is the fallback */
  bool (*matches)(const char *uri);
  /* A layer on another volume that it opens by URI itself (zst): skipped for "raw:URI". */
  bool stacked;
  int (*open)(const char *uri, const struct volume_options *o, struct volume **out);
};

/* Open a volume by URI: /path, file:///path, nbd://host[:port]/export,
 * nbd+unix:///export?socket=PATH, http://, https://.  A name ending in .zst (or "zst:URI") is a
 * compressed image read through the zst layer (backends/zst.c); "raw:URI" opens URI without
 * any layer (the .zst file's own bytes).  0 or -errno with a message. */
int volume_open(const char *uri, const struct volume_options *o, struct volume **out);
void volume_close(struct volume *v);

/* Helpers for drivers: fill the common fields. */
int volume_init(struct volume *v, const struct volume_ops *ops, const char *name, uint64_t size);

/* Dispatch: checks, splitting and emulation described above. */
int volume_pread(struct volume *v, void *buf, size_t len, uint64_t off);
int volume_pwrite(struct volume *v, const void *buf, size_t len, uint64_t off, unsigned flags);
int volume_zero(struct volume *v, uint64_t len, uint64_t off, unsigned flags);
int volume_trim(struct volume *v, uint64_t len, uint64_t off, unsigned flags);
int volume_flush(struct volume *v);
int volume_extents(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out);
int volume_cache(struct volume *v, uint64_t len, uint64_t off);
/* Extents for a read that looks for holes to skip (ferry-nbd's structured reads): a hint, so
 * no remote query is made for it where the driver can avoid one (volume_ops.known_extents). */
int volume_known_extents(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out);
/* See volume_ops.file_range: 0 with *fd and *foff, or a negative errno (no error set). */
int volume_file_range(struct volume *v, uint64_t len, uint64_t off, int *fd, uint64_t *foff);

/* 0, or 1 with reason while the volume reconnects (see volume_ops.health). */
int volume_health(struct volume *v, char *reason, size_t len);

/* Bounds on how long driver calls made by THIS thread may block waiting for a lost
 * connection (or for the reply of a request on a link gone silent): an absolute deadline
 * (now_seconds() clock, 0 = none) and a cancel flag (non-zero = stop waiting now).  The
 * clone's on-demand reads set a deadline (--source-timeout), the copy engine's workers set
 * their stop flag.  A call that hits a bound fails with ETIMEDOUT or ECANCELED. */
struct volume_wait_bounds {
  double deadline;
  volatile int *cancel;
};
/* Set (b != NULL) or clear the calling thread's bounds; returns the previous ones. */
struct volume_wait_bounds volume_set_wait_bounds(const struct volume_wait_bounds *b);
/* The calling thread's bounds (zeroes when none). */
struct volume_wait_bounds volume_wait_bounds(void);

static inline bool
volume_can(const struct volume *v, unsigned cap)
{
  return (v->caps & cap) == cap;
}

/* A read-only view of inner that is size bytes long and reads as zeroes (a hole) past
 * inner's end; it owns inner (closing it closes inner).  size <= inner's size: *out = inner.
 * The clone's source when the clone is larger than its source (clone_options.size). */
/* The volume's size as its driver sees it now (volume_ops.refresh_size), for a file that may
 * have grown since it was opened; other volumes keep the size they opened with. */
uint64_t volume_refresh_size(struct volume *v);
int volume_extend_zero(struct volume *inner, uint64_t size, struct volume **out);

/* True when buf[0..len) is all zero bytes (fast). */
bool buffer_is_zero(const void *buf, size_t len);

#endif
