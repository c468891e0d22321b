/* ferry: volume dispatch and driver registry, see volume.h. */
#include "backends/volume.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

extern const struct volume_driver file_driver, nbd_driver, http_driver, zst_driver;

/* Adding a driver: its file, and one line here.  Layers (stacked) come first: they claim a
 * URI by its name and open the volume below with "raw:URI".  The file driver comes last: it
 * takes plain paths and file:// URIs. */
static const struct volume_driver *const drivers[] = {
  &zst_driver,
  &nbd_driver,
  &http_driver,
  &file_driver,
};

void
volume_options_init(struct volume_options *o)
{
  memset(o, 0, sizeof *o);
}

/* "xyz://..." with a scheme no driver takes is refused rather than opened as a path. */
static bool
has_scheme(const char *uri, size_t *len)
{
  const char *p = uri;
  while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')
         || *p == '+' || *p == '-' || *p == '.')
    p++;
  if (p > uri && strncmp(p, "://", 3) == 0) {
    *len = (size_t)(p - uri);
    return true;
  }
  return false;
}

int
volume_open(const char *uri, const struct volume_options *o, struct volume **out)
{
  struct volume_options defaults;
  if (!o) {
    volume_options_init(&defaults);
    o = &defaults;
  }
  *out = NULL;
  if (!uri || !*uri)
    return error_set(EINVAL, "empty volume URI");
  bool raw = strncmp(uri, "raw:", 4) == 0;
  if (raw)
    uri += 4;
  for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++) {
    if (raw && drivers[i]->stacked)
      continue;
    if (drivers[i]->matches(uri)) {
      debug("volume", "opening %s with the %s driver", uri, drivers[i]->name);
      return drivers[i]->open(uri, o, out);
    }
  }
  size_t n = 0;
  has_scheme(uri, &n);
  return error_set(EINVAL,
                   "%s: unsupported URI scheme '%.*s' (use a path, file://, nbd://, "
                   "nbd+unix://, http:// or https://)",
                   uri, (int)n, uri);
}

/* Used by the file driver to refuse unknown schemes. */
bool volume_uri_has_scheme(const char *uri);
bool
volume_uri_has_scheme(const char *uri)
{
  size_t n;
  return has_scheme(uri, &n);
}

void
volume_close(struct volume *v)
{
  if (v)
    v->ops->close(v);
}

int
volume_init(struct volume *v, const struct volume_ops *ops, const char *name, uint64_t size)
{
  v->ops = ops;
  v->name = strdup(name);
  if (!v->name)
    return error_set(ENOMEM, "%s: out of memory", name);
  v->size = size;
  if (!v->min_block)
    v->min_block = 1;
  if (!v->preferred_block)
    v->preferred_block = 4096;
  if (!v->max_request)
    v->max_request = 32u << 20;
  return 0;
}

static int
check_range(struct volume *v, const char *what, uint64_t len, uint64_t off)
{
  if (off > v->size || len > v->size - off)
    return error_set(ERANGE,
                     "%s: %s of %" PRIu64 " bytes at offset %" PRIu64
                     " is beyond the end (size %" PRIu64 ")",
                     v->name, what, len, off, v->size);
  if (v->min_block > 1 && ((off | len) & (v->min_block - 1)))
    return error_set(EINVAL, "%s: %s at %" PRIu64 "+%" PRIu64 " is not aligned to %u bytes",
                     v->name, what, off, len, v->min_block);
  return 0;
}

static int
check_writable(struct volume *v, const char *what)
{
  if (!(v->caps & VOLUME_CAN_WRITE))
    return error_set(EROFS, "%s: %s refused: the volume is read-only", v->name, what);
  return 0;
}

int
volume_pread(struct volume *v, void *buf, size_t len, uint64_t off)
{
  int r = check_range(v, "read", len, off);
  if (r < 0)
    return r;
  char *p = buf;
  while (len > 0) {
    size_t n = len < v->max_request ? len : v->max_request;
    if ((r = v->ops->pread(v, p, n, off)) < 0)
      return r;
    p += n;
    off += n;
    len -= n;
  }
  return 0;
}

int
volume_pwrite(struct volume *v, const void *buf, size_t len, uint64_t off, unsigned flags)
{
  int r = check_writable(v, "write");
  if (r == 0)
    r = check_range(v, "write", len, off);
  if (r < 0)
    return r;
  bool emulate_fua = (flags & VOLUME_FUA) && !(v->caps & VOLUME_CAN_FUA);
  if (emulate_fua)
    flags &= ~VOLUME_FUA;
  const char *p = buf;
  while (len > 0) {
    size_t n = len < v->max_request ? len : v->max_request;
    if ((r = v->ops->pwrite(v, p, n, off, flags)) < 0)
      return r;
    p += n;
    off += n;
    len -= n;
  }
  return emulate_fua ? volume_flush(v) : 0;
}

