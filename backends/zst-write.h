/* ferry: writing seekable zstd images (the format: zst-format.h).
 *
 * zst_writer_open gives a write-only volume to copy an image into (`ferry copy SRC DST.zst`):
 * the copy workers compress 1 MiB frames in parallel (chunksink.h), frames are written in
 * order, all-zero frames without compressing anything.  zst_writer_finish appends the seek
 * table, makes the file durable and only then gives it its name: until then it is a hidden
 * temporary file beside it, removed if the copy fails, so a half-written image never carries
 * the name (an existing DST is replaced at that moment).  "-" writes to stdout instead.
 */
#ifndef FERRY_ZST_WRITE_H
#define FERRY_ZST_WRITE_H

#include "backends/volume.h"

#include <stdint.h>

#define ZST_DEFAULT_LEVEL 3
#define ZST_MIN_LEVEL (-7)
#define ZST_MAX_LEVEL 22

struct zst_write_stats {
  uint64_t compressed_bytes; /* the whole file, seek table included */
  uint64_t frames, zero_frames;
};

/* path: the image to write (or "-"); size: bytes of the image; level: zstd level. */
int zst_writer_open(const char *path, uint64_t size, int level, struct volume **out);
/* After the copy succeeded: seek table, fdatasync, rename into place.  0 or -errno. */
int zst_writer_finish(struct volume *v, struct zst_write_stats *stats);

/* "zstd" or "zstd:LEVEL" (for --compress) into *level.  0 or -EINVAL with a message. */
int zst_parse_compress(const char *what, const char *text, int *level);

#endif
