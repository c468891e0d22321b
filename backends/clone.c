/* ferry: the clone volume (ARCHITECTURE.md, "the clone"), see clone.h.
 *
 * I/O is done region by region.  A region whose bit is set in the map is read and written on
 * the destination without any lock: nothing ever writes source data into it again.  A region
 * not yet hydrated is handled under its region lock: fetched from the source (on demand),
 * filled before a partial write, or written whole; its bit is set only after its data was
 * written to the destination and while the lock is held, so a lock-free writer never races
 * with a source fill.  The hydrator (hydrator.c) takes the same lock before writing source
 * data, and skips regions already set.  Map commits (clone_commit) flush the destination
 * before writing the map.
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void
clone_options_init(struct clone_options *o)
{
  memset(o, 0, sizeof *o);
  o->hydrate = true;
  volume_options_init(&o->source);
  volume_options_init(&o->dest);
  o->source.readonly = true;
}

int
clone_parse_region_size(const char *text, uint64_t *out)
{
  uint64_t v;
  int r = parse_size("--region-size", text, &v);
  if (r < 0)
    return r;
  if (!is_power_of_two(v) || v < (4u << 10) || v > (64u << 20))
    return error_set(EINVAL, "--region-size: %s is not a power of two from 4K to 64M", text);
  *out = v;
  return 0;
}

const char *
clone_state_name(enum clone_state s)
{
  switch (s) {
  case CLONE_HYDRATING:
    return "hydrating";
  case CLONE_PAUSED:
    return "paused";
  case CLONE_CONVERGED:
    return "converged";
  case CLONE_FAILED:
    return "failed";
  case CLONE_RECONNECTING:
    return "reconnecting";
  }
  return "unknown";
}

struct volume *
clone_volume(struct clone *c)
{
  return &c->v;
}

/* ---- state ---- */

void
clone_set_state(struct clone *c, enum clone_state s)
{
  pthread_mutex_lock(&c->state_lock);
  /* converged is final; failed is left only by an explicit resume */
  if (c->state != CLONE_CONVERGED)
    c->state = s;
  pthread_cond_broadcast(&c->state_changed);
  pthread_mutex_unlock(&c->state_lock);
}

void
clone_set_error(struct clone *c, bool fatal, const char *msg)
{
  pthread_mutex_lock(&c->state_lock);
  snprintf(c->last_error, sizeof c->last_error, "%s", msg);
  if (fatal && c->state != CLONE_CONVERGED)
    c->state = CLONE_FAILED;
  pthread_cond_broadcast(&c->state_changed);
  pthread_mutex_unlock(&c->state_lock);
  /* A failed on-demand read is the reader's error (it gets EIO); only the fatal ones are
   * logged here, the rest is kept in last_error for status. */
  if (fatal)
    log_error("%s", msg);
  else
    debug("clone", "%s", msg);
}

static void
add_hint(struct clone *c, uint64_t region)
{
  pthread_mutex_lock(&c->hint_lock);
  if (c->nhints == CLONE_HINTS) {
    memmove(c->hints, c->hints + 1, (CLONE_HINTS - 1) * sizeof c->hints[0]);
    c->nhints--;
  }
  c->hints[c->nhints++] = region;
  pthread_mutex_unlock(&c->hint_lock);
}

bool
clone_take_hint(struct clone *c, uint64_t *region)
{
  pthread_mutex_lock(&c->hint_lock);
  bool ok = c->nhints > 0;
  if (ok)
    *region = c->hints[--c->nhints];
  pthread_mutex_unlock(&c->hint_lock);
  return ok;
}

static int
flush_destination(void *opaque)
{
  struct clone *c = opaque;
  return volume_flush(c->dst);
}

