/* ferry-fuse: the filesystem, see fs.h.
 *
 * Inode 1 is the root directory, inode 2 `disk`, inode 3 + i the i-th partition.  Nothing
 * here changes after mount (sizes are fixed), so the kernel may cache names and attributes
 * for long.  Every request is answered on the libfuse worker thread that received it; the
 * volume is thread-safe, so reads and writes run in parallel.
 */
#include "fuse-mount/fs.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define DISK_INO 2
#define CACHE_SECONDS 3600.0
#define MAX_IO (1u << 20)

struct node {
  char name[32]; /* "disk", "disk-p1", ... */
  uint64_t offset, length;
};

struct fs {
  struct volume *vol;
  struct fs_config cfg;
  struct partition_table parts;
  struct node *nodes; /* nodes[0] is disk; nodes[1 + i] is parts.v[i] */
  size_t n_nodes;
  uid_t uid;
  gid_t gid;
  struct timespec mtime;
  atomic_uint own_open_files;
  atomic_uint *open_files;  /* &own_open_files, or the supervisor's shared counter */
  pthread_mutex_t rmw_lock; /* read-modify-write of partial blocks (min_block > 1) */
};

struct fs *
fs_create(struct volume *vol, struct partition_table *parts, const struct fs_config *cfg)
{
  struct fs *fs = calloc(1, sizeof *fs);
  if (!fs)
    return NULL;
  fs->nodes = calloc(1 + parts->n, sizeof *fs->nodes);
  if (!fs->nodes) {
    free(fs);
    return NULL;
  }
  fs->vol = vol;
  fs->cfg = *cfg;
  fs->parts = *parts;
  memset(parts, 0, sizeof *parts);
  fs->n_nodes = 1 + fs->parts.n;
  snprintf(fs->nodes[0].name, sizeof fs->nodes[0].name, "disk");
  fs->nodes[0].length = vol->size;
  for (size_t i = 0; i < fs->parts.n; i++) {
    struct node *n = &fs->nodes[1 + i];
    snprintf(n->name, sizeof n->name, "disk-p%u", fs->parts.v[i].number);
    n->offset = fs->parts.v[i].offset;
    n->length = fs->parts.v[i].length;
  }
  fs->uid = getuid();
  fs->gid = getgid();
  clock_gettime(CLOCK_REALTIME, &fs->mtime);
  atomic_init(&fs->own_open_files, 0);
  fs->open_files = cfg->open_files ? cfg->open_files : &fs->own_open_files;
  pthread_mutex_init(&fs->rmw_lock, NULL);
  return fs;
}

void
fs_destroy(struct fs *fs)
{
  if (!fs)
    return;
  pthread_mutex_destroy(&fs->rmw_lock);
  partitions_free(&fs->parts);
  free(fs->nodes);
  free(fs);
}

unsigned
fs_open_files(void *opaque)
{
  struct fs *fs = opaque;
  return atomic_load(fs->open_files);
}

static const struct node *
node_of(struct fs *fs, fuse_ino_t ino)
{
  if (ino < DISK_INO || ino - DISK_INO >= fs->n_nodes)
    return NULL;
  return &fs->nodes[ino - DISK_INO];
}

/* A volume error as an errno for the kernel, logged since the caller sees only the number. */
static int
failed(int r)
{
  log_error("%s", error_message());
  r = -r;
  return r > 0 && r < 4096 ? r : EIO;
}

static void
fill_attr(struct fs *fs, fuse_ino_t ino, struct stat *st)
{
  memset(st, 0, sizeof *st);
  st->st_ino = ino;
  st->st_uid = fs->uid;
  st->st_gid = fs->gid;
  st->st_atim = st->st_mtim = st->st_ctim = fs->mtime;
  st->st_blksize = 4096;
  if (ino == FUSE_ROOT_ID) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return;
  }
  const struct node *n = node_of(fs, ino);
  st->st_mode = S_IFREG | (fs->cfg.readonly ? 0444 : 0644);
  st->st_nlink = 1;
  st->st_size = (off_t)n->length;
  st->st_blocks = (blkcnt_t)((n->length + 511) / 512);
}

