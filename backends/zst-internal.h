/* ferry: internals shared by the zst layer's files (zst.c: seekable images, zst-stream.c:
 * plain zstd streams read in order). */
#ifndef FERRY_ZST_INTERNAL_H
#define FERRY_ZST_INTERNAL_H

#include "backends/volume.h"

#include <stddef.h>
#include <stdint.h>

/* Zero bytes after the end of a zstd file that are ignored: a volume below whose size is
 * rounded up (NBD exports are a multiple of 512 bytes, some of 4096). */
#define ZST_PADDING_MAX 4096

/* Read len bytes at off from the volume below, bouncing through an aligned buffer when it
 * has a minimum block size the request does not meet. */
int zst_lower_read(struct volume *lower, void *buf, size_t len, uint64_t off);

/* A plain zstd stream (no seek table): opening walks every frame's headers once (a frame
 * that does not state its size is decompressed to count it) so the image size is known and
 * a truncated or corrupt file is refused before anything is copied; reads must then come in
 * order.  Messages name `name`, the frame and its file offset. */
struct zst_stream;
int zst_stream_open(struct volume *lower, const char *name, uint64_t *size,
                    struct zst_stream **out);
int zst_stream_read(struct zst_stream *s, void *buf, size_t len, uint64_t off);
void zst_stream_free(struct zst_stream *s);

#endif