int
clone_commit(struct clone *c)
{
  if (__atomic_load_n(&c->broken, __ATOMIC_ACQUIRE))
    return error_set(EIO, "%s: the clone is in fail mode after an earlier error: %s", c->v.name,
                     c->last_error);
  /* flush_destination runs inside regionmap_commit BEFORE the map is written. */
  int r = regionmap_commit(c->map, flush_destination, c);
  if (r < 0) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", error_message());
    __atomic_store_n(&c->broken, true, __ATOMIC_RELEASE);
    clone_set_error(c, true, msg);
    return error_set(-r, "%s", msg);
  }
  if (!c->converged && regionmap_complete(c->map) && regionmap_dirty(c->map) == 0) {
    __atomic_store_n(&c->converged, true, __ATOMIC_RELEASE);
    pthread_mutex_lock(&c->state_lock);
    c->state = CLONE_CONVERGED;
    c->last_error[0] = 0;
    pthread_cond_broadcast(&c->state_changed);
    pthread_mutex_unlock(&c->state_lock);
    debug("clone", "%s: converged", c->v.name);
  }
  return 0;
}

/* ---- region helpers ---- */

static void
mark(struct clone *c, uint64_t region)
{
  regionmap_mark(c->map, region);
}

/* With the locks of `count` regions from region held, none hydrated: fill scratch with
 * their source bytes, in one request. */
static int
fill_from_source(struct clone *c, uint64_t region, unsigned count, char *scratch, double deadline)
{
  uint64_t off = clone_region_offset(c, region), len = clone_run_length(c, region, count);
  /* Cleared by the caller once each region is stored and marked (or the fetch failed). */
  for (unsigned i = 0; i < count; i++)
    clone_bit_set(c->ondemand, region + i);
  int r = clone_fetch(c, scratch, len, off, deadline);
  if (r == 0)
    __atomic_fetch_add(&c->bytes_fetched, len, __ATOMIC_RELAXED);
  return r;
}

/* With region's lock held and it cold: how many cold regions from it (up to the request's
 * end at `end`) one fetch takes.  The ones after the first are locked here, each only if
 * its lock is free now, it is not hydrated and the hydrator is not reading it: the run ends
 * at the first that is not so (it is read on its own, as before). */
static unsigned
lock_cold_run(struct clone *c, uint64_t region, uint64_t end)
{
  unsigned n = 1;
  while (n < CLONE_FETCH_RUN && (uint64_t)(n + 1) * c->region_size <= CLONE_FETCH_BYTES
         && region + n < c->regions && clone_region_offset(c, region + n) < end) {
    uint64_t k = region + n;
    if ((c->hydrator && hydrator_fetching(c->hydrator, k))
        || !clone_trylock_slot(clone_region_lock(c, k)))
      break;
    if (regionmap_test(c->map, k)) { /* hydrated: read lock-free, on its own */
      clone_unlock_slot(clone_region_lock(c, k));
      break;
    }
    n++;
  }
  return n;
}

static int
fail_mode_check(struct clone *c, const char *what)
{
  if (__atomic_load_n(&c->broken, __ATOMIC_ACQUIRE))
    return error_set(EIO, "%s: %s refused: the clone is in fail mode after: %s", c->v.name, what,
                     c->last_error);
  return 0;
}

/* ---- volume ops ---- */

