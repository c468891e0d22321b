/* ferry: a write-only volume that turns a parallel copy into an ordered stream of chunks.
 *
 * Writers of sequential formats (the seekable zstd image, the `ferry send` stream) need the
 * image cut into fixed chunks, each encoded (compressed, hashed) — in parallel, that is the
 * expensive part — and the results written out strictly in order.  A chunk sink is the
 * destination of an ordinary copy (backends/copy.h) that does exactly that: the copy workers
 * write and zero its bytes in any order; the worker that completes a chunk encodes it in its
 * own thread (so encoding runs on every copy worker), and each encoded chunk is emitted as soon
 * as every chunk before it has been, by whichever thread gets there.  A chunk that was only
 * zeroed is encoded from NULL: no byte of it was read or compared.
 *
 * Contract: every byte of [0, size) is written or zeroed exactly once (what the copy engine
 * does).  Memory: chunks waiting for an earlier one are held until it is emitted, so the sink
 * sets volume.write_window and the copy engine keeps its ranges within CHUNKSINK_WINDOW.
 */
#ifndef FERRY_CHUNKSINK_H
#define FERRY_CHUNKSINK_H

#include "backends/volume.h"

#include <stddef.h>
#include <stdint.h>

#define CHUNKSINK_WINDOW (128ull << 20)

struct chunksink_codec {
  /* Encode chunk `index` (len bytes of the image at off; data NULL: all zeroes) into *blob.
   * Called concurrently for different chunks.  0 or -errno with a message. */
  int (*encode)(void *opaque, uint64_t index, uint64_t off, const void *data, size_t len,
                void **blob);
  /* Write out an encoded chunk: in chunk order, never concurrently; takes the blob. */
  int (*emit)(void *opaque, uint64_t index, uint64_t off, size_t len, void *blob);
  /* Free a blob that will never be emitted (the sink failed or was closed early). */
  void (*discard)(void *opaque, void *blob);
  /* At volume_close, after everything else: free opaque. */
  void (*close)(void *opaque);
  void *opaque;
};

/* A sink of `size` bytes in chunks of chunk_size (the last may be shorter).  name is for
 * messages.  0 or -errno. */
int chunksink_new(const char *name, uint64_t size, uint32_t chunk_size,
                  const struct chunksink_codec *codec, struct volume **out);

/* After the copy: 0 when every chunk was emitted, else the error that stopped the sink or the
 * first chunk never written. */
int chunksink_finish(struct volume *v);

/* The codec's opaque pointer of a sink volume. */
void *chunksink_opaque(struct volume *v);

#endif
