/* ferry: the block digest and the volume compare, see verify.h.
 *
 * Workers take batches of 16 blocks in order and hash them (both volumes' blocks side by
 * side when comparing, so a differing block's bytes are at hand to find the exact ranges).
 * The digests need the block hashes in order: finished batches wait in a ring of slots and
 * the worker that finishes the oldest one folds it, and every finished one after it, into the
 * digests.  No worker runs more than the ring ahead of the oldest unfinished batch, so memory
 * stays bounded whatever the volume size.  Cleanup style: goto labels.
 */
#include "backends/verify.h"
#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_BLOCKS 16
#define BATCH_BYTES ((uint64_t)BATCH_BLOCKS * VERIFY_BLOCK)
#define DIFF_GRAIN 4096

static const char digest_tag[16] = "ferry-blocks-v1";

static pthread_once_t zero_once = PTHREAD_ONCE_INIT;
static uint8_t zero_block_hash[SHA256_BYTES];

static void
init_zero_hash(void)
{
  uint8_t *z = calloc(1, VERIFY_BLOCK);
  if (!z) {
    fprintf(stderr, "ferry: out of memory\n");
    abort();
  }
  sha256(z, VERIFY_BLOCK, zero_block_hash);
  free(z);
}

void
verify_zero_hash(uint32_t n, uint8_t out[SHA256_BYTES])
{
  if (n == VERIFY_BLOCK) {
    pthread_once(&zero_once, init_zero_hash);
    memcpy(out, zero_block_hash, SHA256_BYTES);
    return;
  }
  uint8_t *z = calloc(1, n ? n : 1);
  if (!z) {
    fprintf(stderr, "ferry: out of memory\n");
    abort();
  }
  sha256(z, n, out);
  free(z);
}

void
verify_block_hash(const void *data, uint32_t n, uint8_t out[SHA256_BYTES])
{
  if (n == VERIFY_BLOCK && buffer_is_zero(data, n))
    verify_zero_hash(n, out);
  else
    sha256(data, n, out);
}

int
blockdigest_begin(struct blockdigest *d, uint64_t size)
{
  d->size = size;
  d->done = 0;
  int r = sha256_begin(&d->c);
  if (r < 0)
    return r;
  uint8_t head[sizeof digest_tag + 12];
  memcpy(head, digest_tag, sizeof digest_tag);
  for (int i = 0; i < 8; i++)
    head[16 + i] = (uint8_t)(size >> (8 * i));
  for (int i = 0; i < 4; i++)
    head[24 + i] = (uint8_t)((uint32_t)VERIFY_BLOCK >> (8 * i));
  sha256_add(&d->c, head, sizeof head);
  return 0;
}

void
blockdigest_block(struct blockdigest *d, const uint8_t hash[SHA256_BYTES], uint32_t len)
{
  sha256_add(&d->c, hash, SHA256_BYTES);
  d->done += len;
}

void
blockdigest_zero(struct blockdigest *d, uint64_t len)
{
  uint8_t h[SHA256_BYTES];
  verify_zero_hash(VERIFY_BLOCK, h);
  uint64_t end = min_u64(d->done + len, d->size);
  while (end - d->done >= VERIFY_BLOCK)
    blockdigest_block(d, h, VERIFY_BLOCK);
  if (end > d->done) { /* the short last block */
    verify_zero_hash((uint32_t)(end - d->done), h);
    blockdigest_block(d, h, (uint32_t)(end - d->done));
  }
}

int
blockdigest_end_bytes(struct blockdigest *d, uint8_t out[SHA256_BYTES])
{
  bool complete = d->done == d->size;
  sha256_end(&d->c, out);
  if (!complete)
    return error_set(EINVAL, "digest of %" PRIu64 " bytes given blocks for %" PRIu64, d->size,
                     d->done);
  return 0;
}