static int
clone_pread(struct volume *v, void *buf, size_t len, uint64_t off)
{
  struct clone *c = (struct clone *)v;
  if (__atomic_load_n(&c->converged, __ATOMIC_ACQUIRE))
    return volume_pread(c->dst, buf, len, off);
  char *out = buf;
  int r = 0;
  const double deadline = now_seconds() + clone_source_timeout(c);
  while (len > 0 && r == 0) {
    uint64_t region = off >> c->shift;
    uint64_t roff = clone_region_offset(c, region), rlen = clone_region_length(c, region);
    size_t n = (size_t)min_u64(len, roff + rlen - off);
    if (regionmap_test(c->map, region)) {
      /* Hydrated regions never see source data again: read without the lock, and read
       * as many hydrated regions as follow in one request. */
      uint64_t end = off + n;
      while (end < off + len && regionmap_test(c->map, end >> c->shift))
        end = min_u64(off + len, clone_region_offset(c, (end >> c->shift) + 1));
      n = (size_t)(end - off);
      r = volume_pread(c->dst, out, n, off);
    } else {
      if (c->hydrator)
        hydrator_wait_region(c->hydrator, region, deadline);
      /* A region whose destination write is behind its reader is copied from that
       * reader's buffer (1) rather than waited for. */
      if ((r = clone_lock_or_copy(c, region, deadline, out, n, off)) < 0)
        break;
      bool locked = r == 0;
      r = 0;
      if (!locked) {
        /* served from the buffer */
      } else if (regionmap_test(c->map, region)) {
        r = volume_pread(c->dst, out, n, off);
      } else if (__atomic_load_n(&c->held, __ATOMIC_ACQUIRE)) {
        /* Held: the source may still change, so nothing read from it is kept. */
        r = clone_fetch(c, out, n, off, deadline);
      } else {
        /* Copy-on-read: fetch the whole region, and the cold ones after it that the request
         * also reads, in one request, and answer at once; the destination writes and the
         * marks follow on the write-behind thread, which holds the regions' locks until
         * they are done (or here, when it has no room). */
        unsigned run = lock_cold_run(c, region, off + len);
        uint64_t fetched = clone_run_length(c, region, run);
        n = (size_t)min_u64(len, roff + fetched - off);
        char *rbuf = malloc(fetched);
        if (!rbuf)
          r = error_set(ENOMEM, "%s: out of memory", v->name);
        else if ((r = fill_from_source(c, region, run, rbuf, deadline)) == 0)
          memcpy(out, rbuf + (off - roff), n);
        if (r == 0 && clone_write_behind(c, region, run, rbuf)) {
          locked = false; /* the writer's now, all of them */
        } else {
          for (unsigned i = 0; i < run; i++) {
            int s = 0;
            if (r == 0)
              s = clone_store_fetched(c, region + i, rbuf + (uint64_t)i * c->region_size);
            else
              clone_bit_clear(c->ondemand, region + i);
            if (i > 0) /* the first is unlocked below */
              clone_unlock_slot(clone_region_lock(c, region + i));
            if (s < 0 && r == 0)
              r = s;
          }
          free(rbuf);
        }
        add_hint(c, region + run);
      }
      if (locked)
        clone_unlock_slot(clone_region_lock(c, region));
    }
    out += n;
    off += n;
    len -= n;
  }
  return r;
}

enum write_kind { WRITE_DATA, WRITE_ZERO, WRITE_TRIM };

/* The piece [off, off+n) of one region, for pwrite / zero / trim. */
static int
piece_to_destination(struct clone *c, enum write_kind k, const char *data, uint64_t n, uint64_t off,
                     unsigned flags)
{
  switch (k) {
  case WRITE_DATA:
    return volume_pwrite(c->dst, data, n, off, 0);
  case WRITE_ZERO:
    return volume_zero(c->dst, n, off, flags & VOLUME_MAY_TRIM);
  case WRITE_TRIM:
    return volume_trim(c->dst, n, off, 0);
  }
  return -EINVAL;
}

static int
write_common(struct clone *c, enum write_kind k, const char *data, uint64_t len, uint64_t off,
             unsigned flags)
{
  static const char *const names[] = { "write", "write zeroes", "trim" };
  int r = fail_mode_check(c, names[k]);
  char *scratch = NULL;
  const double deadline = now_seconds() + clone_source_timeout(c);
  while (len > 0 && r == 0) {
    uint64_t region = off >> c->shift;
    uint64_t roff = clone_region_offset(c, region), rlen = clone_region_length(c, region);
    uint64_t n = min_u64(len, roff + rlen - off);
    if (regionmap_test(c->map, region)) {
      r = piece_to_destination(c, k, data, n, off, flags);
    } else {
      struct clone_lock *lk = clone_region_lock(c, region);
      if (c->hydrator && n != rlen && k != WRITE_TRIM)
        hydrator_wait_region(c->hydrator, region, deadline);
      if ((r = clone_lock_region_until(c, region, deadline)) < 0)
        break;
      if (regionmap_test(c->map, region)) {
        r = piece_to_destination(c, k, data, n, off, flags);
      } else if (n == rlen) {
        /* The whole region is overwritten: no source read needed.  A trimmed region reads
         * as zeroes from now on, so it is zeroed (sparse) rather than left undefined. */
        if (k == WRITE_DATA)
          r = volume_pwrite(c->dst, data, n, off, 0);
        else
          r = volume_zero(c->dst, n, off, VOLUME_MAY_TRIM);
        if (r == 0)
          mark(c, region);
      } else if (k == WRITE_TRIM) {
        /* Trim is advisory: a partial trim of a region still on the source does nothing. */
      } else {
        /* Partial write into a region still on the source: fill the region first. */
        if (!scratch && !(scratch = malloc(c->region_size)))
          r = error_set(ENOMEM, "%s: out of memory", c->v.name);
        if (r == 0)
          r = fill_from_source(c, region, 1, scratch, deadline);
        if (r == 0) {
          if (k == WRITE_DATA)
            memcpy(scratch + (off - roff), data, n);
          else
            memset(scratch + (off - roff), 0, n);
          r = clone_store_fetched(c, region, scratch); /* marks after the write */
        } else {
          clone_bit_clear(c->ondemand, region);
        }
      }
      clone_unlock_slot(lk);
    }
    if (data)
      data += n;
    off += n;
    len -= n;
  }
  free(scratch);
  /* FUA is emulated by the dispatcher with clone_flush (destination flush, then map
   * commit), because a durable write into a newly hydrated region is only safe once the
   * map says so. */
  return r;
}

