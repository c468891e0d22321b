/* ferry-fuse: the filesystem — a root directory holding `disk` (the whole volume) and
 * `disk-pN` (one per partition), served with the libfuse low-level API. */
#ifndef FERRY_FS_H
#define FERRY_FS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include "backends/volume.h"
#include "fuse-mount/partitions.h"

#include <stdatomic.h>
#include <stdbool.h>

struct fs_config {
  bool readonly;
  bool direct_io; /* no page cache in front of the volume */
  /* Files open through the mount: NULL to count in the fs, else a counter that outlives this
   * process (--supervise: shared by every server of the mount). */
  atomic_uint *open_files;
  /* Called once libfuse has processed FUSE_INIT (may be NULL). */
  void (*on_init)(void);
  /* Called when the last open file is released (may be NULL), from a session thread. */
  void (*on_idle)(void *opaque);
  void *opaque;
};

struct fs;

/* The fs keeps pointers to vol and takes ownership of the partition table. */
struct fs *fs_create(struct volume *vol, struct partition_table *parts,
                     const struct fs_config *cfg);
void fs_destroy(struct fs *fs);

extern const struct fuse_lowlevel_ops fs_ops;

/* Files currently open (the control socket's "clients"). */
unsigned fs_open_files(void *fs);

#endif
