/* ferry-nbd: serving — the accept loop, one thread per client for the handshake, then a
 * per-connection pool of worker threads that take turns reading requests (one reader at a
 * time under conn.read_lock) and execute and answer them concurrently, so requests are
 * pipelined and answered out of order.  Workers are started on demand: a client that
 * keeps one request in flight costs one thread, one that keeps 32 in flight gets up to
 * --threads.  Reply writes are serialised per connection (conn.write_lock).
 *
 * Fairness: a connection still in its handshake holds a slot, so it gets --handshake-timeout
 * seconds in all (the accept loop is its watchdog: it shuts the socket down, which ends any
 * blocked read, write or TLS handshake), and when every slot is taken a new connection
 * evicts the oldest one still in its handshake rather than being refused: silent
 * connections cannot lock clients out.  Memory per connection: NBD_CONN_FLOOR in nbd.h.
 *
 * Polling (--poll-us, issue 15): a thread asleep in recv is woken by the kernel when a request
 * arrives, and on a virtual machine whose idle vCPU halts that wake-up costs more than serving
 * a 4 KiB request from the page cache.  So the reader, before it sleeps, spins on non-blocking
 * reads for up to --poll-us, adaptively per connection as qemu's IOThreads do (poll-max-ns):
 * it spins only while requests follow each other within the window.  A spin that runs out
 * turns spinning off; it comes back on when a request again arrives within the window of the
 * reader going to sleep.  An idle connection costs one window per burst of requests.  It
 * spins only while at most one of the connection's requests is being executed (the client
 * waits for it; with more, the CPU is the workers'), and at most half the CPUs spin at once
 * (spin_slot_take, shared with the nbd driver). */
#include "nbd-server/serve.h"
#include "nbd-server/nbd.h"
#include "nbd-server/protocol.h"
#include "nbd-server/tls.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Seconds in-flight requests get to finish at shutdown. */
#define SHUTDOWN_GRACE 10

struct client {
  struct conn conn;
  struct server *srv;
  int fd;
  char peer[96];
  struct tls_session *tls; /* after NBD_OPT_STARTTLS */
  bool transmitting;       /* handshake done: polling applies */
  struct spin spin;        /* the adaptive spin's state (under conn.read_lock) */
  struct client *prev, *next;
  /* Handshake watchdog (under srv->lock). */
  bool handshaking, cut;
  double deadline;
  /* Worker accounting: workers changes under srv->lock (a thread starts or ends); busy is
   * counted without it, so a request takes no lock shared with other clients. */
  _Atomic unsigned workers, busy;
  pthread_cond_t done; /* workers reached 0 */
};

/* ---- socket transport ---- */

