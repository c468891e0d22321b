/* ferry: the file driver — regular files and block devices.
 *
 * Sparse-aware: extents from SEEK_DATA/SEEK_HOLE, zero and trim by fallocate.  O_DIRECT on
 * request (volume_options.direct): requests must then be aligned to min_block (4096), and
 * misaligned caller buffers are bounced through an aligned one.
 */
#include "backends/volume.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

struct file_volume {
  struct volume v;
  int fd;
  bool is_block;
  bool direct;
  bool can_punch; /* cleared after the first EOPNOTSUPP */
  bool can_zero_range;
  bool write_behind;
  unsigned id; /* tells write_behind's per-thread note apart from a reused address */
};

bool volume_uri_has_scheme(const char *uri);

static bool
file_matches(const char *uri)
{
  return strncmp(uri, "file://", 7) == 0 || !volume_uri_has_scheme(uri);
}

#define DIRECT_ALIGN 4096

static int
file_pread(struct volume *v, void *buf, size_t len, uint64_t off)
{
  struct file_volume *f = (struct file_volume *)v;
  int r;
  if (f->direct && ((uintptr_t)buf % DIRECT_ALIGN)) {
    void *bounce;
    if (posix_memalign(&bounce, DIRECT_ALIGN, len))
      return error_set(ENOMEM, "%s: out of memory", v->name);
    r = full_pread(f->fd, bounce, len, off);
    if (r == 0)
      memcpy(buf, bounce, len);
    free(bounce);
  } else
    r = full_pread(f->fd, buf, len, off);
  if (r < 0)
    return error_set_errno(-r, "%s: read %zu bytes at offset %" PRIu64, v->name, len, off);
  return 0;
}

/* The file itself, unless it is read with O_DIRECT (splice would copy through a bounce
 * page then). */
static int
file_file_range(struct volume *v, uint64_t len, uint64_t off, int *fd, uint64_t *foff)
{
  struct file_volume *f = (struct file_volume *)v;
  if (f->direct)
    return -ENOTSUP;
  *fd = f->fd;
  *foff = off;
  (void)len;
  return 0;
}

static int
file_sync(struct file_volume *f)
{
  if (fdatasync(f->fd) < 0)
    return error_set_errno(errno, "%s: flush", f->v.name);
  return 0;
}

/* Write-behind for bulk copies: each thread notes the range it wrote last; its next write
 * waits for that range's write-back and drops it from the page cache, and only starts the
 * write-back of the new one.  A copy thus never piles up gigabytes of dirty pages (slow to
 * allocate, and all waiting for the final flush), as nbdcopy does too.  Hints only:
 * write-back errors still surface at the final flush (fdatasync). */
static _Thread_local struct {
  unsigned id;
  uint64_t off, len;
} behind;
static _Atomic unsigned next_id = 1;