#define FS_MAX_BACKGROUND 64

static void
fs_init(void *userdata, struct fuse_conn_info *conn)
{
  struct fs *fs = userdata;
  /* Large requests: 1 MiB per read/write (the kernel's limit is 256 pages). */
  conn->max_write = MAX_IO;
  conn->max_read = MAX_IO; /* must equal the max_read mount option */
  conn->max_readahead = MAX_IO;
  /* Asynchronous direct I/O (io_submit, qemu's aio=native) and readahead are "background"
   * requests, of which the kernel keeps at most max_background in flight (default 12):
   * let a QD32 guest have its 32 at once; the volume runs them in parallel. */
  conn->max_background = FS_MAX_BACKGROUND;
  conn->congestion_threshold = FS_MAX_BACKGROUND * 3 / 4;
  /* The disk changes only through us: no need for the kernel to recheck mtimes. */
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  if (fs->cfg.on_init)
    fs->cfg.on_init();
}

static void
fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
  struct fs *fs = fuse_req_userdata(req);
  if (parent != FUSE_ROOT_ID) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  for (size_t i = 0; i < fs->n_nodes; i++) {
    if (strcmp(fs->nodes[i].name, name) == 0) {
      struct fuse_entry_param e;
      memset(&e, 0, sizeof e);
      e.ino = DISK_INO + i;
      e.generation = 1;
      e.attr_timeout = e.entry_timeout = CACHE_SECONDS;
      fill_attr(fs, e.ino, &e.attr);
      fuse_reply_entry(req, &e);
      return;
    }
  }
  fuse_reply_err(req, ENOENT);
}

static void
fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  (void)fi;
  struct fs *fs = fuse_req_userdata(req);
  if (ino != FUSE_ROOT_ID && !node_of(fs, ino)) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st;
  fill_attr(fs, ino, &st);
  fuse_reply_attr(req, &st, CACHE_SECONDS);
}

static void
fs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
  struct fs *fs = fuse_req_userdata(req);
  const struct node *n = node_of(fs, ino);
  /* The size of a disk is fixed; O_TRUNC and ftruncate to another size are refused.  Mode,
   * owner and times are not stored: accepted and ignored so that tools like cp work. */
  if (n && (to_set & FUSE_SET_ATTR_SIZE) && (uint64_t)attr->st_size != n->length) {
    fuse_reply_err(req, EPERM);
    return;
  }
  fs_getattr(req, ino, fi);
}

static void
fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
  (void)fi;
  struct fs *fs = fuse_req_userdata(req);
  if (ino != FUSE_ROOT_ID) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  char *buf = malloc(size);
  if (!buf) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  size_t used = 0;
  /* Entry k (0 ".", 1 "..", 2 + i node i); the offset given back is k + 1. */
  for (size_t k = (size_t)off; k < 2 + fs->n_nodes; k++) {
    struct stat st = { 0 };
    const char *name;
    if (k < 2) {
      name = k == 0 ? "." : "..";
      st.st_ino = FUSE_ROOT_ID;
      st.st_mode = S_IFDIR;
    } else {
      name = fs->nodes[k - 2].name;
      st.st_ino = DISK_INO + (k - 2);
      st.st_mode = S_IFREG;
    }
    size_t need = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)(k + 1));
    if (need > size - used)
      break;
    used += need;
  }
  fuse_reply_buf(req, buf, used);
  free(buf);
}

static void
release_one(struct fs *fs)
{
  if (atomic_fetch_sub(fs->open_files, 1) == 1 && fs->cfg.on_idle)
    fs->cfg.on_idle(fs->cfg.opaque);
}