static int
clone_pwrite(struct volume *v, const void *buf, size_t len, uint64_t off, unsigned flags)
{
  return write_common((struct clone *)v, WRITE_DATA, buf, len, off, flags);
}

static int
clone_zero(struct volume *v, uint64_t len, uint64_t off, unsigned flags)
{
  /* A zero into a region still on the source may need a source read: never "fast". */
  if (flags & VOLUME_FAST_ZERO)
    return error_set(ENOTSUP, "%s: fast zero is not supported by a clone", v->name);
  return write_common((struct clone *)v, WRITE_ZERO, NULL, len, off, flags);
}

static int
clone_trim(struct volume *v, uint64_t len, uint64_t off, unsigned flags)
{
  return write_common((struct clone *)v, WRITE_TRIM, NULL, len, off, flags);
}

static int
clone_flush(struct volume *v)
{
  struct clone *c = (struct clone *)v;
  /* Not needed for the durability of any write (fetched regions are only marked once
   * written), but a flush then leaves every region read so far hydrated and committed. */
  clone_writer_drain(c);
  return clone_commit(c);
}

/* Extents of the first run of regions with the same hydrated state: from the destination
 * where hydrated, from the source where not.  Holes are only a hint: a source that is lost
 * (or does not answer within --source-timeout) makes the range "data", which reads then
 * fetch or fail on their own deadline.  (So a structured NBD read that looks for holes first
 * can take up to twice --source-timeout when the link is lost under it.) */
static int
clone_extents(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out)
{
  struct clone *c = (struct clone *)v;
  uint64_t region = off >> c->shift;
  bool hydrated = regionmap_test(c->map, region);
  uint64_t next
      = hydrated ? regionmap_next_clear(c->map, region) : regionmap_next_set(c->map, region);
  uint64_t end = min_u64(off + len, next >= c->regions ? v->size : clone_region_offset(c, next));
  if (hydrated || c->converged)
    return volume_extents(c->dst, end - off, off, out);
  char why[256];
  if (volume_health(c->src, why, sizeof why) != 0)
    return extent_list_add(out, off, end - off, 0);
  size_t before = out->n;
  struct extent last = before ? out->v[before - 1] : (struct extent){ 0, 0, 0 };
  struct volume_wait_bounds bounds = { now_seconds() + clone_source_timeout(c), NULL };
  struct volume_wait_bounds old = volume_set_wait_bounds(&bounds);
  int r = volume_extents(c->src, end - off, off, out);
  volume_set_wait_bounds(&old);
  if (r == 0)
    return 0;
  debug("clone", "%s: source extents at %" PRIu64 ": %s (reported as data)", v->name, off,
        error_message());
  error_clear();
  out->n = before; /* and undo a merge into the caller's last extent */
  if (before)
    out->v[before - 1] = last;
  return extent_list_add(out, off, end - off, 0);
}

/* For a read's hole lookup: regions still on the source are holes or data as the source's
 * block status said when first asked (clone_source_zero), not asked again before each fetch;
 * hydrated ones are the destination's. */