static void
write_behind(struct file_volume *f, uint64_t off, size_t len)
{
  if (behind.id == f->id && behind.len) {
    sync_file_range(f->fd, (off_t)behind.off, (off_t)behind.len,
                    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                        SYNC_FILE_RANGE_WAIT_AFTER);
    posix_fadvise(f->fd, (off_t)behind.off, (off_t)behind.len, POSIX_FADV_DONTNEED);
  }
  sync_file_range(f->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
  behind.id = f->id;
  behind.off = off;
  behind.len = len;
}

static int
file_pwrite(struct volume *v, const void *buf, size_t len, uint64_t off, unsigned flags)
{
  struct file_volume *f = (struct file_volume *)v;
  int r;
  if (f->direct && ((uintptr_t)buf % DIRECT_ALIGN)) {
    void *bounce;
    if (posix_memalign(&bounce, DIRECT_ALIGN, len))
      return error_set(ENOMEM, "%s: out of memory", v->name);
    memcpy(bounce, buf, len);
    r = full_pwrite(f->fd, bounce, len, off);
    free(bounce);
  } else
    r = full_pwrite(f->fd, buf, len, off);
  if (r < 0)
    return error_set_errno(-r, "%s: write %zu bytes at offset %" PRIu64, v->name, len, off);
  if (f->write_behind || (flags & VOLUME_BULK))
    write_behind(f, off, len);
  /* FUA: the data must be durable before we acknowledge it. */
  return (flags & VOLUME_FUA) ? file_sync(f) : 0;
}

static int
file_zero(struct volume *v, uint64_t len, uint64_t off, unsigned flags)
{
  struct file_volume *f = (struct file_volume *)v;
  /* Punching reads back as zeroes on files and on block devices (blkdev_fallocate). */
  if ((flags & VOLUME_MAY_TRIM) && f->can_punch) {
    if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
      goto done;
    if (errno != EOPNOTSUPP && errno != ENOSYS)
      return error_set_errno(errno, "%s: punch hole at %" PRIu64 "+%" PRIu64, v->name, off, len);
    f->can_punch = false;
  }
  if (f->can_zero_range) {
    if (fallocate(f->fd, FALLOC_FL_ZERO_RANGE | (f->is_block ? FALLOC_FL_KEEP_SIZE : 0),
                  (off_t)off, (off_t)len) == 0)
      goto done;
    if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
      return error_set_errno(errno, "%s: zero range at %" PRIu64 "+%" PRIu64, v->name, off, len);
    f->can_zero_range = false;
  }
  /* The dispatcher falls back to writing zeroes (or refuses a FAST_ZERO). */
  return error_set(ENOTSUP, "%s: efficient zeroing is not supported", v->name);
done:
  return (flags & VOLUME_FUA) ? file_sync(f) : 0;
}

static int
file_trim(struct volume *v, uint64_t len, uint64_t off, unsigned flags)
{
  struct file_volume *f = (struct file_volume *)v;
  if (f->can_punch &&
      fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0) {
    if (errno != EOPNOTSUPP && errno != ENOSYS)
      return error_set_errno(errno, "%s: trim at %" PRIu64 "+%" PRIu64, v->name, off, len);
    f->can_punch = false; /* advisory: ignoring it is correct */
  }
  return (flags & VOLUME_FUA) ? file_sync(f) : 0;
}

static int
file_flush(struct volume *v)
{
  return file_sync((struct file_volume *)v);
}

static int
file_extents(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out)
{
  struct file_volume *f = (struct file_volume *)v;
  uint64_t end = off + len;
  while (off < end) {
    off_t data = lseek(f->fd, (off_t)off, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) /* only a hole up to the end of file */
        return extent_list_add(out, off, end - off, EXTENT_HOLE | EXTENT_ZERO);
      return error_set_errno(errno, "%s: SEEK_DATA at %" PRIu64, v->name, off);
    }
    if ((uint64_t)data > off) {
      uint64_t hole_end = min_u64((uint64_t)data, end);
      int r = extent_list_add(out, off, hole_end - off, EXTENT_HOLE | EXTENT_ZERO);
      if (r < 0)
        return r;
      off = hole_end;
      continue;
    }
    off_t hole = lseek(f->fd, (off_t)off, SEEK_HOLE);
    if (hole < 0)
      return error_set_errno(errno, "%s: SEEK_HOLE at %" PRIu64, v->name, off);
    uint64_t data_end = min_u64((uint64_t)hole, end);
    if (data_end <= off) /* file changed under us: report the rest as data */
      data_end = end;
    int r = extent_list_add(out, off, data_end - off, 0);
    if (r < 0)
      return r;
    off = data_end;
  }
  return 0;
}