static int
sock_recv(void *opaque, void *buf, size_t len)
{
  struct client *cl = opaque;
  if (cl->tls)
    return tls_recv(cl->tls, buf, len);
  char *p = buf;
  while (len > 0) {
    ssize_t n = recv(cl->fd, p, len, MSG_WAITALL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Spin for up to `window` seconds: bytes (> 0), -1 at the end of the stream, 0 when nothing
 * came. */
static long
recv_polled(struct client *cl, void *buf, size_t cap, double window)
{
  double end = now_seconds() + window;
  do {
    ssize_t n;
    if (cl->tls) {
      char b;
      n = recv(cl->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT); /* a record is arriving */
      if (n > 0)
        return tls_recv_some(cl->tls, buf, cap);
    } else {
      n = recv(cl->fd, buf, cap, MSG_DONTWAIT);
      if (n > 0)
        return (long)n;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
      return -1;
  } while (now_seconds() < end);
  return 0;
}

static long
recv_blocking(struct client *cl, void *buf, size_t cap)
{
  if (cl->tls)
    return tls_recv_some(cl->tls, buf, cap);
  for (;;) {
    ssize_t n = recv(cl->fd, buf, cap, 0);
    if (n < 0 && errno == EINTR)
      continue;
    return n > 0 ? (long)n : -1;
  }
}

static long
sock_recv_some(void *opaque, void *buf, size_t cap)
{
  struct client *cl = opaque;
  double window = cl->transmitting ? cl->srv->poll_us / 1e6 : 0;
  if (window <= 0 || (cl->tls && tls_pending(cl->tls)))
    return recv_blocking(cl, buf, cap);
  bool spun = false;
  if (cl->spin.on && atomic_load(&cl->busy) <= 1 && spin_slot_take()) {
    long n = recv_polled(cl, buf, cap, window);
    spin_slot_put();
    spin_note(&cl->spin, n != 0);
    if (n != 0)
      return n;
    spun = true;
  }
  if (spun)
    return recv_blocking(cl, buf, cap);
  double t0 = now_seconds();
  long n = recv_blocking(cl, buf, cap);
  spin_note_sleep(&cl->spin, now_seconds() - t0, window);
  return n;
}

static int
send_all(struct client *cl, const struct iovec *iov_in, int n, int flags)
{
  struct iovec local[64];
  struct iovec *iov = n <= 64 ? local : malloc(sizeof *iov * (size_t)n);
  if (!iov)
    return -1;
  memcpy(iov, iov_in, sizeof *iov * (size_t)n);
  int r = 0, i = 0;
  while (i < n) {
    int cnt = n - i > IOV_MAX ? IOV_MAX : n - i;
    struct msghdr m = { .msg_iov = iov + i, .msg_iovlen = (size_t)cnt };
    ssize_t w = sendmsg(cl->fd, &m, MSG_NOSIGNAL | flags);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0) {
      r = -1;
      break;
    }
    /* Skip what was sent; resume inside a partially sent element. */
    size_t left = (size_t)w;
    while (i < n && left >= iov[i].iov_len) {
      left -= iov[i].iov_len;
      i++;
    }
    if (i < n) {
      iov[i].iov_base = (char *)iov[i].iov_base + left;
      iov[i].iov_len -= left;
    }
  }
  if (iov != local)
    free(iov);
  return r;
}

static int
sock_sendv(void *opaque, const struct iovec *iov, int n)
{
  struct client *cl = opaque;
  if (cl->tls)
    return tls_sendv(cl->tls, iov, n);
  return send_all(cl, iov, n, 0);
}

/* The header (MSG_MORE: it leaves with the data), then the pipe's bytes (splice.c). */
static int
sock_splice_out(void *opaque, const struct iovec *iov, int n, int pipe_rd, size_t len)
{
  struct client *cl = opaque;
  if (cl->tls || send_all(cl, iov, n, MSG_MORE) < 0)
    return -1;
  while (len > 0) {
    ssize_t w = splice(pipe_rd, NULL, cl->fd, NULL, len, SPLICE_F_MOVE);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    len -= (size_t)w;
  }
  return 0;
}

static void
sock_shutdown(void *opaque)
{
  struct client *cl = opaque;
  shutdown(cl->fd, SHUT_RDWR);
}

static int
sock_starttls(void *opaque)
{
  struct client *cl = opaque;
  if (tls_session_start(cl->srv->exp->tls, cl->fd, cl->peer, &cl->tls) < 0) {
    log_warning("%s", error_message());
    return -1;
  }
  return 0;
}

static const struct conn_io sock_io = {
  .recv = sock_recv,
  .sendv = sock_sendv,
  .splice_out = sock_splice_out,
  .recv_some = sock_recv_some,
  .shutdown = sock_shutdown,
  .starttls = sock_starttls,
};

/* ---- workers ---- */

static void *worker_main(void *arg);

/* Called with srv->lock held. */
static void
spawn_worker(struct client *cl)
{
  pthread_t t;
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  cl->workers++;
  if (pthread_create(&t, &a, worker_main, cl) != 0) {
    cl->workers--; /* the existing workers carry on */
    log_warning("%s: cannot start another worker thread", cl->peer);
  }
  pthread_attr_destroy(&a);
}

/* Quick requests run by the reader itself: a request that needs no waiting
 * (nbd_run_while_reading: a write into a file's page cache, a small read it has cached) is
 * executed by the thread holding the read lock, its reply held back, and the next request
 * read at once; the held replies leave in one send before the reader would wait for the
 * client, or hands the lock on.  So a client that keeps many requests in flight is answered
 * without a worker wake-up and a send per request, and one that keeps one in flight without
 * a hand-over of the read lock.  Requests that may wait (a clone's region still on its
 * source, FUA, flush, block status, large reads) go to a worker as before.  A request run
 * here that is about to sleep on the volume anyway (a region another request holds:
 * wait_hook in common/util.h) first lets the read lock go, as ferry-fuse's solo reader does. */
struct reading {
  struct conn *c;
  bool locked; /* this thread still holds c->read_lock */
};

/* The wait hook of a request run while reading.  Called with the volume's own locks held, so
 * it sends nothing (a client that does not read its replies would block it): the held
 * replies stay with the read lock, and its next holder sends them before it reads from the
 * client. */
static void
let_reading_go(void *arg)
{
  struct reading *rd = arg;
  nbd_replies_hold(NULL);
  rd->locked = false;
  pthread_mutex_unlock(&rd->c->read_lock);
}

/* The loop every worker runs; returns when the connection is finished. */
static void
work(struct client *cl)
{
  struct server *srv = cl->srv;
  struct conn *c = &cl->conn;
  struct worker w = { 0 };
  for (;;) {
    struct request req;
    pthread_mutex_lock(&c->read_lock);
    struct reading rd = { c, true };
    int r, s = 0;
    bool pending = false; /* req is read and left to run below */
    for (;;) {
      if (c->held_len && !nbd_conn_request_buffered(c))
        nbd_replies_flush(c); /* before a read that may wait for the client */
      r = nbd_read_request(c, &w, &req);
      if (r <= 0)
        break;
      /* Nobody left to read the next request: add a worker, up to the limit (workers only
       * grows here, under read_lock, so the check cannot race with another spawn). */
      if (atomic_fetch_add(&cl->busy, 1) + 1 >= cl->workers && cl->workers < srv->threads) {
        pthread_mutex_lock(&srv->lock);
        spawn_worker(cl);
        pthread_mutex_unlock(&srv->lock);
      }
      wait_hook_set(let_reading_go, &rd);
      int ran = nbd_run_while_reading(c, &w, &req);
      wait_hook_set(NULL, NULL);
      if (ran == 0) { /* nothing ran: the read lock is still ours */
        pending = true;
        break;
      }
      atomic_fetch_sub(&cl->busy, 1);
      if (ran < 0) {
        s = -1;
        break;
      }
      if (!rd.locked)
        break;
    }
    if (rd.locked) {
      if (nbd_replies_flush(c) < 0)
        s = -1;
      if (r <= 0)
        c->quit = true;
      pthread_mutex_unlock(&c->read_lock);
    }
    if (r <= 0) {
      if (r < 0)
        sock_shutdown(cl);
      break;
    }
    if (s >= 0 && pending)
      s = nbd_handle_request(c, &w, &req);
    if (pending)
      atomic_fetch_sub(&cl->busy, 1);
    if (s < 0)
      break;
  }
  worker_free(c, &w);
  pthread_mutex_lock(&srv->lock);
  if (--cl->workers == 0)
    pthread_cond_broadcast(&cl->done);
  pthread_mutex_unlock(&srv->lock);
}

static void *
worker_main(void *arg)
{
  work(arg);
  return NULL;
}

/* Unlink and free a finished client. */
static void
client_remove(struct client *cl)
{
  struct server *srv = cl->srv;
  pthread_mutex_lock(&srv->lock);
  if (cl->prev)
    cl->prev->next = cl->next;
  else
    srv->clients = cl->next;
  if (cl->next)
    cl->next->prev = cl->prev;
  srv->nclients--;
  pthread_cond_broadcast(&srv->cond);
  free(cl); /* under the lock: server_run may return as soon as it is released */
  pthread_mutex_unlock(&srv->lock);
}

static void
client_close_fd(struct client *cl)
{
  tls_session_end(cl->tls, cl->fd);
  cl->tls = NULL;
  pthread_mutex_lock(&cl->srv->lock);
  int fd = cl->fd;
  cl->fd = -1; /* server_run's shutdown loop skips it from now on */
  pthread_mutex_unlock(&cl->srv->lock);
  close(fd);
}

static void *
client_main(void *arg)
{
  struct client *cl = arg;
  struct server *srv = cl->srv;
  int r = nbd_handshake(&cl->conn);
  pthread_mutex_lock(&srv->lock);
  cl->handshaking = false;
  if (cl->cut)
    r = -1; /* the watchdog already shut the socket down */
  pthread_mutex_unlock(&srv->lock);
  if (r == 1) {
    debug("nbd", "%s: transmission (flags 0x%x, structured %d)", cl->peer, cl->conn.tflags,
          cl->conn.structured);
    pthread_mutex_lock(&srv->lock);
    cl->workers++; /* this thread is worker 0 */
    pthread_mutex_unlock(&srv->lock);
    cl->transmitting = cl->spin.on = true; /* before any other worker exists */
    work(cl);
    /* In-flight requests on other workers finish and answer before we close. */
    pthread_mutex_lock(&srv->lock);
    while (cl->workers > 0)
      pthread_cond_wait(&cl->done, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
  }
  debug("nbd", "%s: connection closed", cl->peer);
  client_close_fd(cl);
  conn_destroy(&cl->conn);
  pthread_cond_destroy(&cl->done);
  client_remove(cl);
  return NULL;
}

static void
describe_peer(int fd, char *buf, size_t len)
{
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char host[INET6_ADDRSTRLEN] = "?";
  if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
    snprintf(buf, len, "client fd %d", fd);
  } else if (ss.ss_family == AF_INET) {
    struct sockaddr_in *s = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &s->sin_addr, host, sizeof host);
    snprintf(buf, len, "%s:%u", host, ntohs(s->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof host);
    snprintf(buf, len, "[%s]:%u", host, ntohs(s->sin6_port));
  } else {
    snprintf(buf, len, "unix client fd %d", fd);
  }
}

/* Shut a client's socket down (srv->lock held); its thread sees EOF and ends. */
static void
cut_client(struct client *cl)
{
  cl->cut = true;
  if (cl->fd >= 0)
    shutdown(cl->fd, SHUT_RDWR);
}

/* Every slot is taken: make room by evicting the oldest connection still in its handshake
 * (srv->lock held).  false when all are serving. */
static bool
evict_oldest_handshake(struct server *srv)
{
  struct client *oldest = NULL;
  for (struct client *cl = srv->clients; cl; cl = cl->next) /* newest first */
    if (cl->handshaking && !cl->cut)
      oldest = cl;
  if (!oldest)
    return false;
  log_warning("%s: dropped: all %u client slots are taken and it has not finished its "
              "handshake (a new client needs the slot)",
              oldest->peer, srv->max_clients);
  cut_client(oldest);
  return true;
}

/* The handshake watchdog: seconds until the next deadline (-1: none). */
static double
cut_slow_handshakes(struct server *srv)
{
  double now = now_seconds(), next = -1;
  pthread_mutex_lock(&srv->lock);
  for (struct client *cl = srv->clients; cl; cl = cl->next) {
    if (!cl->handshaking || cl->cut)
      continue;
    if (cl->deadline <= now) {
      log_warning("%s: handshake not finished within %g s (--handshake-timeout), dropping the "
                  "connection",
                  cl->peer, srv->handshake_timeout);
      cut_client(cl);
    } else if (next < 0 || cl->deadline - now < next) {
      next = cl->deadline - now;
    }
  }
  pthread_mutex_unlock(&srv->lock);
  return next;
}

static void
accept_one(struct server *srv, int lfd)
{
  int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
      log_warning("accept: %s", strerror(errno));
    return;
  }
  int one = 1;
  /* Small replies must not wait for Nagle (spec recommends TCP_NODELAY); fails harmlessly
   * on unix sockets. */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct client *cl = calloc(1, sizeof *cl);
  if (!cl) {
    close(fd);
    return;
  }
  cl->fd = fd;
  cl->srv = srv;
  describe_peer(fd, cl->peer, sizeof cl->peer);
  debug("nbd", "%s: connected", cl->peer);
  pthread_mutex_lock(&srv->lock);
  if (srv->max_clients && srv->nclients >= srv->max_clients && !evict_oldest_handshake(srv)) {
    pthread_mutex_unlock(&srv->lock);
    log_warning("%s: refused: already serving the maximum of %u clients", cl->peer,
                srv->max_clients);
    close(fd);
    free(cl);
    return;
  }
  cl->handshaking = true;
  cl->deadline = now_seconds() + srv->handshake_timeout;
  conn_init(&cl->conn, srv->exp, &sock_io, cl, cl->peer);
  pthread_cond_init(&cl->done, NULL);
  cl->next = srv->clients;
  if (srv->clients)
    srv->clients->prev = cl;
  srv->clients = cl;
  srv->nclients++;
  srv->total_clients++;
  pthread_t t;
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  int e = pthread_create(&t, &a, client_main, cl);
  pthread_attr_destroy(&a);
  pthread_mutex_unlock(&srv->lock);
  if (e != 0) {
    log_warning("%s: cannot start a thread: %s", cl->peer, strerror(e));
    close(fd);
    conn_destroy(&cl->conn);
    pthread_cond_destroy(&cl->done);
    client_remove(cl);
    return;
  }
}

int
server_init(struct server *srv, const struct nbd_export *exp, const struct server_params *p)
{
  memset(srv, 0, sizeof *srv);
  srv->exp = exp;
  srv->handshake_timeout = p->handshake_timeout > 0 ? p->handshake_timeout : 10;
  srv->threads = p->threads ? p->threads : 1;
  srv->max_clients = p->max_clients;
  srv->poll_us = p->poll_us;
  pthread_mutex_init(&srv->lock, NULL);
  pthread_cond_init(&srv->cond, NULL);
  if (pipe2(srv->wake, O_CLOEXEC | O_NONBLOCK) < 0)
    return error_set_errno(errno, "pipe");
  return 0;
}

void
server_stop(struct server *srv)
{
  /* Async-signal-safe: only a write to the pipe. */
  char b = 'x';
  ssize_t r = write(srv->wake[1], &b, 1);
  (void)r;
}

unsigned
server_clients(struct server *srv)
{
  pthread_mutex_lock(&srv->lock);
  unsigned n = srv->nclients;
  pthread_mutex_unlock(&srv->lock);
  return n;
}

int
server_run(struct server *srv, const int *fds, size_t nfds)
{
  struct pollfd *p = calloc(nfds + 1, sizeof *p);
  if (!p)
    return error_set(ENOMEM, "out of memory");
  for (size_t i = 0; i < nfds; i++)
    p[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
  p[nfds] = (struct pollfd){ .fd = srv->wake[0], .events = POLLIN };
  for (;;) {
    double next = cut_slow_handshakes(srv);
    int n = poll(p, nfds + 1, next < 0 ? -1 : (int)(next * 1000) + 10);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      free(p);
      return error_set_errno(errno, "poll");
    }
    if (p[nfds].revents)
      break;
    for (size_t i = 0; i < nfds; i++)
      if (p[i].revents & POLLIN)
        accept_one(srv, fds[i]);
  }
  free(p);
  log_info("shutting down: finishing in-flight requests of %u client(s)", server_clients(srv));
  /* Stop reading new requests (a blocked reader sees end of file); requests already read
   * are executed and answered, then each connection closes itself. */
  pthread_mutex_lock(&srv->lock);
  for (struct client *cl = srv->clients; cl; cl = cl->next)
    if (cl->fd >= 0)
      shutdown(cl->fd, SHUT_RD);
  /* A client that stopped reading its replies would block a reply write for ever: after
   * the grace period, cut the remaining connections completely. */
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += SHUTDOWN_GRACE;
  while (srv->nclients > 0) {
    if (pthread_cond_timedwait(&srv->cond, &srv->lock, &deadline) == ETIMEDOUT) {
      log_warning("%u client(s) not finished after %d s, disconnecting them", srv->nclients,
                  SHUTDOWN_GRACE);
      for (struct client *cl = srv->clients; cl; cl = cl->next)
        if (cl->fd >= 0)
          shutdown(cl->fd, SHUT_RDWR);
      deadline.tv_sec += 3600;
    }
  }
  pthread_mutex_unlock(&srv->lock);
  return 0;
}

void
server_destroy(struct server *srv)
{
  close(srv->wake[0]);
  close(srv->wake[1]);
  pthread_mutex_destroy(&srv->lock);
  pthread_cond_destroy(&srv->cond);
}