static void
fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct fs *fs = fuse_req_userdata(req);
  if (!node_of(fs, ino)) {
    fuse_reply_err(req, ino == FUSE_ROOT_ID ? EISDIR : ENOENT);
    return;
  }
  if (fs->cfg.readonly && (fi->flags & O_ACCMODE) != O_RDONLY) {
    fuse_reply_err(req, EROFS);
    return;
  }
  fi->direct_io = fs->cfg.direct_io;
  /* Without direct I/O the page cache may stay valid across opens: only we change the data. */
  fi->keep_cache = !fs->cfg.direct_io;
  /* Counted before the reply and uncounted after it (release below): a server killed in
   * between (--supervise) leaves the count too high, never too low — the mount then stays
   * until it is stopped, instead of going while the disk is open. */
  atomic_fetch_add(fs->open_files, 1);
  if (fuse_reply_open(req, fi) != 0)
    release_one(fs); /* the opener was interrupted: no release follows */
}

static void
fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  (void)ino;
  (void)fi;
  struct fs *fs = fuse_req_userdata(req);
  fuse_reply_err(req, 0);
  release_one(fs);
}

/* Reads and writes at any offset/length, even when the volume wants aligned requests. */
static int
io_read(struct fs *fs, void *buf, size_t len, uint64_t off)
{
  uint64_t align = fs->vol->min_block;
  if (align <= 1 || ((off | len) & (align - 1)) == 0)
    return volume_pread(fs->vol, buf, len, off);
  uint64_t start = off & ~(align - 1), end = (off + len + align - 1) & ~(align - 1);
  char *bounce = malloc(end - start);
  if (!bounce)
    return error_set(ENOMEM, "%s: out of memory", fs->vol->name);
  int r = volume_pread(fs->vol, bounce, end - start, start);
  if (r == 0)
    memcpy(buf, bounce + (off - start), len);
  free(bounce);
  return r;
}

static int
io_write(struct fs *fs, const void *buf, size_t len, uint64_t off)
{
  uint64_t align = fs->vol->min_block;
  if (align <= 1 || ((off | len) & (align - 1)) == 0)
    return volume_pwrite(fs->vol, buf, len, off, 0);
  uint64_t start = off & ~(align - 1), end = (off + len + align - 1) & ~(align - 1);
  char *bounce = malloc(end - start);
  if (!bounce)
    return error_set(ENOMEM, "%s: out of memory", fs->vol->name);
  /* Serialise partial-block updates so two of them cannot lose each other's bytes. */
  pthread_mutex_lock(&fs->rmw_lock);
  int r = volume_pread(fs->vol, bounce, end - start, start);
  if (r == 0) {
    memcpy(bounce + (off - start), buf, len);
    r = volume_pwrite(fs->vol, bounce, end - start, start, 0);
  }
  pthread_mutex_unlock(&fs->rmw_lock);
  free(bounce);
  return r;
}

static void
fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
  (void)fi;
  struct fs *fs = fuse_req_userdata(req);
  const struct node *n = node_of(fs, ino);
  if (!n) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  if (off < 0 || (uint64_t)off >= n->length || size == 0) {
    fuse_reply_buf(req, NULL, 0); /* end of file */
    return;
  }
  size = (size_t)min_u64(size, n->length - (uint64_t)off);
  void *buf = malloc(size);
  if (!buf) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  int r = io_read(fs, buf, size, n->offset + (uint64_t)off);
  if (r < 0)
    fuse_reply_err(req, failed(r));
  else
    fuse_reply_buf(req, buf, size);
  free(buf);
}

/* The file a write or fallocate targets, or NULL after replying EISDIR (the root) or EROFS. */
static const struct node *
writable_node(fuse_req_t req, struct fs *fs, fuse_ino_t ino)
{
  const struct node *n = node_of(fs, ino);
  if (!n)
    fuse_reply_err(req, EISDIR);
  else if (fs->cfg.readonly)
    fuse_reply_err(req, EROFS);
  else
    return n;
  return NULL;
}

