/* ferry: progress bar, see progress.h. */
#include "common/progress.h"
#include "common/util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct progress {
  char *label;
  uint64_t total;
  bool enabled;
  _Atomic uint64_t done;
  pthread_mutex_t lock;
  double start, last_draw;
};

struct progress *
progress_new(const char *label, uint64_t total, bool enabled)
{
  struct progress *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->label = strdup(label ? label : "");
  p->total = total;
  p->enabled = enabled && isatty(STDERR_FILENO);
  pthread_mutex_init(&p->lock, NULL);
  p->start = now_seconds();
  return p;
}

void
progress_format(char *buf, size_t len, const char *label, uint64_t done, uint64_t total,
                double rate, int width)
{
  double frac = total ? (double)done / total : 1.0;
  if (frac > 1)
    frac = 1;
  char bar[128];
  if (width > (int)sizeof bar - 1)
    width = sizeof bar - 1;
  int fill = (int)(frac * width);
  for (int i = 0; i < width; i++)
    bar[i] = i < fill ? '#' : ' ';
  bar[width] = 0;
  char d[32], t[32], r[32], eta[32] = "";
  format_size(d, sizeof d, done);
  format_size(t, sizeof t, total);
  format_size(r, sizeof r, rate);
  if (rate > 0 && done < total) {
    unsigned s = (unsigned)((total - done) / rate);
    snprintf(eta, sizeof eta, " ETA %u:%02u:%02u", s / 3600, s / 60 % 60, s % 60);
  }
  snprintf(buf, len, "%s [%s] %3.0f%% %s/%s %s/s%s", label, bar, frac * 100, d, t, r, eta);
}

static void
draw(struct progress *p, bool final)
{
  double now = now_seconds();
  if (!final && now - p->last_draw < 0.2)
    return;
  p->last_draw = now;
  uint64_t done = atomic_load(&p->done);
  double el = now - p->start;
  char line[256];
  progress_format(line, sizeof line, p->label, done, p->total, el > 0 ? done / el : 0, 30);
  fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
  fflush(stderr);
}

void
progress_add(struct progress *p, uint64_t n)
{
  if (!p)
    return;
  atomic_fetch_add(&p->done, n);
  if (p->enabled && pthread_mutex_trylock(&p->lock) == 0) {
    draw(p, false);
    pthread_mutex_unlock(&p->lock);
  }
}

void
progress_set(struct progress *p, uint64_t n)
{
  if (!p)
    return;
  atomic_store(&p->done, n);
  if (p->enabled && pthread_mutex_trylock(&p->lock) == 0) {
    draw(p, false);
    pthread_mutex_unlock(&p->lock);
  }
}

void
progress_finish(struct progress *p)
{
  if (!p || !p->enabled)
    return;
  pthread_mutex_lock(&p->lock);
  draw(p, true);
  pthread_mutex_unlock(&p->lock);
}

void
progress_free(struct progress *p)
{
  if (!p)
    return;
  pthread_mutex_destroy(&p->lock);
  free(p->label);
  free(p);
}