static int
zero_by_writing(struct volume *v, uint64_t len, uint64_t off, unsigned flags)
{
  size_t chunk = (size_t)min_u64(len, min_u64(v->max_request, 4u << 20));
  void *zeroes = calloc(1, chunk ? chunk : 1);
  if (!zeroes)
    return error_set(ENOMEM, "%s: out of memory", v->name);
  int r = 0;
  while (len > 0 && r == 0) {
    size_t n = (size_t)min_u64(len, chunk);
    r = v->ops->pwrite(v, zeroes, n, off, flags & VOLUME_FUA);
    off += n;
    len -= n;
  }
  free(zeroes);
  return r;
}

int
volume_zero(struct volume *v, uint64_t len, uint64_t off, unsigned flags)
{
  int r = check_writable(v, "write zeroes");
  if (r == 0)
    r = check_range(v, "write zeroes", len, off);
  if (r < 0)
    return r;
  if (len == 0)
    return 0;
  bool emulate_fua = (flags & VOLUME_FUA) && !(v->caps & VOLUME_CAN_FUA);
  if (emulate_fua)
    flags &= ~VOLUME_FUA;
  if (!v->ops->zero || !(v->caps & VOLUME_CAN_ZERO)) {
    if (flags & VOLUME_FAST_ZERO)
      return error_set(ENOTSUP, "%s: fast zero is not supported", v->name);
    r = zero_by_writing(v, len, off, flags);
  } else {
    r = v->ops->zero(v, len, off, flags);
    if (r == -ENOTSUP && !(flags & VOLUME_FAST_ZERO))
      r = zero_by_writing(v, len, off, flags);
  }
  if (r == 0 && emulate_fua)
    r = volume_flush(v);
  return r;
}

int
volume_trim(struct volume *v, uint64_t len, uint64_t off, unsigned flags)
{
  int r = check_writable(v, "trim");
  if (r == 0)
    r = check_range(v, "trim", len, off);
  if (r < 0)
    return r;
  /* Trim is advisory: a volume that cannot trim keeps its data and that is correct. */
  if (len == 0 || !v->ops->trim || !(v->caps & VOLUME_CAN_TRIM))
    return (flags & VOLUME_FUA) ? volume_flush(v) : 0;
  bool emulate_fua = (flags & VOLUME_FUA) && !(v->caps & VOLUME_CAN_FUA);
  r = v->ops->trim(v, len, off, emulate_fua ? flags & ~VOLUME_FUA : flags);
  if (r == 0 && emulate_fua)
    r = volume_flush(v);
  return r;
}

int
volume_flush(struct volume *v)
{
  if (!v->ops->flush || !(v->caps & VOLUME_CAN_FLUSH))
    return 0;
  return v->ops->flush(v);
}

static int
extents_common(struct volume *v, bool known, uint64_t len, uint64_t off, struct extent_list *out)
{
  int r = check_range(v, "block status", len, off);
  if (r < 0)
    return r;
  if (len == 0)
    return 0;
  if (!v->ops->extents || !(v->caps & VOLUME_CAN_EXTENTS))
    return extent_list_add(out, off, len, 0);
  size_t before = out->n;
  uint64_t last_len = before ? out->v[before - 1].length : 0;
  if (known && v->ops->known_extents)
    r = v->ops->known_extents(v, len, off, out);
  else
    r = v->ops->extents(v, len, off, out);
  /* Nothing added: no new extent, and none merged into the caller's last one. */
  if (r == 0 && out->n == before && (before == 0 || out->v[before - 1].length == last_len))
    return error_set(EIO, "%s: driver returned no extents at offset %" PRIu64, v->name, off);
  return r;
}

int
volume_extents(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out)
{
  return extents_common(v, false, len, off, out);
}

int
volume_known_extents(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out)
{
  return extents_common(v, true, len, off, out);
}

int
volume_file_range(struct volume *v, uint64_t len, uint64_t off, int *fd, uint64_t *foff)
{
  if (!v->ops->file_range || len == 0 || off > v->size || len > v->size - off)
    return -ENOTSUP;
  return v->ops->file_range(v, len, off, fd, foff);
}

int
volume_cache(struct volume *v, uint64_t len, uint64_t off)
{
  int r = check_range(v, "cache", len, off);
  if (r < 0)
    return r;
  if (!v->ops->cache || !(v->caps & VOLUME_CAN_CACHE))
    return 0;
  return v->ops->cache(v, len, off);
}

