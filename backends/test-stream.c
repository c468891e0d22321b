/* Unit tests for the chunk sink (ordering, zero chunks, pieces from many threads) and the
 * send stream (header and record encoding, refusals, a writer -> receiver round trip through
 * a pipe whose digest equals verify_digest's). */
#include "backends/chunksink.h"
#include "backends/stream.h"
#include "backends/verify.h"
#include "common/error.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s (%s)\n", __FILE__, __LINE__, #cond,                 \
              error_message());                                                                    \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

/* ---- chunk sink ---- */

#define CHUNK 4096
#define SIZE (10 * CHUNK + 1000)
static uint8_t image[SIZE];

struct order {
  pthread_mutex_t lock;
  uint64_t next; /* emit must see 0, 1, 2, ... */
  bool ok;
  uint64_t zeroes; /* chunks encoded from NULL */
};

static int
t_encode(void *opaque, uint64_t index, uint64_t off, const void *data, size_t len, void **blob)
{
  struct order *o = opaque;
  bool same = data ? memcmp(data, image + off, len) == 0 : true;
  pthread_mutex_lock(&o->lock);
  if (!data)
    o->zeroes++;
  if (!same || off != index * CHUNK)
    o->ok = false;
  pthread_mutex_unlock(&o->lock);
  uint64_t *b = malloc(sizeof *b);
  *b = index;
  *blob = b;
  return 0;
}

static int
t_emit(void *opaque, uint64_t index, uint64_t off, size_t len, void *blob)
{
  struct order *o = opaque;
  uint64_t *b = blob;
  if (*b != index || index != o->next || off != index * CHUNK
      || len != (index == SIZE / CHUNK ? SIZE % CHUNK : CHUNK))
    o->ok = false;
  o->next++;
  free(b);
  return 0;
}

static void
t_discard(void *opaque, void *blob)
{
  (void)opaque;
  free(blob);
}

struct piece {
  uint64_t off, len;
  bool zero;
};
static struct piece pieces[64];
static int npieces;
static _Atomic int next_piece;

static void *
t_writer(void *arg)
{
  struct volume *v = arg;
  for (;;) {
    int i = next_piece++;
    if (i >= npieces)
      return NULL;
    struct piece *p = &pieces[i];
    if (p->zero)
      volume_zero(v, p->len, p->off, VOLUME_MAY_TRIM);
    else
      volume_pwrite(v, image + p->off, p->len, p->off, 0);
  }
}

static void
test_chunksink(void)
{
  /* Chunk 2 all zero (zeroed whole), chunk 5 zeroed in two pieces, chunk 7 half data half
   * zero, the rest data in odd pieces; handed out in a shuffled order. */
  for (int i = 0; i < SIZE; i++)
    image[i] = (uint8_t)(i * 7 + 1);
  memset(image + 2 * CHUNK, 0, CHUNK);
  memset(image + 5 * CHUNK, 0, CHUNK);
  memset(image + 7 * CHUNK + 2048, 0, 2048);
  uint64_t off = 0;
  while (off < SIZE) {
    uint64_t len;
    bool zero = false;
    if (off == 2 * CHUNK)
      len = CHUNK, zero = true;
    else if (off == 5 * CHUNK || off == 5 * CHUNK + 1000)
      len = off == 5 * CHUNK ? 1000 : CHUNK - 1000, zero = true;
    else if (off == 7 * CHUNK + 2048)
      len = 2048, zero = true;
    else if (off == 7 * CHUNK)
      len = 2048;
    else {
      uint64_t next_special[] = { 2 * CHUNK, 5 * CHUNK, 7 * CHUNK, SIZE };
      len = 1500;
      for (int k = 0; k < 4; k++)
        if (off < next_special[k] && off + len > next_special[k])
          len = next_special[k] - off;
    }
    pieces[npieces++] = (struct piece){ off, len, zero };
    off += len;
  }
  unsigned seed = 42;
  for (int i = npieces - 1; i > 0; i--) {
    int j = (int)(rand_r(&seed) % (unsigned)(i + 1));
    struct piece t = pieces[i];
    pieces[i] = pieces[j];
    pieces[j] = t;
  }
  struct order o = { .ok = true };
  pthread_mutex_init(&o.lock, NULL);
  struct chunksink_codec c
      = { .encode = t_encode, .emit = t_emit, .discard = t_discard, .opaque = &o };
  struct volume *v;
  CHECK(chunksink_new("sink", SIZE, CHUNK, &c, &v) == 0);
  CHECK(chunksink_finish(v) == -EIO);
  CHECK(strstr(error_message(), "sink: chunk 0 at offset 0 was never written") != NULL);
  pthread_t t[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&t[i], NULL, t_writer, v);
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  CHECK(chunksink_finish(v) == 0);
  CHECK(o.ok && o.next == SIZE / CHUNK + 1);
  CHECK(o.zeroes == 2); /* chunks 2 and 5; chunk 7 had data */
  CHECK(volume_pwrite(v, image, 10, 0, 0) == -EINVAL);
  CHECK(strstr(error_message(), "written more than once") != NULL);
  volume_close(v);
  pthread_mutex_destroy(&o.lock);
}

/* ---- stream format ---- */