void
verify_format_digest(const uint8_t raw[SHA256_BYTES], char out[VERIFY_DIGEST_LEN])
{
  char hex[SHA256_HEX];
  snprintf(out, VERIFY_DIGEST_LEN, VERIFY_DIGEST_PREFIX "%s", hash_hex(raw, SHA256_BYTES, hex));
}

int
blockdigest_end(struct blockdigest *d, char out[VERIFY_DIGEST_LEN])
{
  uint8_t h[SHA256_BYTES];
  int r = blockdigest_end_bytes(d, h);
  if (r == 0)
    verify_format_digest(h, out);
  return r;
}

void
blockdigest_discard(struct blockdigest *d)
{
  sha256_discard(&d->c);
}

void
verify_options_init(struct verify_options *o)
{
  memset(o, 0, sizeof *o);
  o->workers = 8;
  o->max_ranges = 1000;
}

/* ---- the engine ---- */

struct side {
  struct volume *v;
  struct blockdigest d;
  _Atomic uint64_t bytes_read, bytes_skipped;
};

struct slot {
  uint64_t batch;
  bool done;
  uint8_t hash[2][BATCH_BLOCKS][SHA256_BYTES];
  uint32_t len[2][BATCH_BLOCKS]; /* 0: past the end of that volume */
  struct verify_range *ranges;   /* differing ranges found in this batch, in order */
  size_t n, cap;
};

struct run {
  struct side s[2];
  int nsides;
  uint64_t common, longest, nbatches;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  uint64_t next, head; /* next batch to hand out; oldest not folded */
  struct slot *slots;
  size_t nslots;
  int err;
  char *errmsg;
  struct verify_result *r;
  size_t max_ranges;
  bool have_last, last_kept; /* the last differing range noted, and its end */
  uint64_t last_end;
  struct progress *progress;
};

struct worker {
  struct run *run;
  pthread_t thread;
  uint8_t *buf[2];
  struct extent_list ext;
};

/* Mark the blocks of the batch at off (whose data ends at end) that lie wholly in the zero
 * interval [za, zb). */
static void
mark_zero(bool known[BATCH_BLOCKS], uint64_t off, uint64_t end, uint64_t za, uint64_t zb)
{
  for (int j = 0; j < BATCH_BLOCKS; j++) {
    uint64_t a = off + (uint64_t)j * VERIFY_BLOCK;
    if (a >= end)
      break;
    uint64_t b = min_u64(a + VERIFY_BLOCK, end);
    if (a >= za && b <= zb)
      known[j] = true;
  }
}

/* Which blocks of [off, off+len) the volume reports as zero (wholly inside zero extents;
 * neighbouring zero extents of different flags count as one). */
static int
zero_blocks(struct volume *v, uint64_t off, uint64_t len, bool known[BATCH_BLOCKS],
            struct extent_list *l)
{
  memset(known, 0, BATCH_BLOCKS * sizeof *known);
  if (!volume_can(v, VOLUME_CAN_EXTENTS) || len == 0)
    return 0;
  uint64_t pos = off, end = off + len, za = 0, zb = 0;
  bool inzero = false;
  while (pos < end) {
    extent_list_reset(l);
    int r = volume_extents(v, end - pos, pos, l);
    if (r < 0)
      return r;
    uint64_t reached = pos;
    for (size_t i = 0; i < l->n; i++) {
      const struct extent *e = &l->v[i];
      uint64_t a = e->offset > reached ? e->offset : reached;
      uint64_t b = min_u64(e->offset + e->length, end);
      if (b <= a)
        continue;
      if (a > reached)
        break; /* a gap in the answer: ask again from where we got */
      if (e->flags & EXTENT_ZERO) {
        if (!inzero)
          za = a;
        inzero = true;
        zb = b;
      } else if (inzero) {
        mark_zero(known, off, end, za, zb);
        inzero = false;
      }
      reached = b;
    }
    if (reached == pos)
      return error_set(EIO, "%s: block status at offset %" PRIu64 " made no progress", v->name,
                       pos);
    pos = reached;
  }
  if (inzero)
    mark_zero(known, off, end, za, zb);
  return 0;
}

