/* ferry: receiving a send stream, see stream.h.
 *
 * One reader (the caller's thread) parses the stream and checks everything that can be
 * checked before a byte is written: header checks, record order (each record starts where
 * the previous ended, so every byte's offset is known), sizes.  It hands DATA and ZERO
 * records to the workers, which decompress, compare the chunk's SHA-256 with the one sent and
 * write.  The reader computes the block digest from the hashes in order; END must carry the
 * same, after every worker has written its record.  A stream that stops early is reported
 * with the record and the volume offset where it stopped.  Cleanup style: goto labels.
 */
#include "backends/stream.h"
#include "backends/zst-format.h"
#include "backends/zst-write.h"
#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

/* Zero detection inside a chunk, as the copy engine does. */
#define ZERO_BLOCK (64u << 10)

struct job {
  struct stream_record rec;
  uint64_t number;  /* record number, for messages */
  uint8_t *payload; /* capacity: ZSTD_compressBound(STREAM_CHUNK) */
  struct job *next;
};

struct receiver {
  const char *input;
  struct volume *dst;
  bool skip_zeroes; /* a new file reads as zeroes: ZERO records need no write */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct job *free_jobs, *queue, *queue_tail;
  bool no_more; /* the reader is done handing out work */
  int err;
  char *errmsg;
  struct progress *progress;
};

struct worker {
  struct receiver *rc;
  pthread_t thread;
  ZSTD_DCtx *dctx;
  uint8_t *out;
};

static void
record_error(struct receiver *rc, int r)
{
  if (rc->err)
    return;
  rc->err = r < 0 ? r : -EIO;
  rc->errmsg = strdup(*error_message() ? error_message() : "receive failed");
}

static int
process(struct worker *w, struct job *j)
{
  struct receiver *rc = w->rc;
  const struct stream_record *r = &j->rec;
  if (r->type == STREAM_ZERO)
    return volume_zero(rc->dst, r->length, r->offset, VOLUME_MAY_TRIM);
  const uint8_t *data = j->payload;
  if (r->codec == STREAM_ZSTD) {
    size_t n = ZSTD_decompressDCtx(w->dctx, w->out, r->length, j->payload, r->payload);
    if (ZSTD_isError(n) || n != r->length)
      return error_set(EBADMSG, "%s: record %" PRIu64 " (data at volume offset %" PRIu64 "): %s%s",
                       rc->input, j->number, r->offset,
                       ZSTD_isError(n) ? "corrupt compressed data: "
                                       : "wrong size after "
                                         "decompression",
                       ZSTD_isError(n) ? ZSTD_getErrorName(n) : "");
    data = w->out;
  }
  uint8_t hash[SHA256_BYTES];
  sha256(data, r->length, hash);
  if (memcmp(hash, r->hash, SHA256_BYTES) != 0)
    return error_set(EBADMSG,
                     "%s: record %" PRIu64 " (data at volume offset %" PRIu64
                     "): checksum mismatch: the chunk's data is corrupt",
                     rc->input, j->number, r->offset);
  /* Zero blocks inside a chunk (a file's unused tail, a freed block) stay holes. */
  uint64_t off = r->offset, end = r->offset + r->length;
  while (off < end) {
    size_t n = (size_t)min_u64(ZERO_BLOCK, end - off);
    bool zero = buffer_is_zero(data, n);
    size_t run = n;
    while (off + run < end) {
      size_t m = (size_t)min_u64(ZERO_BLOCK, end - off - run);
      if (buffer_is_zero(data + run, m) != zero)
        break;
      run += m;
    }
    int e = zero ? (rc->skip_zeroes ? 0 : volume_zero(rc->dst, run, off, VOLUME_MAY_TRIM))
                 : volume_pwrite(rc->dst, data, run, off, 0);
    if (e < 0)
      return e;
    data += run;
    off += run;
  }
  return 0;
}

static void *
worker_main(void *arg)
{
  struct worker *w = arg;
  struct receiver *rc = w->rc;
  pthread_mutex_lock(&rc->lock);
  for (;;) {
    while (!rc->queue && !rc->no_more && !rc->err)
      pthread_cond_wait(&rc->cond, &rc->lock);
    if (rc->err || !rc->queue)
      break;
    struct job *j = rc->queue;
    rc->queue = j->next;
    if (!rc->queue)
      rc->queue_tail = NULL;
    pthread_mutex_unlock(&rc->lock);
    int r = process(w, j);
    progress_add(rc->progress, j->rec.length);
    pthread_mutex_lock(&rc->lock);
    j->next = rc->free_jobs;
    rc->free_jobs = j;
    if (r < 0)
      record_error(rc, r);
    pthread_cond_broadcast(&rc->cond);
  }
  pthread_mutex_unlock(&rc->lock);
  error_clear();
  return NULL;
}