static int
clone_known_extents(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out)
{
  struct clone *c = (struct clone *)v;
  uint64_t region = off >> c->shift;
  if (c->converged || regionmap_test(c->map, region) || clone_is_held(c))
    return clone_extents(v, len, off, out);
  bool zero = clone_source_zero(c, region);
  uint64_t k = region + 1, last = (off + len - 1) >> c->shift;
  while (k <= last && !regionmap_test(c->map, k) && clone_source_zero(c, k) == zero)
    k++;
  uint64_t end = min_u64(off + len, k >= c->regions ? v->size : clone_region_offset(c, k));
  return extent_list_add(out, off, end - off, zero ? EXTENT_ZERO | EXTENT_HOLE : 0);
}

/* The destination's file where every region of the range is hydrated (their bytes there are
 * final but for the guest's own writes), or the clone converged. */
static int
clone_file_range(struct volume *v, uint64_t len, uint64_t off, int *fd, uint64_t *foff)
{
  struct clone *c = (struct clone *)v;
  if (!__atomic_load_n(&c->converged, __ATOMIC_ACQUIRE)
      && regionmap_next_clear(c->map, off >> c->shift) <= (off + len - 1) >> c->shift)
    return -EAGAIN;
  return volume_file_range(c->dst, len, off, fd, foff);
}

/* Prefetch: ask the hydrator to take these regions next. */
static int
clone_cache(struct volume *v, uint64_t len, uint64_t off)
{
  struct clone *c = (struct clone *)v;
  if (len == 0)
    return 0;
  /* Hints are taken newest first: push from the end so the first region comes first. */
  uint64_t first = off >> c->shift, last = (off + len - 1) >> c->shift;
  if (last - first >= CLONE_HINTS)
    last = first + CLONE_HINTS - 1;
  for (uint64_t r = last + 1; r-- > first;)
    if (!regionmap_test(c->map, r))
      add_hint(c, r);
  return 0;
}

static void
clone_volume_close(struct volume *v)
{
  clone_close((struct clone *)v);
}

static const struct volume_ops clone_ops = {
  .driver = "clone",
  .pread = clone_pread,
  .pwrite = clone_pwrite,
  .zero = clone_zero,
  .trim = clone_trim,
  .flush = clone_flush,
  .extents = clone_extents,
  .known_extents = clone_known_extents,
  .file_range = clone_file_range,
  .cache = clone_cache,
  .close = clone_volume_close,
};

/* ---- committer: batches map commits ---- */

static void *
committer_main(void *opaque)
{
  struct clone *c = opaque;
  pthread_mutex_lock(&c->state_lock);
  while (!c->stopping) {
    /* Batched commits, once a second by default (as dm-clone): each one flushes the
     * destination, which stalls concurrent first writes to a sparse file (the on-demand p99
     * in bench/clone was worse at 0.2 s).  Shorter intervals redo less after a crash (the
     * crash test runs at 0.2 s to bound its total reads to 1.2x the data). */
    double interval = c->opts.commit_interval > 0 ? c->opts.commit_interval : 1.0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double t = (double)ts.tv_sec + ts.tv_nsec / 1e9 + interval;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&c->committer_wake, &c->state_lock, &ts);
    if (c->stopping)
      break;
    bool due = regionmap_dirty(c->map) > 0 && !c->broken;
    pthread_mutex_unlock(&c->state_lock);
    if (due)
      clone_commit(c); /* failures are recorded in state/last_error */
    pthread_mutex_lock(&c->state_lock);
  }
  pthread_mutex_unlock(&c->state_lock);
  error_clear(); /* thread-local message: would leak with the thread */
  return NULL;
}

/* ---- open / close ---- */