static int
add_range(struct slot *s, uint64_t off, uint64_t len)
{
  if (s->n > 0 && s->ranges[s->n - 1].offset + s->ranges[s->n - 1].length == off) {
    s->ranges[s->n - 1].length += len;
    return 0;
  }
  if (s->n == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 8;
    struct verify_range *v = realloc(s->ranges, cap * sizeof *v);
    if (!v)
      return error_set(ENOMEM, "out of memory for differing ranges");
    s->ranges = v;
    s->cap = cap;
  }
  s->ranges[s->n++] = (struct verify_range){ off, len };
  return 0;
}

/* The ranges where a and b (NULL: zeroes) differ in [0, n), at image offset off. */
static int
diff_ranges(struct slot *s, const uint8_t *a, const uint8_t *b, uint32_t n, uint64_t off)
{
  static const uint8_t zeroes[DIFF_GRAIN];
  for (uint32_t g = 0; g < n; g += DIFF_GRAIN) {
    uint32_t m = n - g < DIFF_GRAIN ? n - g : DIFF_GRAIN;
    const uint8_t *x = a ? a + g : zeroes, *y = b ? b + g : zeroes;
    if (memcmp(x, y, m) == 0)
      continue;
    for (uint32_t i = 0; i < m;) {
      if (x[i] == y[i]) {
        i++;
        continue;
      }
      uint32_t j = i;
      while (j < m && x[j] != y[j])
        j++;
      int r = add_range(s, off + g + i, j - i);
      if (r < 0)
        return r;
      i = j;
    }
  }
  return 0;
}

static int
do_batch(struct worker *w, uint64_t k, struct slot *slot)
{
  struct run *run = w->run;
  uint64_t base = k * BATCH_BYTES;
  bool known[2][BATCH_BLOCKS];
  for (int s = 0; s < run->nsides; s++) {
    struct volume *v = run->s[s].v;
    uint64_t len = base < v->size ? min_u64(BATCH_BYTES, v->size - base) : 0;
    int r = zero_blocks(v, base, len, known[s], &w->ext);
    if (r < 0)
      return r;
  }
  for (int j = 0; j < BATCH_BLOCKS; j++) {
    uint64_t off = base + (uint64_t)j * VERIFY_BLOCK;
    const uint8_t *data[2] = { NULL, NULL };
    for (int s = 0; s < run->nsides; s++) {
      struct side *sd = &run->s[s];
      uint32_t len = off < sd->v->size ? (uint32_t)min_u64(VERIFY_BLOCK, sd->v->size - off) : 0;
      slot->len[s][j] = len;
      if (len == 0)
        continue;
      if (known[s][j]) {
        verify_zero_hash(len, slot->hash[s][j]);
        atomic_fetch_add(&sd->bytes_skipped, len);
        continue;
      }
      int r = volume_pread(sd->v, w->buf[s], len, off);
      if (r < 0)
        return r;
      verify_block_hash(w->buf[s], len, slot->hash[s][j]);
      atomic_fetch_add(&sd->bytes_read, len);
      data[s] = w->buf[s];
    }
    if (run->nsides == 2 && off < run->common) {
      uint32_t n = (uint32_t)min_u64(VERIFY_BLOCK, run->common - off);
      bool same = slot->len[0][j] == slot->len[1][j]
                  && memcmp(slot->hash[0][j], slot->hash[1][j], SHA256_BYTES) == 0;
      if (!same && (data[0] || data[1])) {
        int r = diff_ranges(slot, data[0], data[1], n, off);
        if (r < 0)
          return r;
      }
    }
  }
  return 0;
}

/* Lock held: one more differing range, in order: merged with the one before when they
 * touch, kept while fewer than max_ranges are. */
