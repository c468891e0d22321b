/* netproxy: a TCP forwarder that adds a fixed one-way delay, for the two-host link of
 * tests/lib-netns.sh (this kernel has no netem qdisc).
 *
 *   netproxy LISTEN_ADDR:PORT TARGET_ADDR:PORT DELAY_MS PIDFILE
 *
 * Every accepted connection gets its own connection to TARGET (refused: the client is
 * closed).  Bytes are forwarded in each direction DELAY_MS after they were read, so a
 * request/reply round trip through it costs 2 x DELAY_MS, while throughput is not limited by
 * the delay (up to 4 MiB queued per direction).  An end of file is passed on after the
 * bytes before it; an error on either side closes both.  SIGTERM ends everything.
 *
 * It emulates latency only: no loss, and TCP's window and congestion control see a short
 * path on each side of the proxy.  Bandwidth caps and link outages are tc/ip's job. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64u << 10)
#define QUEUE_MAX (4u << 20)

static long delay_ns;

struct chunk {
  struct chunk *next;
  struct timespec due;
  size_t len; /* 0: end of file */
  char data[];
};

/* One direction: a reader thread fills the queue, a writer thread drains it when due. */
struct pipe_dir {
  int from, to;
  pthread_mutex_t lock;
  pthread_cond_t changed;
  struct chunk *head, *tail;
  size_t queued;
  bool failed, done;
  struct link *link;
};

struct link {
  struct pipe_dir dir[2];
  pthread_mutex_t lock;
  int finished; /* threads done, of 4 */
};

static void
add_ns(struct timespec *t, long ns)
{
  t->tv_nsec += ns;
  while (t->tv_nsec >= 1000000000L) {
    t->tv_nsec -= 1000000000L;
    t->tv_sec++;
  }
}

static void
thread_done(struct link *l)
{
  pthread_mutex_lock(&l->lock);
  bool last = ++l->finished == 4;
  pthread_mutex_unlock(&l->lock);
  if (!last)
    return;
  for (int i = 0; i < 2; i++) {
    struct pipe_dir *d = &l->dir[i];
    while (d->head) {
      struct chunk *c = d->head;
      d->head = c->next;
      free(c);
    }
    close(d->from);
  }
  free(l);
}

/* Either side failed: stop both directions. */
static void
fail_link(struct link *l)
{
  for (int i = 0; i < 2; i++) {
    struct pipe_dir *d = &l->dir[i];
    pthread_mutex_lock(&d->lock);
    d->failed = true;
    pthread_cond_broadcast(&d->changed);
    pthread_mutex_unlock(&d->lock);
    shutdown(d->from, SHUT_RDWR);
  }
}

static void *
reader(void *arg)
{
  struct pipe_dir *d = arg;
  for (;;) {
    struct chunk *c = malloc(sizeof *c + CHUNK);
    if (!c) {
      fail_link(d->link);
      break;
    }
    ssize_t n = recv(d->from, c->data, CHUNK, 0);
    if (n < 0 && errno == EINTR) {
      free(c);
      continue;
    }
    c->next = NULL;
    c->len = n > 0 ? (size_t)n : 0;
    clock_gettime(CLOCK_MONOTONIC, &c->due);
    add_ns(&c->due, delay_ns);
    pthread_mutex_lock(&d->lock);
    while (d->queued > QUEUE_MAX && !d->failed)
      pthread_cond_wait(&d->changed, &d->lock);
    if (d->failed) {
      pthread_mutex_unlock(&d->lock);
      free(c);
      break;
    }
    if (d->tail)
      d->tail->next = c;
    else
      d->head = c;
    d->tail = c;
    d->queued += c->len;
    pthread_cond_broadcast(&d->changed);
    pthread_mutex_unlock(&d->lock);
    if (n < 0) {
      fail_link(d->link);
      break;
    }
    if (n == 0)
      break;
  }
  thread_done(d->link);
  return NULL;
}

static void *
writer(void *arg)
{
  struct pipe_dir *d = arg;
  for (;;) {
    pthread_mutex_lock(&d->lock);
    while (!d->head && !d->failed)
      pthread_cond_wait(&d->changed, &d->lock);
    if (d->failed) {
      pthread_mutex_unlock(&d->lock);
      break;
    }
    struct chunk *c = d->head;
    pthread_mutex_unlock(&d->lock);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &c->due, NULL) == EINTR)
      ;
    bool eof = c->len == 0, ok = true;
    for (size_t off = 0; off < c->len && ok;) {
      ssize_t w = send(d->to, c->data + off, c->len - off, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        ok = false;
      else
        off += (size_t)w;
    }
    pthread_mutex_lock(&d->lock);
    d->head = c->next;
    if (!d->head)
      d->tail = NULL;
    d->queued -= c->len;
    pthread_cond_broadcast(&d->changed);
    pthread_mutex_unlock(&d->lock);
    free(c);
    if (!ok) {
      fail_link(d->link);
      break;
    }
    if (eof) {
      shutdown(d->to, SHUT_WR);
      break;
    }
  }
  thread_done(d->link);
  return NULL;
}

static int
parse_addr(const char *s, struct sockaddr_in *a)
{
  char host[64];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof host)
    return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = 0;
  memset(a, 0, sizeof *a);
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)atoi(colon + 1));
  return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

int
main(int argc, char **argv)
{
  if (argc != 5) {
    fprintf(stderr, "usage: netproxy LISTEN_ADDR:PORT TARGET_ADDR:PORT DELAY_MS PIDFILE\n");
    return 2;
  }
  struct sockaddr_in la, ta;
  if (parse_addr(argv[1], &la) < 0 || parse_addr(argv[2], &ta) < 0) {
    fprintf(stderr, "netproxy: bad address\n");
    return 2;
  }
  delay_ns = atol(argv[3]) * 1000000L;
  signal(SIGPIPE, SIG_IGN);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr *)&la, sizeof la) < 0 || listen(lfd, 128) < 0) {
    fprintf(stderr, "netproxy: %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  FILE *f = fopen(argv[4], "w");
  if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) {
    fprintf(stderr, "netproxy: %s: %s\n", argv[4], strerror(errno));
    return 1;
  }
  for (;;) {
    int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (cfd < 0)
      continue;
    int tfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(tfd, (struct sockaddr *)&ta, sizeof ta) < 0) {
      close(tfd);
      close(cfd); /* the target is down: so is the link, for the client */
      continue;
    }
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(tfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct link *l = calloc(1, sizeof *l);
    if (!l) {
      close(cfd);
      close(tfd);
      continue;
    }
    pthread_mutex_init(&l->lock, NULL);
    int fds[2][2] = { { cfd, tfd }, { tfd, cfd } };
    for (int i = 0; i < 2; i++) {
      struct pipe_dir *d = &l->dir[i];
      d->from = fds[i][0];
      d->to = fds[i][1];
      d->link = l;
      pthread_mutex_init(&d->lock, NULL);
      pthread_cond_init(&d->changed, NULL);
    }
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    for (int i = 0; i < 2; i++) {
      pthread_create(&t, &at, reader, &l->dir[i]);
      pthread_create(&t, &at, writer, &l->dir[i]);
    }
    pthread_attr_destroy(&at);
  }
}
