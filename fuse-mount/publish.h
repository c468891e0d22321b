/* ferry-fuse --publish PATH: the clone is opened through PATH until it converges, then PATH
 * is the destination file itself.
 *
 * Once the mount (and its loop device) is ready, PATH becomes a symlink to the served disk
 * (MOUNTPOINT/disk, or /dev/loopN), created beside PATH and renamed over it.  At convergence
 * (every region on the destination, flushed, map committed) the destination file is renamed
 * over PATH: rename(2) replaces the symlink atomically, so an open of PATH gets either the
 * clone or the complete file, never nothing; descriptors opened before keep reading through
 * the clone, which now reads and writes the same file.  The destination must therefore be a
 * file on PATH's filesystem.  ferry-fuse then exits once nothing has the disk open.
 */
#ifndef FERRY_FUSE_PUBLISH_H
#define FERRY_FUSE_PUBLISH_H

#include <limits.h>
#include <stdbool.h>

struct publish {
  const char *path;    /* PATH */
  char dest[PATH_MAX]; /* the destination file */
  bool already;        /* PATH is the destination already (an earlier run renamed it) */
};

/* Check PATH against the clone's destination volume (a path or file:// URI) before anything
 * is opened: the destination must be a file on PATH's filesystem, and PATH nothing, a
 * symlink, or — when the destination is gone — the destination renamed by an earlier run
 * (then *volume is set to PATH and p->already).  0 or -errno with a message. */
int publish_prepare(struct publish *p, const char *path, const char **volume);

/* PATH -> target, atomically.  0 or -errno with a message. */
int publish_link(struct publish *p, const char *target);

/* The destination over PATH, atomically and durably (the directory is fsynced).
 * 0 or -errno with a message. */
int publish_finish(struct publish *p);

#endif
