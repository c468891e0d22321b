/* ferry: compression contexts shared by the copy workers of one writer (zst-write.c,
 * stream.c).  At most one per online CPU exists (and at most ZSTD_POOL_MAX): more
 * compressions at once would only share the cores, and at high levels each context holds
 * tens of MiB. */
#ifndef FERRY_ZSTD_POOL_H
#define FERRY_ZSTD_POOL_H

#include <pthread.h>
#include <zstd.h>

#define ZSTD_POOL_MAX 64

struct zstd_pool {
  pthread_mutex_t lock;
  pthread_cond_t available;
  int level, checksum;
  unsigned created, max, nfree;
  ZSTD_CCtx *free[ZSTD_POOL_MAX];
};

/* Contexts compress at `level`, with the content size and, when checksum is 1, the content
 * checksum in every frame. */
void zstd_pool_init(struct zstd_pool *p, int level, int checksum);
/* A context (waits while all are in use); NULL when out of memory. */
ZSTD_CCtx *zstd_pool_take(struct zstd_pool *p);
void zstd_pool_give(struct zstd_pool *p, ZSTD_CCtx *c);
void zstd_pool_destroy(struct zstd_pool *p);

#endif
