/* ferry: the clone — a lazy destination volume (ARCHITECTURE.md, "the clone").
 *
 * A clone is a read-only source, a writable destination of at least the source's size and a
 * region map file.  clone_volume() is a struct volume that frontends serve like any other:
 * reads of regions not yet hydrated are fetched from the source (and written to the
 * destination), writes land on the destination, and a background hydrator copies the rest.
 *
 * Contract shared with ferry-nbd, ferry-fuse, `ferry hydrate` and the control socket.
 */
#ifndef FERRY_CLONE_H
#define FERRY_CLONE_H

#include "backends/volume.h"

#include <stdbool.h>
#include <stdint.h>

struct clone;

struct clone_options {
  uint64_t region_size; /* 0: the existing map's, else 64 KiB; power of two, 4 KiB..64 MiB */
  unsigned workers;     /* hydrator workers (0: default) */
  uint64_t rate;        /* hydrator bytes/s, 0 = unlimited */
  bool hydrate;         /* run the background hydrator (else copy-on-read only) */
  bool start_paused;    /* hydrator starts in state "paused" */
  /* Hold the copy back until clone_release(): the source may still change (a live migration:
   * the source VM still runs).  Reads of regions not on the destination are served from the
   * source without being kept, the hydrator stays paused; writes are taken as usual (they
   * come only once the source has stopped changing). */
  bool hold;
  struct volume_options source; /* source is always opened read-only */
  struct volume_options dest;
  /* Identity recorded in the map and checked on every open (NULL: the source URI).  Give a
   * stable name (e.g. an image ID) when the source URI can legitimately change. */
  const char *source_identity;
  uint64_t request_size; /* hydrator bytes per source read (0: the copy engine's default) */
  /* The clone's size when larger than the source's (0: the source's): past the source's end
   * it reads as zeroes.  A qcow2 image file served as a guest's disk grows as it allocates. */
  uint64_t size;
  double commit_interval; /* seconds between batched map commits (0: 1.0) */
  /* --source-timeout: seconds an on-demand read (or a partial write into a region still on
   * the source) waits for a lost source before it fails with EIO (0: 60).  Also how long
   * the source driver waits for a reconnection, and its silence watchdog, unless set in
   * `source`.  The hydrator waits for the source as long as it takes. */
  double source_timeout;
  /* --new-map: a missing or empty map may be created over a destination that already holds
   * data (else refused: the hydrator would overwrite that data with the source's). */
  bool new_map;
};

void clone_options_init(struct clone_options *o);

/* Parse a --region-size value: a power of two from 4 KiB to 64 MiB (message names the flag). */
int clone_parse_region_size(const char *text, uint64_t *out);

/* Open source, destination and map (created when missing).  Refuses, touching nothing, a map
 * for another size / region size / source identity / destination, a corrupt map, a missing
 * map over a destination that holds data (unless new_map), a destination smaller than the
 * source.  0 or -errno with a message. */
int clone_open(const char *source_uri, const char *map_path, const char *dest_uri,
               const struct clone_options *o, struct clone **out);

/* The clone as a volume (owned by the clone: do not volume_close it). */
struct volume *clone_volume(struct clone *c);

/* Hydrator control.  clone_resume does nothing while the clone is held. */
void clone_pause(struct clone *c);
void clone_resume(struct clone *c);
/* End the hold (clone_options.hold): reads keep what they fetch again, and the hydrator
 * starts.  Does nothing on a clone that is not held. */
void clone_release(struct clone *c);
bool clone_is_held(struct clone *c);
void clone_set_rate(struct clone *c, uint64_t bytes_per_second);

/* reconnecting: hydrating, but the source is lost and its driver reconnects (status only;
 * the reason is in last_error). */
enum clone_state {
  CLONE_HYDRATING,
  CLONE_PAUSED,
  CLONE_CONVERGED,
  CLONE_FAILED,
  CLONE_RECONNECTING
};
const char *clone_state_name(enum clone_state s); /* "hydrating", "paused", ... */

struct clone_status {
  enum clone_state state;
  uint64_t size, region_size;
  uint64_t regions_total, regions_hydrated;
  uint64_t bytes_copied;  /* by the hydrator, data actually read from the source */
  uint64_t bytes_fetched; /* on demand (copy-on-read) */
  uint64_t bytes_skipped; /* zero/hole extents marked without transfer */
  uint64_t rate_limit;    /* bytes/s, 0 = unlimited */
  double rate;            /* recent hydration throughput, bytes/s */
  double eta;             /* seconds, < 0 when unknown */
  bool held;              /* clone_options.hold and not released yet */
  char last_error[512];   /* "" when none */
};

void clone_get_status(struct clone *c, struct clone_status *st);

/* Block until converged (0), failed (-EIO, message set) or timeout (-ETIMEDOUT);
 * timeout < 0 waits for ever. */
int clone_wait(struct clone *c, double timeout_seconds);

/* ferry:hydrated meta context: extents with flags CLONE_EXTENT_HYDRATED where the
 * destination already holds the data, 0 where it is still only on the source. */
enum { CLONE_EXTENT_HYDRATED = 1u << 0 };
int clone_hydrated_extents(struct clone *c, uint64_t len, uint64_t off, struct extent_list *out);

/* Once converged, the source is never read again: stop the hydrator and close the source
 * (its server may go).  -EBUSY (message set) before convergence. */
int clone_release_source(struct clone *c);

/* Stop the hydrator, flush the destination, commit the map, close everything.
 * Returns 0 or the first error (message set). */
int clone_close(struct clone *c);

#endif