int
volume_health(struct volume *v, char *reason, size_t len)
{
  if (len)
    reason[0] = 0;
  return v->ops->health ? v->ops->health(v, reason, len) : 0;
}

static _Thread_local struct volume_wait_bounds thread_bounds;

struct volume_wait_bounds
volume_set_wait_bounds(const struct volume_wait_bounds *b)
{
  struct volume_wait_bounds old = thread_bounds;
  thread_bounds = b ? *b : (struct volume_wait_bounds){ 0, NULL };
  return old;
}

struct volume_wait_bounds
volume_wait_bounds(void)
{
  return thread_bounds;
}

int
extent_list_add(struct extent_list *l, uint64_t offset, uint64_t length, uint32_t flags)
{
  if (length == 0)
    return 0;
  if (l->n > 0) {
    struct extent *last = &l->v[l->n - 1];
    if (last->offset + last->length == offset && last->flags == flags) {
      last->length += length;
      return 0;
    }
  }
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    struct extent *v = realloc(l->v, cap * sizeof *v);
    if (!v)
      return error_set(ENOMEM, "out of memory for extents");
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = (struct extent){ offset, length, flags };
  return 0;
}

void
extent_list_reset(struct extent_list *l)
{
  l->n = 0;
}

void
extent_list_free(struct extent_list *l)
{
  free(l->v);
  l->v = NULL;
  l->n = l->cap = 0;
}

bool
buffer_is_zero(const void *buf, size_t len)
{
  const unsigned char *p = buf;
  /* Check a short prefix byte-wise, then compare the buffer with itself shifted: memcmp
   * is vectorised, so this runs at memory speed. */
  size_t head = len < 16 ? len : 16;
  for (size_t i = 0; i < head; i++)
    if (p[i])
      return false;
  return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

uint64_t
volume_refresh_size(struct volume *v)
{
  if (v->ops->refresh_size)
    v->ops->refresh_size(v);
  return __atomic_load_n(&v->size, __ATOMIC_ACQUIRE);
}

/* ---- zero extension: a read-only view of a volume that reads as zeroes past its end ---- */

struct extended {
  struct volume v;
  struct volume *inner;
};

/* Where the inner volume ends for a request reaching `reach`: a file may have grown since it
 * was opened (a qcow2 image the guest kept allocating in until ferry live-move paused it):
 * what it holds there is data, not the zeroes of the extension. */
static uint64_t
inner_end(struct extended *e, uint64_t reach)
{
  uint64_t end = __atomic_load_n(&e->inner->size, __ATOMIC_ACQUIRE);
  if (reach > end)
    end = volume_refresh_size(e->inner);
  return min_u64(end, e->v.size);
}

static int
extended_pread(struct volume *v, void *buf, size_t len, uint64_t off)
{
  struct extended *e = (struct extended *)v;
  uint64_t end = inner_end(e, off + len);
  size_t n = off >= end ? 0 : (size_t)min_u64(len, end - off);
  int r = n ? volume_pread(e->inner, buf, n, off) : 0;
  if (r == 0 && n < len)
    memset((char *)buf + n, 0, len - n);
  return r;
}

static int
extended_extents(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out)
{
  struct extended *e = (struct extended *)v;
  uint64_t end = inner_end(e, off + len);
  if (off < end)
    return volume_extents(e->inner, min_u64(len, end - off), off, out);
  return extent_list_add(out, off, len, EXTENT_HOLE | EXTENT_ZERO);
}

static void
extended_close(struct volume *v)
{
  struct extended *e = (struct extended *)v;
  volume_close(e->inner);
  free(e->v.name);
  free(e);
}

static const struct volume_ops extended_ops = {
  .driver = "zero-extended",
  .pread = extended_pread,
  .extents = extended_extents,
  .close = extended_close,
};

int
volume_extend_zero(struct volume *inner, uint64_t size, struct volume **out)
{
  if (size <= inner->size) {
    *out = inner;
    return 0;
  }
  struct extended *e = calloc(1, sizeof *e);
  if (!e)
    return error_set(ENOMEM, "out of memory");
  e->inner = inner;
  e->v.min_block = inner->min_block;
  e->v.preferred_block = inner->preferred_block;
  e->v.max_request = inner->max_request;
  e->v.caps = VOLUME_CAN_EXTENTS | (inner->caps & VOLUME_MULTI_CONN);
  if (volume_init(&e->v, &extended_ops, inner->name, size) < 0) {
    free(e);
    return -ENOMEM;
  }
  *out = &e->v;
  return 0;
}