static void
fs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
         struct fuse_file_info *fi)
{
  (void)fi;
  struct fs *fs = fuse_req_userdata(req);
  const struct node *n = writable_node(req, fs, ino);
  if (!n)
    return;
  /* Like a block device: no writing past the end (a short write, then ENOSPC). */
  if (off < 0 || (uint64_t)off >= n->length) {
    fuse_reply_err(req, size ? ENOSPC : 0);
    return;
  }
  size = (size_t)min_u64(size, n->length - (uint64_t)off);
  int r = io_write(fs, buf, size, n->offset + (uint64_t)off);
  if (r < 0)
    fuse_reply_err(req, failed(r));
  else
    fuse_reply_write(req, size);
}

static void
fs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  (void)ino;
  (void)fi;
  /* close(2) promises no durability; fsync(2) does (below).  Acknowledged writes are already
   * on the volume, so there is nothing to do here. */
  fuse_reply_err(req, 0);
}

static void
fs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
  (void)ino;
  (void)datasync;
  (void)fi;
  struct fs *fs = fuse_req_userdata(req);
  /* Durability: fsync succeeds only once every write acknowledged so far is durable on the
   * volume (for a clone: destination flushed, then its map committed). */
  int r = volume_flush(fs->vol);
  fuse_reply_err(req, r < 0 ? failed(r) : 0);
}

static void
fs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
             struct fuse_file_info *fi)
{
  (void)fi;
  struct fs *fs = fuse_req_userdata(req);
  const struct node *n = writable_node(req, fs, ino);
  if (!n)
    return;
  if (off < 0 || len <= 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  uint64_t start = (uint64_t)off, end = start + (uint64_t)len;
  if (end < start || end > n->length) {
    /* The file cannot grow; with KEEP_SIZE the part past the end is simply not there. */
    if (!(mode & FALLOC_FL_KEEP_SIZE)) {
      fuse_reply_err(req, EOPNOTSUPP);
      return;
    }
    end = n->length;
  }
  if (start >= end) {
    fuse_reply_err(req, 0);
    return;
  }
  int r = 0;
  switch (mode & ~FALLOC_FL_KEEP_SIZE) {
  case 0: /* preallocate: a disk is always fully there */
    break;
  case FALLOC_FL_PUNCH_HOLE:
    /* A punched range must read back as zeroes (fallocate(2); the kernel's loop driver even
     * turns WRITE_ZEROES into a punch), and volume_trim is only advisory: so zero, and let
     * the volume deallocate (MAY_TRIM) where it can. */
    r = volume_zero(fs->vol, end - start, n->offset + start, VOLUME_MAY_TRIM);
    break;
  case FALLOC_FL_ZERO_RANGE:
    r = volume_zero(fs->vol, end - start, n->offset + start, 0);
    break;
  default:
    fuse_reply_err(req, EOPNOTSUPP);
    return;
  }
  fuse_reply_err(req, r < 0 ? failed(r) : 0);
}

static void
fs_statfs(fuse_req_t req, fuse_ino_t ino)
{
  (void)ino;
  struct fs *fs = fuse_req_userdata(req);
  struct statvfs sv;
  memset(&sv, 0, sizeof sv);
  sv.f_bsize = sv.f_frsize = 4096;
  sv.f_blocks = (fs->vol->size + 4095) / 4096;
  sv.f_files = sv.f_ffree = 0;
  sv.f_namemax = 255;
  fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops fs_ops = {
  .init = fs_init,
  .lookup = fs_lookup,
  .getattr = fs_getattr,
  .setattr = fs_setattr,
  .readdir = fs_readdir,
  .open = fs_open,
  .release = fs_release,
  .read = fs_read,
  .write = fs_write,
  .flush = fs_flush,
  .fsync = fs_fsync,
  .fallocate = fs_fallocate,
  .statfs = fs_statfs,
};