int
clone_open(const char *source_uri, const char *map_path, const char *dest_uri,
           const struct clone_options *o, struct clone **out)
{
  struct clone_options defaults;
  if (!o) {
    clone_options_init(&defaults);
    o = &defaults;
  }
  *out = NULL;
  struct clone *c = calloc(1, sizeof *c);
  if (!c)
    return error_set(ENOMEM, "out of memory");
  c->opts = *o;
  c->opts.source_identity = NULL;
  clone_locks_init(c);
  pthread_mutex_init(&c->state_lock, NULL);
  pthread_mutex_init(&c->hint_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->state_changed, &ca);
  pthread_cond_init(&c->committer_wake, &ca);
  pthread_condattr_destroy(&ca);

  int r;
  struct volume_options so = o->source;
  so.readonly = true; /* the clone never writes its source */
  /* A lost source: the driver reconnects and on-demand requests wait for it as long as
   * --source-timeout; requests on a link gone silent are dropped (and retried) after it. */
  if (!so.reconnect_wait)
    so.reconnect_wait = clone_source_timeout(c); /* c->opts is o already */
  if (!so.timeout)
    so.timeout = so.reconnect_wait;
  if ((r = volume_open(source_uri, &so, &c->src)) < 0)
    goto fail;
  uint64_t source_size = c->src->size;
  c->source_size = source_size;
  if (o->size > source_size && (r = volume_extend_zero(c->src, o->size, &c->src)) < 0)
    goto fail;
  struct volume_options dso = o->dest;
  dso.readonly = false;
  if (dso.create && !dso.create_size)
    dso.create_size = c->src->size;
  if ((r = volume_open(dest_uri, &dso, &c->dst)) < 0)
    goto fail;
  if (!volume_can(c->dst, VOLUME_CAN_WRITE)) {
    r = error_set(EROFS, "%s: destination is not writable", dest_uri);
    goto fail;
  }
  if (c->dst->size < c->src->size) {
    r = error_set(
        EINVAL, "%s: destination is smaller (%" PRIu64 " bytes) than the %s %s (%" PRIu64 " bytes)",
        dest_uri, c->dst->size, source_size < c->src->size ? "clone's size over" : "source",
        source_uri, c->src->size);
    goto fail;
  }
  char dest_id[REGIONMAP_MAX_DEST_ID];
  clone_dest_identity(dest_uri, dest_id, sizeof dest_id);
  struct regionmap_params p = {
    .volume_size = c->src->size,
    .region_size = o->region_size,
    .source_size = source_size,
    .source_id = o->source_identity ? o->source_identity : source_uri,
    .dest_id = dest_id,
    .dest_size = c->dst->size,
  };
  struct stat mst;
  if (!o->new_map && (stat(map_path, &mst) < 0 || mst.st_size == 0)) {
    /* No map yet: only a destination that reads as zeroes gets a new one by itself. */
    int d = clone_dest_has_data(c->dst, c->dst->size);
    if (d < 0) {
      r = d;
      goto fail;
    }
    p.no_create = d > 0;
  }
  if ((r = regionmap_open(map_path, &p, &c->map)) < 0)
    goto fail;
  c->region_size = regionmap_region_size(c->map);
  c->shift = (unsigned)__builtin_ctzll(c->region_size);
  c->regions = regionmap_regions(c->map);
  size_t words = (c->regions + 63) / 64 + 1;
  if (!(c->ondemand = calloc(words, 8)) || !(c->src_known = calloc(words, 8))
      || !(c->src_zero = calloc(words, 8))) {
    r = error_set(ENOMEM, "%s: out of memory", dest_uri);
    goto fail;
  }

  c->v.min_block = c->src->min_block > c->dst->min_block ? c->src->min_block : c->dst->min_block;
  c->v.preferred_block = 4096;
  c->v.max_request = 32u << 20;
  c->v.caps = VOLUME_CAN_WRITE | VOLUME_CAN_TRIM | VOLUME_CAN_ZERO | VOLUME_CAN_EXTENTS
              | VOLUME_CAN_FLUSH | VOLUME_CAN_CACHE | VOLUME_MULTI_CONN;
  if ((r = volume_init(&c->v, &clone_ops, dest_uri, c->src->size)) < 0)
    goto fail;

  c->held = o->hold;
  c->opts.start_paused = o->start_paused || o->hold;
  c->state = c->opts.start_paused ? CLONE_PAUSED : CLONE_HYDRATING;
  c->rate_time = now_seconds();
  c->rate_bytes = regionmap_count(c->map) * c->region_size;
  if (regionmap_complete(c->map)) {
    c->converged = true;
    c->state = CLONE_CONVERGED;
  }
  if (pthread_create(&c->committer, NULL, committer_main, c) != 0) {
    r = error_set(EAGAIN, "%s: cannot start the commit thread", dest_uri);
    goto fail;
  }
  c->committer_running = true;
  /* Converged: nothing is fetched any more, no write-behind thread. */
  if (!c->converged && (r = clone_writer_start(c)) < 0)
    goto fail;
  if (o->hydrate && !c->converged && (r = hydrator_start(c, &c->hydrator)) < 0)
    goto fail;
  /* A held source may still change its holes: its extents are asked for each read then. */
  if (!c->converged && !c->held && (r = clone_mapper_start(c)) < 0)
    goto fail;
  debug("clone",
        "%s: source %s, map %s, %" PRIu64 "/%" PRIu64 " regions of %" PRIu64 " bytes hydrated",
        dest_uri, source_uri, map_path, regionmap_count(c->map), c->regions, c->region_size);
  *out = c;
  return 0;
fail:
  error_prefix("clone");
  {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", error_message());
    clone_close(c);
    error_set(-r, "%s", msg);
  }
  return r;
}

