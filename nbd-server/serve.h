/* ferry-nbd: listening sockets (listen.c) and the serving loop (serve.c). */
#ifndef FERRY_NBD_SERVE_H
#define FERRY_NBD_SERVE_H

#include <pthread.h>
#include <stddef.h>

struct nbd_export;
struct client;

struct server_params {
  unsigned threads;         /* worker threads per connection */
  unsigned max_clients;     /* 0: unlimited */
  double handshake_timeout; /* seconds from accept to the end of the handshake */
  unsigned poll_us;         /* --poll-us: the reader's spin before it sleeps; 0: never */
};

struct server {
  const struct nbd_export *exp;
  unsigned threads, max_clients, poll_us;
  double handshake_timeout;
  pthread_mutex_t lock;
  pthread_cond_t cond; /* nclients changed */
  struct client *clients;
  unsigned nclients;
  unsigned long total_clients;
  int wake[2]; /* self-pipe: server_stop() ends server_run() */
};

int server_init(struct server *srv, const struct nbd_export *exp, const struct server_params *p);
/* Serve until server_stop(); then stop reading requests, let in-flight ones finish and
 * wait for every connection to close. */
int server_run(struct server *srv, const int *fds, size_t nfds);
/* Async-signal-safe. */
void server_stop(struct server *srv);
unsigned server_clients(struct server *srv);
void server_destroy(struct server *srv);

/* A list of listening sockets. */
struct listeners {
  int *fds;
  size_t n;
  char **unix_paths; /* unlinked by listeners_close */
  size_t npaths;
};

/* "HOST:PORT", "[V6]:PORT", "HOST" (port 10809) or ":PORT" (every address).  Binds every
 * address the name resolves to. */
int listen_tcp(struct listeners *l, const char *hostport);
/* A unix socket; a stale socket file (nobody listening) is replaced, a live one refused. */
int listen_unix(struct listeners *l, const char *path);
/* systemd socket activation: 1 when LISTEN_FDS/LISTEN_PID gave us sockets, 0 when not,
 * negative on a malformed environment. */
int listen_activation(struct listeners *l);
void listeners_close(struct listeners *l);

#endif
