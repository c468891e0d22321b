/* ferry: the `ferry send` / `ferry receive` stream, version 1 (docs/stream.md).
 *
 *   header (64 bytes) | record | record | ... | END record
 *
 * Every record has a 64-byte header, followed by `payload` bytes for DATA.  DATA carries one
 * chunk (1 MiB of the volume, the last one shorter) compressed with zstd (or raw when that
 * does not help) and the SHA-256 of its bytes; ZERO says a run of chunks reads as zeroes
 * (holes, zero extents: never read, never sent); END carries the volume's block digest
 * (backends/verify.h) — the chunks are its blocks.  Records follow the volume in order, each
 * starting where the previous ended, so a receiver knows the offset of every byte before it
 * writes it, and exactly where a stream stopped.  Each header ends with the low 32 bits of
 * the XXH64 of its first 60 bytes.  Integers are little-endian.
 */
#ifndef FERRY_STREAM_H
#define FERRY_STREAM_H

#include "backends/volume.h"
#include "backends/verify.h"
#include "common/hash.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STREAM_MAGIC "FERRYSTR"
#define STREAM_VERSION 1
#define STREAM_HEADER_SIZE 64
#define STREAM_RECORD_SIZE 64
#define STREAM_CHUNK VERIFY_BLOCK
#define STREAM_HASH_SHA256 1

enum { STREAM_DATA = 'D', STREAM_ZERO = 'Z', STREAM_END = 'E' };
enum { STREAM_RAW = 0, STREAM_ZSTD = 1 };

struct stream_header {
  uint32_t version, flags;
  uint64_t size;       /* bytes of the volume */
  uint32_t chunk_size; /* STREAM_CHUNK */
  uint32_t hash;       /* STREAM_HASH_SHA256 */
};

struct stream_record {
  uint8_t type, codec;
  uint32_t payload; /* bytes after the header (DATA) */
  uint64_t offset;  /* DATA, ZERO: where in the volume; END: the volume size */
  uint64_t length;  /* DATA, ZERO: bytes of the volume; END: number of records before it */
  uint8_t hash[SHA256_BYTES]; /* DATA: SHA-256 of the chunk; END: the volume digest */
};

void stream_header_encode(const struct stream_header *h, uint8_t out[STREAM_HEADER_SIZE]);
/* 0, or -EINVAL / -EPROTONOSUPPORT with a message (not a stream, corrupt, newer version). */
int stream_header_decode(const uint8_t in[STREAM_HEADER_SIZE], struct stream_header *h);
void stream_record_encode(const struct stream_record *r, uint8_t out[STREAM_RECORD_SIZE]);
/* 0, or -EBADMSG with a message (check mismatch, unknown type or codec). */
int stream_record_decode(const uint8_t in[STREAM_RECORD_SIZE], struct stream_record *r);

/* The sending side: a write-only volume (a chunk sink, chunksink.h) to copy the source into;
 * chunks are compressed and hashed on the copy workers and written to fd in order. */
struct stream_stats {
  uint64_t bytes_out; /* on fd, headers included */
  uint64_t data_bytes, zero_bytes;
  uint64_t records;
  char digest[VERIFY_DIGEST_LEN];
};
int stream_writer_open(int fd, const char *name, uint64_t size, int level, struct volume **out);
/* After the copy: the END record.  0 or -errno. */
int stream_writer_finish(struct volume *v, struct stream_stats *st);

/* The receiving side (stream-receive.c): read a stream from fd and write it to dst_uri
 * (created with the stream's size when it is a path that does not exist, refused before any
 * write when smaller than the stream's volume; a *.zst path becomes a seekable image). */
struct receive_options {
  unsigned workers;          /* decompressing writers (default: online CPUs) */
  unsigned connections;      /* of an nbd destination */
  bool flush;                /* flush the destination at the end (default true) */
  struct progress *progress; /* created by stream_receive when show_progress */
  bool show_progress;
};
struct receive_stats {
  uint64_t size;
  uint64_t bytes_in, data_bytes, zero_bytes, records;
  char digest[VERIFY_DIGEST_LEN];
  bool created; /* the destination was created (and is removed again on failure) */
};
void receive_options_init(struct receive_options *o);
int stream_receive(int fd, const char *input_name, const char *dst_uri,
                   const struct receive_options *o, struct receive_stats *st);

#endif