int
clone_close(struct clone *c)
{
  if (!c)
    return 0;
  int r = 0;
  clone_mapper_stop(c);
  if (c->hydrator)
    hydrator_stop(c->hydrator);
  c->hydrator = NULL;
  clone_writer_stop(c); /* its regions written and marked before the last commit */
  if (c->committer_running) {
    pthread_mutex_lock(&c->state_lock);
    c->stopping = true;
    pthread_cond_broadcast(&c->committer_wake);
    pthread_mutex_unlock(&c->state_lock);
    pthread_join(c->committer, NULL);
  }
  if (c->map && c->dst && !c->broken)
    r = clone_commit(c);
  regionmap_close(c->map);
  volume_close(c->src); /* NULL after clone_release_source */
  volume_close(c->dst);
  clone_locks_destroy(c);
  pthread_mutex_destroy(&c->state_lock);
  pthread_mutex_destroy(&c->hint_lock);
  pthread_cond_destroy(&c->state_changed);
  pthread_cond_destroy(&c->committer_wake);
  free(c->ondemand);
  free(c->src_known);
  free(c->src_zero);
  free(c->v.name);
  free(c);
  return r;
}

/* ---- control and status ---- */

void
clone_pause(struct clone *c)
{
  if (c->hydrator)
    hydrator_pause(c->hydrator);
}

void
clone_resume(struct clone *c)
{
  if (c->hydrator && !clone_is_held(c))
    hydrator_resume(c->hydrator);
}

bool
clone_is_held(struct clone *c)
{
  return __atomic_load_n(&c->held, __ATOMIC_ACQUIRE);
}

void
clone_release(struct clone *c)
{
  if (!__atomic_exchange_n(&c->held, false, __ATOMIC_ACQ_REL))
    return;
  debug("clone", "%s: released: the copy starts", c->v.name);
  if (c->hydrator)
    hydrator_resume(c->hydrator);
  /* The source is final now: its holes may be learned once for all. */
  if (!__atomic_load_n(&c->converged, __ATOMIC_ACQUIRE) && clone_mapper_start(c) < 0) {
    log_warning("%s", error_message());
    error_clear();
  }
}

int
clone_release_source(struct clone *c)
{
  if (!__atomic_load_n(&c->converged, __ATOMIC_ACQUIRE))
    return error_set(EBUSY, "%s: not converged: the source is still needed", c->v.name);
  /* Converged: no region is read from the source any more (every read and write path
   * checks the map or the converged flag first); only the hydrator may still be in a read
   * it started before, so stop it before closing. */
  if (c->hydrator)
    hydrator_halt(c->hydrator);
  clone_mapper_stop(c);
  struct volume *src = __atomic_exchange_n(&c->src, NULL, __ATOMIC_ACQ_REL);
  if (src)
    debug("clone", "%s: converged: source %s closed", c->v.name, src->name);
  volume_close(src);
  return 0;
}

void
clone_set_rate(struct clone *c, uint64_t bytes_per_second)
{
  c->opts.rate = bytes_per_second;
  if (c->hydrator)
    hydrator_set_rate(c->hydrator, bytes_per_second);
}