static void
test_encoding(void)
{
  struct stream_header h = { .version = 1, .size = 12345, .chunk_size = STREAM_CHUNK, .hash = 1 };
  uint8_t b[64];
  stream_header_encode(&h, b);
  struct stream_header g;
  CHECK(stream_header_decode(b, &g) == 0 && g.size == 12345 && g.version == 1);
  b[20] ^= 1;
  CHECK(stream_header_decode(b, &g) == -EINVAL);
  CHECK(strstr(error_message(), "the stream header is corrupt") != NULL);
  h.version = 2;
  stream_header_encode(&h, b);
  CHECK(stream_header_decode(b, &g) == -EPROTONOSUPPORT);
  CHECK(strcmp(error_message(), "stream version 2, this ferry reads version 1: upgrade ferry on "
                                "the receiving side")
        == 0);
  memcpy(b, "NOTFERRY", 8);
  CHECK(stream_header_decode(b, &g) == -EINVAL);
  CHECK(strstr(error_message(), "not a ferry send stream") != NULL);

  struct stream_record r = {
    .type = STREAM_DATA, .codec = STREAM_ZSTD, .payload = 77, .offset = 1 << 20, .length = 1 << 20
  };
  memset(r.hash, 0xab, sizeof r.hash);
  stream_record_encode(&r, b);
  struct stream_record q;
  CHECK(stream_record_decode(b, &q) == 0 && q.type == 'D' && q.payload == 77 && q.offset == 1 << 20
        && q.hash[31] == 0xab);
  b[9] ^= 0x10; /* the offset */
  CHECK(stream_record_decode(b, &q) == -EBADMSG);
  r.type = STREAM_ZERO; /* ZERO with a payload */
  stream_record_encode(&r, b);
  CHECK(stream_record_decode(b, &q) == -EBADMSG);
  r.type = 'X';
  r.codec = 0;
  r.payload = 0;
  stream_record_encode(&r, b);
  CHECK(stream_record_decode(b, &q) == -EBADMSG);
  CHECK(strstr(error_message(), "unknown record type 0x58") != NULL);
}

struct sender {
  struct volume *src, *sink;
  int fd; /* the pipe's write end: closed at the end, so the receiver sees the end */
  int r;
  struct stream_stats st;
};

static void *
send_thread(void *arg)
{
  struct sender *s = arg;
  uint8_t *buf = malloc(STREAM_CHUNK);
  s->r = 0;
  for (uint64_t off = 0; off < s->src->size && s->r == 0; off += STREAM_CHUNK) {
    size_t n = s->src->size - off < STREAM_CHUNK ? s->src->size - off : STREAM_CHUNK;
    s->r = volume_pread(s->src, buf, n, off);
    if (s->r == 0)
      s->r = buffer_is_zero(buf, n) ? volume_zero(s->sink, n, off, 0)
                                    : volume_pwrite(s->sink, buf, n, off, 0);
  }
  if (s->r == 0)
    s->r = stream_writer_finish(s->sink, &s->st);
  volume_close(s->sink);
  close(s->fd);
  free(buf);
  return NULL;
}

static void
test_round_trip(void)
{
  char dir[] = "/tmp/test-stream.XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char src[64], dst[64];
  snprintf(src, sizeof src, "%s/src", dir);
  snprintf(dst, sizeof dst, "%s/dst", dir);
  /* 3.5 MiB: data, zeroes, compressible data, a short data tail. */
  size_t size = (7u << 20) / 2;
  uint8_t *img = calloc(1, size);
  unsigned seed = 7;
  for (size_t i = 0; i < (1u << 20); i++)
    img[i] = (uint8_t)rand_r(&seed);
  memset(img + (2u << 20), 'x', 1u << 20);
  img[size - 1] = 1;
  FILE *f = fopen(src, "w");
  fwrite(img, 1, size, f);
  fclose(f);
  int fds[2];
  CHECK(pipe(fds) == 0);
  struct sender s = { .fd = fds[1] };
  CHECK(volume_open(src, NULL, &s.src) == 0);
  CHECK(stream_writer_open(fds[1], "pipe", size, 3, &s.sink) == 0);
  pthread_t t;
  pthread_create(&t, NULL, send_thread, &s);
  struct receive_stats st;
  int r = stream_receive(fds[0], "pipe", dst, NULL, &st);
  CHECK(r == 0);
  pthread_join(t, NULL);
  close(fds[0]);
  CHECK(s.r == 0);
  CHECK(st.size == size && st.data_bytes == size - (1u << 20) && st.zero_bytes == 1u << 20);
  CHECK(st.records == 4 && s.st.records == 4 && st.bytes_in == s.st.bytes_out);
  struct verify_side side;
  CHECK(verify_digest(s.src, NULL, &side) == 0);
  CHECK(strcmp(side.digest, st.digest) == 0 && strcmp(side.digest, s.st.digest) == 0);
  volume_close(s.src);
  f = fopen(dst, "r");
  uint8_t *back = malloc(size);
  CHECK(f && fread(back, 1, size, f) == size && memcmp(back, img, size) == 0);
  if (f)
    fclose(f);
  free(back);
  free(img);
  unlink(src);
  unlink(dst);
  rmdir(dir);
}

int
main(void)
{
  test_chunksink();
  test_encoding();
  test_round_trip();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  return 0;
}