static int
file_cache(struct volume *v, uint64_t len, uint64_t off)
{
  struct file_volume *f = (struct file_volume *)v;
  posix_fadvise(f->fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
  return 0;
}

static void
file_close(struct volume *v)
{
  struct file_volume *f = (struct file_volume *)v;
  close(f->fd);
  free(v->name);
  free(f);
}

/* A regular file another process appends to: its size now (never smaller than before). */
static void
file_refresh_size(struct volume *v)
{
  struct file_volume *f = (struct file_volume *)v;
  struct stat st;
  if (f->is_block || fstat(f->fd, &st) < 0)
    return;
  uint64_t now = (uint64_t)st.st_size, was = __atomic_load_n(&v->size, __ATOMIC_ACQUIRE);
  while (now > was && !__atomic_compare_exchange_n(&v->size, &was, now, false, __ATOMIC_RELEASE,
                                                   __ATOMIC_ACQUIRE))
    ;
}

static const struct volume_ops file_ops = {
  .driver = "file",
  .pread = file_pread,
  .pwrite = file_pwrite,
  .zero = file_zero,
  .trim = file_trim,
  .flush = file_flush,
  .extents = file_extents,
  .cache = file_cache,
  .close = file_close,
  .refresh_size = file_refresh_size,
  .file_range = file_file_range,
};

static int
file_open(const char *uri, const struct volume_options *o, struct volume **out)
{
  const char *path = uri;
  if (strncmp(uri, "file://", 7) == 0) {
    path = uri + 7;
    if (*path != '/')
      return error_set(EINVAL, "%s: file URI must name an absolute path (file:///path)", uri);
  }
  int flags = (o->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (o->direct)
    flags |= O_DIRECT;
  int fd = open(path, flags);
  if (fd < 0 && errno == ENOENT && o->create && !o->readonly) {
    fd = open(path, flags | O_CREAT | O_EXCL, 0644);
    if (fd >= 0 && ftruncate(fd, (off_t)o->create_size) < 0) {
      int e = errno;
      close(fd);
      unlink(path);
      return error_set_errno(e, "%s: cannot set size of new file", path);
    }
  }
  if (fd < 0)
    return error_set_errno(errno, "%s", path);

  struct stat st;
  uint64_t size = 0;
  bool is_block = false;
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    return error_set_errno(e, "%s: stat", path);
  }
  if (S_ISBLK(st.st_mode)) {
    is_block = true;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
      int e = errno;
      close(fd);
      return error_set_errno(e, "%s: cannot get block device size", path);
    }
  } else if (S_ISREG(st.st_mode)) {
    size = (uint64_t)st.st_size;
  } else {
    close(fd);
    return error_set(EINVAL, "%s: not a regular file or block device", path);
  }

  struct file_volume *f = calloc(1, sizeof *f);
  if (!f) {
    close(fd);
    return error_set(ENOMEM, "%s: out of memory", path);
  }
  f->fd = fd;
  f->is_block = is_block;
  f->direct = o->direct;
  f->can_punch = true;
  f->can_zero_range = true;
  f->write_behind = o->write_behind && !is_block;
  f->id = atomic_fetch_add(&next_id, 1);
  if (o->direct)
    f->v.min_block = DIRECT_ALIGN;
  f->v.preferred_block = 4096;
  f->v.max_request = 64u << 20;
  f->v.caps = VOLUME_CAN_FLUSH | VOLUME_CAN_CACHE | VOLUME_MULTI_CONN;
  if (!is_block)
    f->v.caps |= VOLUME_CAN_EXTENTS;
  if (!o->readonly)
    f->v.caps |= VOLUME_CAN_WRITE | VOLUME_CAN_TRIM | VOLUME_CAN_ZERO | VOLUME_CAN_FAST_ZERO;
  if (volume_init(&f->v, &file_ops, path, size) < 0) {
    close(fd);
    free(f);
    return -ENOMEM;
  }
  debug("file", "%s: %" PRIu64 " bytes%s%s", path, size, is_block ? " (block device)" : "",
        o->direct ? " O_DIRECT" : "");
  *out = &f->v;
  return 0;
}

const struct volume_driver file_driver = {
  .name = "file",
  .matches = file_matches,
  .open = file_open,
};