static int
note_range(struct run *run, uint64_t off, uint64_t len)
{
  struct verify_result *r = run->r;
  r->bytes_differing += len;
  if (run->have_last && run->last_end == off) {
    run->last_end += len;
    if (run->last_kept)
      r->ranges[r->n_ranges - 1].length += len;
    return 0;
  }
  r->total_ranges++;
  run->have_last = true;
  run->last_end = off + len;
  run->last_kept = r->n_ranges < run->max_ranges;
  if (!run->last_kept)
    return 0;
  struct verify_range *v = realloc(r->ranges, (r->n_ranges + 1) * sizeof *v);
  if (!v)
    return error_set(ENOMEM, "out of memory for differing ranges");
  r->ranges = v;
  r->ranges[r->n_ranges++] = (struct verify_range){ off, len };
  return 0;
}

/* Lock held: fold the batch in slot into the digests and the result. */
static int
fold(struct run *run, struct slot *slot)
{
  for (int s = 0; s < run->nsides; s++)
    for (int j = 0; j < BATCH_BLOCKS && slot->len[s][j]; j++)
      blockdigest_block(&run->s[s].d, slot->hash[s][j], slot->len[s][j]);
  for (size_t i = 0; i < slot->n; i++) {
    int r = note_range(run, slot->ranges[i].offset, slot->ranges[i].length);
    if (r < 0)
      return r;
  }
  slot->n = 0;
  progress_add(run->progress, min_u64(BATCH_BYTES, run->longest - slot->batch * BATCH_BYTES));
  return 0;
}

static void
record_error(struct run *run, int r)
{
  if (run->err)
    return;
  run->err = r ? r : -EIO;
  run->errmsg = strdup(*error_message() ? error_message() : "verify failed");
}

static void *
worker_main(void *arg)
{
  struct worker *w = arg;
  struct run *run = w->run;
  pthread_mutex_lock(&run->lock);
  for (;;) {
    while (!run->err && run->next < run->nbatches && run->next >= run->head + run->nslots)
      pthread_cond_wait(&run->cond, &run->lock);
    if (run->err || run->next >= run->nbatches)
      break;
    uint64_t k = run->next++;
    struct slot *slot = &run->slots[k % run->nslots];
    slot->batch = k;
    slot->done = false;
    pthread_mutex_unlock(&run->lock);
    int r = do_batch(w, k, slot);
    pthread_mutex_lock(&run->lock);
    if (r < 0) {
      record_error(run, r);
      pthread_cond_broadcast(&run->cond);
      break;
    }
    slot->done = true;
    while (run->head < run->nbatches) {
      struct slot *h = &run->slots[run->head % run->nslots];
      if (h->batch != run->head || !h->done)
        break;
      if ((r = fold(run, h)) < 0) {
        record_error(run, r);
        break;
      }
      h->done = false;
      run->head++;
    }
    pthread_cond_broadcast(&run->cond);
  }
  pthread_mutex_unlock(&run->lock);
  error_clear();
  return NULL;
}

