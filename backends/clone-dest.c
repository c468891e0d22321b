/* ferry: what the clone's map knows about its destination (issue 13, item 4): an identity
 * recorded in the map and checked on every open, and whether a destination without a map
 * already holds data (then a new map is refused unless --new-map). */
#include "backends/clone-internal.h"
#include "common/error.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

bool volume_uri_has_scheme(const char *uri);

/* A regular file is its inode: a copy, or a file made anew at the same path, is another
 * destination, while a rename keeps it.  (Not the device number: device-mapper minors, and
 * so st_dev of the filesystems on them, change across reboots.)  A block device is its path
 * as given (/dev/vg/lv is stable, /dev/dm-N is not); anything else its URI. */
void
clone_dest_identity(const char *uri, char *out, size_t len)
{
  const char *path = strncmp(uri, "file://", 7) == 0 ? uri + 7 : uri;
  struct stat st;
  if ((path != uri || !volume_uri_has_scheme(uri)) && stat(path, &st) == 0) {
    if (S_ISREG(st.st_mode)) {
      snprintf(out, len, "inode %" PRIu64, (uint64_t)st.st_ino);
      return;
    }
    if (S_ISBLK(st.st_mode)) {
      snprintf(out, len, "block device %.200s", path);
      return;
    }
  }
  snprintf(out, len, "%.200s", uri);
}

/* Anything but zero/hole extents (a volume that cannot tell reports all data): 1, 0 when it
 * reads as zeroes throughout, or -errno. */
int
clone_dest_has_data(struct volume *dst, uint64_t size)
{
  struct extent_list l = { 0 };
  uint64_t off = 0;
  int r = 0;
  while (off < size && r == 0) {
    extent_list_reset(&l);
    if ((r = volume_extents(dst, size - off, off, &l)) < 0)
      break;
    for (size_t i = 0; i < l.n && r == 0; i++) {
      if (!(l.v[i].flags & EXTENT_ZERO))
        r = 1;
      off = l.v[i].offset + l.v[i].length;
    }
    if (l.n == 0)
      break;
  }
  extent_list_free(&l);
  return r;
}