void
clone_get_status(struct clone *c, struct clone_status *st)
{
  memset(st, 0, sizeof *st);
  st->size = c->v.size;
  st->region_size = c->region_size;
  st->regions_total = c->regions;
  st->regions_hydrated = regionmap_count(c->map);
  st->bytes_copied = __atomic_load_n(&c->bytes_copied, __ATOMIC_RELAXED);
  st->bytes_fetched = __atomic_load_n(&c->bytes_fetched, __ATOMIC_RELAXED);
  st->bytes_skipped = __atomic_load_n(&c->bytes_skipped, __ATOMIC_RELAXED);
  st->rate_limit = c->hydrator ? hydrator_rate_limit(c->hydrator) : c->opts.rate;
  st->held = clone_is_held(c);
  uint64_t done = min_u64(st->regions_hydrated * c->region_size, c->v.size);
  char why[400];
  bool lost = !__atomic_load_n(&c->converged, __ATOMIC_ACQUIRE)
              && volume_health(c->src, why, sizeof why) != 0;
  pthread_mutex_lock(&c->state_lock);
  st->state = c->state;
  snprintf(st->last_error, sizeof st->last_error, "%s", c->last_error);
  if (lost && (st->state == CLONE_HYDRATING || st->state == CLONE_PAUSED)) {
    /* The reason is the driver's own, live: "connection 1 lost 12 s ago: ...". */
    if (st->state == CLONE_HYDRATING)
      st->state = CLONE_RECONNECTING;
    snprintf(st->last_error, sizeof st->last_error, "source %s: %s", c->src->name, why);
  }
  /* Rate over the last few seconds (progress of hydrated bytes, any cause). */
  double now = now_seconds();
  if (now - c->rate_time >= 1.0) {
    double inst = (double)(done - min_u64(done, c->rate_bytes)) / (now - c->rate_time);
    c->rate = c->rate > 0 ? 0.5 * c->rate + 0.5 * inst : inst;
    c->rate_time = now;
    c->rate_bytes = done;
  }
  st->rate = c->rate;
  pthread_mutex_unlock(&c->state_lock);
  if (st->state == CLONE_CONVERGED)
    st->eta = 0;
  else
    st->eta = st->rate > 0 ? (double)(c->v.size - done) / st->rate : -1;
}

int
clone_wait(struct clone *c, double timeout)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  if (timeout >= 0) {
    ts.tv_sec += (time_t)timeout;
    ts.tv_nsec += (long)((timeout - (double)(time_t)timeout) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
  }
  int r = 0;
  pthread_mutex_lock(&c->state_lock);
  while (c->state != CLONE_CONVERGED && c->state != CLONE_FAILED) {
    if (timeout < 0)
      pthread_cond_wait(&c->state_changed, &c->state_lock);
    else if (pthread_cond_timedwait(&c->state_changed, &c->state_lock, &ts) == ETIMEDOUT) {
      r = error_set(ETIMEDOUT, "%s: not converged yet", c->v.name);
      break;
    }
  }
  if (r == 0 && c->state == CLONE_FAILED)
    r = error_set(EIO, "%s: hydration failed: %s", c->v.name, c->last_error);
  pthread_mutex_unlock(&c->state_lock);
  return r;
}

int
clone_hydrated_extents(struct clone *c, uint64_t len, uint64_t off, struct extent_list *out)
{
  if (off > c->v.size || len > c->v.size - off)
    return error_set(ERANGE, "%s: hydrated extents beyond the end", c->v.name);
  uint64_t end = off + len;
  while (off < end) {
    uint64_t region = off >> c->shift;
    bool h = regionmap_test(c->map, region);
    uint64_t next = h ? regionmap_next_clear(c->map, region) : regionmap_next_set(c->map, region);
    uint64_t stop = min_u64(end, next >= c->regions ? c->v.size : clone_region_offset(c, next));
    int r = extent_list_add(out, off, stop - off, h ? CLONE_EXTENT_HYDRATED : 0);
    if (r < 0)
      return r;
    off = stop;
  }
  return 0;
}