static int
run_engine(struct volume **v, int nsides, const struct verify_options *o, struct verify_result *r)
{
  struct verify_options defaults;
  if (!o) {
    verify_options_init(&defaults);
    o = &defaults;
  }
  struct run run
      = { .nsides = nsides, .r = r, .max_ranges = o->max_ranges, .progress = o->progress };
  unsigned nworkers = o->workers ? o->workers : 1;
  run.common = v[0]->size;
  run.longest = v[0]->size;
  for (int s = 0; s < nsides; s++) {
    run.s[s].v = v[s];
    if (volume_can(v[s], VOLUME_SEQUENTIAL))
      nworkers = 1; /* batches in order, blocks in order: the reads are sequential */
    run.common = min_u64(run.common, v[s]->size);
    if (v[s]->size > run.longest)
      run.longest = v[s]->size;
  }
  run.nbatches = (run.longest + BATCH_BYTES - 1) / BATCH_BYTES;
  run.nslots = 2 * nworkers + 2;
  pthread_mutex_init(&run.lock, NULL);
  pthread_cond_init(&run.cond, NULL);
  struct worker *w = calloc(nworkers, sizeof *w);
  run.slots = calloc(run.nslots, sizeof *run.slots);
  int rc = 0, started = 0;
  for (int s = 0; s < nsides && rc == 0; s++)
    if ((rc = blockdigest_begin(&run.s[s].d, v[s]->size)) < 0)
      nsides = s; /* only those begun are discarded */
  if (rc == 0 && (!w || !run.slots))
    rc = error_set(ENOMEM, "out of memory for %u verify workers", nworkers);
  for (unsigned i = 0; rc == 0 && i < nworkers; i++) {
    w[i].run = &run;
    for (int s = 0; s < run.nsides; s++)
      if (!(w[i].buf[s] = malloc(VERIFY_BLOCK)))
        rc = error_set(ENOMEM, "out of memory for verify buffers");
    if (rc == 0 && pthread_create(&w[i].thread, NULL, worker_main, &w[i]) == 0)
      started++;
    else if (rc == 0 && started == 0)
      rc = error_set(EAGAIN, "cannot start verify workers");
    else
      break;
  }
  if (rc < 0 && started > 0) {
    pthread_mutex_lock(&run.lock);
    record_error(&run, rc);
    pthread_cond_broadcast(&run.cond);
    pthread_mutex_unlock(&run.lock);
  }
  for (int i = 0; i < started; i++)
    pthread_join(w[i].thread, NULL);
  if (run.err)
    rc = error_set(-run.err, "%s", run.errmsg);
  else if (rc == 0 && run.head != run.nbatches)
    rc = error_set(EIO, "verify stopped at batch %" PRIu64 " of %" PRIu64, run.head, run.nbatches);
  /* The longer volume's tail differs however it reads. */
  if (rc == 0 && nsides == 2 && run.common < run.longest)
    rc = note_range(&run, run.common, run.longest - run.common);
  struct verify_side *out[2] = { &r->a, &r->b };
  for (int s = 0; s < nsides; s++) {
    if (rc == 0) {
      out[s]->size = v[s]->size;
      out[s]->bytes_read = atomic_load(&run.s[s].bytes_read);
      out[s]->bytes_skipped = atomic_load(&run.s[s].bytes_skipped);
      rc = blockdigest_end(&run.s[s].d, out[s]->digest);
    } else {
      blockdigest_discard(&run.s[s].d);
    }
  }
  for (unsigned i = 0; w && i < nworkers; i++) {
    free(w[i].buf[0]);
    free(w[i].buf[1]);
    extent_list_free(&w[i].ext);
  }
  for (size_t i = 0; run.slots && i < run.nslots; i++)
    free(run.slots[i].ranges);
  free(run.slots);
  free(w);
  free(run.errmsg);
  pthread_cond_destroy(&run.cond);
  pthread_mutex_destroy(&run.lock);
  return rc;
}

int
verify_digest(struct volume *v, const struct verify_options *o, struct verify_side *out)
{
  struct verify_result r;
  memset(&r, 0, sizeof r);
  int rc = run_engine(&v, 1, o, &r);
  if (rc == 0)
    *out = r.a;
  verify_result_free(&r);
  return rc;
}

int
verify_compare(struct volume *a, struct volume *b, const struct verify_options *o,
               struct verify_result *r)
{
  memset(r, 0, sizeof *r);
  double start = now_seconds();
  struct volume *v[2] = { a, b };
  int rc = run_engine(v, 2, o, r);
  if (rc < 0) {
    verify_result_free(r);
    return rc;
  }
  r->equal = r->total_ranges == 0 && a->size == b->size && strcmp(r->a.digest, r->b.digest) == 0;
  r->seconds = now_seconds() - start;
  debug("verify", "%s %s %s: %" PRIu64 " ranges, %" PRIu64 " bytes differ, %.3f s", a->name,
        r->equal ? "==" : "!=", b->name, r->total_ranges, r->bytes_differing, r->seconds);
  return 0;
}

void
verify_result_free(struct verify_result *r)
{
  free(r->ranges);
  r->ranges = NULL;
  r->n_ranges = 0;
}
