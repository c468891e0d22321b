/* ferry: a pool of zstd compression contexts, see zstd-pool.h. */
#include "backends/zstd-pool.h"

#include <unistd.h>

void
zstd_pool_init(struct zstd_pool *p, int level, int checksum)
{
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->available, NULL);
  p->level = level;
  p->checksum = checksum;
  p->created = p->nfree = 0;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  p->max = n < 1 ? 2 : n > ZSTD_POOL_MAX ? ZSTD_POOL_MAX : (unsigned)n;
}

ZSTD_CCtx *
zstd_pool_take(struct zstd_pool *p)
{
  pthread_mutex_lock(&p->lock);
  while (!p->nfree && p->created >= p->max)
    pthread_cond_wait(&p->available, &p->lock);
  if (p->nfree) {
    ZSTD_CCtx *c = p->free[--p->nfree];
    pthread_mutex_unlock(&p->lock);
    return c;
  }
  p->created++;
  pthread_mutex_unlock(&p->lock);
  ZSTD_CCtx *c = ZSTD_createCCtx();
  if (c) {
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, p->level);
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, p->checksum);
    ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
    return c;
  }
  pthread_mutex_lock(&p->lock);
  p->created--;
  pthread_cond_signal(&p->available);
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

void
zstd_pool_give(struct zstd_pool *p, ZSTD_CCtx *c)
{
  pthread_mutex_lock(&p->lock);
  p->free[p->nfree++] = c; /* never more than created <= max */
  pthread_cond_signal(&p->available);
  pthread_mutex_unlock(&p->lock);
}

void
zstd_pool_destroy(struct zstd_pool *p)
{
  while (p->nfree)
    ZSTD_freeCCtx(p->free[--p->nfree]);
  pthread_cond_destroy(&p->available);
  pthread_mutex_destroy(&p->lock);
}