/* Read up to len bytes (fewer only at the end of the input); the count, or -errno. */
static ssize_t
read_full(int fd, void *buf, size_t len, const char *input)
{
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, (uint8_t *)buf + got, len - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return error_set_errno(errno, "%s: read", input);
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

/* Open (or create) the destination for a volume of `size` bytes. */
static int
open_destination(const char *uri, uint64_t size, const struct receive_options *o,
                 struct volume **out, bool *created, bool *skip_zeroes)
{
  *created = *skip_zeroes = false;
  const char *path = strncmp(uri, "file://", 7) == 0 ? uri + 7 : strstr(uri, "://") ? NULL : uri;
  if (zst_name_matches(uri)) {
    const char *zpath = strncmp(uri, "zst:", 4) == 0 ? uri + 4 : uri;
    if (strstr(zpath, "://") && strncmp(zpath, "file://", 7) != 0)
      return error_set(EINVAL, "%s: a compressed image is written to a local file", uri);
    if (strncmp(zpath, "file://", 7) == 0)
      zpath += 7;
    return zst_writer_open(zpath, size, ZST_DEFAULT_LEVEL, out);
  }
  struct volume_options vo;
  volume_options_init(&vo);
  vo.connections = o->connections;
  vo.write_behind = true;
  if (path && access(path, F_OK) < 0 && errno == ENOENT) {
    vo.create = true;
    vo.create_size = size;
  }
  int r = volume_open(uri, &vo, out);
  if (r < 0)
    return r;
  *created = *skip_zeroes = vo.create;
  if ((*out)->size < size) {
    r = error_set(ENOSPC,
                  "%s: the destination is %" PRIu64 " bytes, smaller than the stream's "
                  "volume (%" PRIu64 " bytes): nothing written",
                  uri, (*out)->size, size);
    volume_close(*out);
    *out = NULL;
    return r;
  }
  return 0;
}

void
receive_options_init(struct receive_options *o)
{
  memset(o, 0, sizeof *o);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  o->workers = n > 0 ? (unsigned)n : 2;
  o->flush = true;
}

/* "after N bytes, <where> record K (volume offset X of SIZE)" */
static int
truncated(const char *input, uint64_t pos, const char *where, uint64_t number, uint64_t offset,
          uint64_t size)
{
  return error_set(EPIPE,
                   "%s: the stream stops after %" PRIu64 " bytes, %s record %" PRIu64
                   " (volume offset %" PRIu64 " of %" PRIu64 "): truncated",
                   input, pos, where, number, offset, size);
}

/* The reader: records in, jobs out.  Returns 0 after a verified END. */
static int
read_records(int fd, struct receiver *rc, const struct stream_header *h, uint64_t *pos,
             struct receive_stats *st)
{
  struct blockdigest digest;
  int r = blockdigest_begin(&digest, h->size);
  if (r < 0)
    return r;
  uint64_t expected = 0, number = 0;
  size_t max_payload = ZSTD_compressBound(STREAM_CHUNK);
  for (;; number++) {
    uint8_t head[STREAM_RECORD_SIZE];
    ssize_t n = read_full(fd, head, sizeof head, rc->input);
    if (n < 0) {
      r = (int)n;
      goto fail;
    }
    if (n == 0 && expected == h->size) {
      r = error_set(EPIPE,
                    "%s: the stream stops after %" PRIu64 " bytes, before its end "
                    "record: all %" PRIu64 " bytes of the volume arrived, but not the "
                    "digest to verify them: truncated",
                    rc->input, *pos, h->size);
      goto fail;
    }
    if (n < (ssize_t)sizeof head) {
      r = truncated(rc->input, *pos + (uint64_t)n, n ? "inside the header of" : "before", number,
                    expected, h->size);
      goto fail;
    }
    struct stream_record rec;
    if ((r = stream_record_decode(head, &rec)) < 0) {
      error_prefix("%s: record %" PRIu64 " at stream offset %" PRIu64, rc->input, number, *pos);
      goto fail;
    }
    *pos += sizeof head;
    if (rec.type == STREAM_END) {
      uint8_t want[SHA256_BYTES];
      if (rec.offset != h->size || expected != h->size || rec.length != number) {
        r = error_set(EBADMSG,
                      "%s: the stream ends at volume offset %" PRIu64 " of %" PRIu64
                      " after %" PRIu64 " records, its end record says %" PRIu64
                      " records for %" PRIu64 " bytes",
                      rc->input, expected, h->size, number, rec.length, rec.offset);
        goto fail;
      }
      r = blockdigest_end_bytes(&digest, want);
      if (r == 0 && memcmp(want, rec.hash, SHA256_BYTES) != 0) {
        char sent[VERIFY_DIGEST_LEN], got[VERIFY_DIGEST_LEN];
        verify_format_digest(rec.hash, sent);
        verify_format_digest(want, got);
        r = error_set(EBADMSG,
                      "%s: the volume digest sent (%s) differs from the chunks "
                      "received (%s)",
                      rc->input, sent, got);
      }
      if (r == 0)
        verify_format_digest(want, st->digest);
      st->records = number;
      return r;
    }
    /* Records tile the volume in order, chunk-aligned: anything else is refused unwritten. */
    uint64_t chunk_len = min_u64(STREAM_CHUNK, h->size - min_u64(rec.offset, h->size));
    bool ok = rec.offset == expected && rec.length > 0 && rec.offset < h->size
              && rec.length <= h->size - rec.offset && rec.offset % STREAM_CHUNK == 0;
    if (ok && rec.type == STREAM_DATA)
      ok = rec.length == chunk_len && rec.payload <= max_payload
           && (rec.codec != STREAM_RAW || rec.payload == rec.length);
    if (ok && rec.type == STREAM_ZERO)
      ok = (rec.offset + rec.length) % STREAM_CHUNK == 0 || rec.offset + rec.length == h->size;
    if (!ok) {
      r = error_set(EBADMSG,
                    "%s: record %" PRIu64 " at stream offset %" PRIu64 ": '%c' for %" PRIu64
                    " bytes at volume offset %" PRIu64 " (%u bytes of payload) does not "
                    "follow the volume up to offset %" PRIu64 " of %" PRIu64,
                    rc->input, number, *pos - sizeof head, rec.type, rec.length, rec.offset,
                    rec.payload, expected, h->size);
      goto fail;
    }
    pthread_mutex_lock(&rc->lock);
    while (!rc->free_jobs && !rc->err)
      pthread_cond_wait(&rc->cond, &rc->lock);
    if (rc->err) {
      pthread_mutex_unlock(&rc->lock);
      r = -EIO; /* the worker's message is taken by the caller */
      goto fail;
    }
    struct job *j = rc->free_jobs;
    rc->free_jobs = j->next;
    pthread_mutex_unlock(&rc->lock);
    j->rec = rec;
    j->number = number;
    if (rec.type == STREAM_DATA) {
      n = read_full(fd, j->payload, rec.payload, rc->input);
      if (n < 0 || n < (ssize_t)rec.payload) {
        r = (int)n;
        if (n >= 0)
          r = truncated(rc->input, *pos + (uint64_t)n, "inside the data of", number, rec.offset,
                        h->size);
        pthread_mutex_lock(&rc->lock);
        j->next = rc->free_jobs;
        rc->free_jobs = j;
        pthread_mutex_unlock(&rc->lock);
        goto fail;
      }
      *pos += rec.payload;
      blockdigest_block(&digest, rec.hash, (uint32_t)rec.length);
      st->data_bytes += rec.length;
    } else {
      blockdigest_zero(&digest, rec.length);
      st->zero_bytes += rec.length;
    }
    expected += rec.length;
    pthread_mutex_lock(&rc->lock);
    if (rec.type == STREAM_ZERO && rc->skip_zeroes) {
      j->next = rc->free_jobs; /* a new file already reads as zeroes */
      rc->free_jobs = j;
      progress_add(rc->progress, rec.length);
    } else {
      j->next = NULL;
      if (rc->queue_tail)
        rc->queue_tail->next = j;
      else
        rc->queue = j;
      rc->queue_tail = j;
      pthread_cond_broadcast(&rc->cond);
    }
    pthread_mutex_unlock(&rc->lock);
  }
fail:
  blockdigest_discard(&digest);
  return r < 0 ? r : -EIO;
}

int
stream_receive(int fd, const char *input, const char *dst_uri, const struct receive_options *o,
               struct receive_stats *st)
{
  struct receive_options defaults;
  if (!o) {
    receive_options_init(&defaults);
    o = &defaults;
  }
  memset(st, 0, sizeof *st);
  struct receiver rc = { .input = input };
  pthread_mutex_init(&rc.lock, NULL);
  pthread_cond_init(&rc.cond, NULL);
  unsigned nworkers = o->workers ? o->workers : 2;
  unsigned njobs = 2 * nworkers + 2;
  struct worker *w = calloc(nworkers, sizeof *w);
  struct job *jobs = calloc(njobs, sizeof *jobs);
  size_t started = 0;
  uint64_t pos = 0;
  int r = 0;
  if (!w || !jobs) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  uint8_t head[STREAM_HEADER_SIZE];
  ssize_t n = read_full(fd, head, sizeof head, input);
  if (n < 0) {
    r = (int)n;
    goto out;
  }
  if (n < (ssize_t)sizeof head) {
    r = error_set(EPIPE, "%s: %s", input,
                  n ? "not a ferry send stream: it ends inside its header" : "empty: no stream");
    goto out;
  }
  pos = sizeof head;
  struct stream_header h;
  if ((r = stream_header_decode(head, &h)) < 0) {
    error_prefix("%s", input);
    goto out;
  }
  st->size = h.size;
  /* The destination is opened (and its size checked) before anything is written to it. */
  if ((r = open_destination(dst_uri, h.size, o, &rc.dst, &st->created, &rc.skip_zeroes)) < 0)
    goto out;
  rc.progress = progress_new("receive", h.size, o->show_progress);
  for (unsigned i = 0; i < njobs; i++) {
    if (!(jobs[i].payload = malloc(ZSTD_compressBound(STREAM_CHUNK)))) {
      r = error_set(ENOMEM, "out of memory for receive buffers");
      goto out;
    }
    jobs[i].next = rc.free_jobs;
    rc.free_jobs = &jobs[i];
  }
  for (unsigned i = 0; i < nworkers; i++) {
    w[i].rc = &rc;
    if (!(w[i].dctx = ZSTD_createDCtx()) || !(w[i].out = malloc(STREAM_CHUNK))) {
      r = error_set(ENOMEM, "out of memory for receive workers");
      break;
    }
    if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0) {
      if (started == 0)
        r = error_set(EAGAIN, "cannot start receive workers");
      break;
    }
    started++;
  }
  if (r == 0)
    r = read_records(fd, &rc, &h, &pos, st);
  if (r == 0) { /* nothing may follow the end record */
    uint8_t extra;
    ssize_t e = read_full(fd, &extra, 1, input);
    if (e != 0)
      r = e < 0 ? (int)e : error_set(EBADMSG, "%s: data after the stream's end record", input);
  }
  char *msg = r < 0 ? strdup(error_message()) : NULL;
  /* The workers write what is queued (received whole and in order), then stop: after a
   * truncated stream the destination holds the volume up to where it stopped. */
  pthread_mutex_lock(&rc.lock);
  rc.no_more = true;
  pthread_cond_broadcast(&rc.cond);
  pthread_mutex_unlock(&rc.lock);
  for (size_t i = 0; i < started; i++)
    pthread_join(w[i].thread, NULL);
  progress_finish(rc.progress);
  if (rc.errmsg) /* a worker's error explains the reader's stop */
    r = error_set(-rc.err, "%s", rc.errmsg);
  else if (r < 0)
    r = error_set(-r, "%s", msg ? msg : "receive failed");
  free(msg);
  if (r == 0) {
    if (zst_name_matches(dst_uri))
      r = zst_writer_finish(rc.dst, NULL);
    else if (o->flush)
      r = volume_flush(rc.dst);
  }
out:
  st->bytes_in = pos;
  for (unsigned i = 0; w && i < nworkers; i++) {
    ZSTD_freeDCtx(w[i].dctx);
    free(w[i].out);
  }
  for (unsigned i = 0; jobs && i < njobs; i++)
    free(jobs[i].payload);
  free(w);
  free(jobs);
  progress_free(rc.progress);
  volume_close(rc.dst);
  free(rc.errmsg);
  pthread_cond_destroy(&rc.cond);
  pthread_mutex_destroy(&rc.lock);
  return r;
}
