/* ferry-nbd internals: the export being served, one client connection, and the functions
 * that parse and answer the protocol.
 *
 * The parsing half (handshake.c, transmission.c) only talks to the peer through struct
 * conn_io, so the libFuzzer target (fuzz-nbd.c) drives it from a memory buffer; serve.c
 * supplies the socket implementation, the worker threads and the listeners. */
#ifndef FERRY_NBD_H
#define FERRY_NBD_H

#include "backends/volume.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct clone;
struct tls_config;
struct nbd_budget;

/* --tls: off (STARTTLS refused), on (offered, plaintext allowed), require (nothing but
 * NBD_OPT_STARTTLS and NBD_OPT_ABORT before TLS: the spec's FORCEDTLS mode). */
enum nbd_tls_mode { NBD_TLS_OFF, NBD_TLS_ON, NBD_TLS_REQUIRE };

/* What every connection serves (read-only after startup). */
struct nbd_export {
  struct volume *vol;
  struct clone *clone;     /* non-NULL when serving a clone: enables ferry:hydrated */
  const char *name;        /* canonical export name ("" by default) */
  bool strict_name;        /* --export-name given: refuse other names (but "") */
  const char *description; /* NULL: none */
  bool readonly;
  uint32_t min_block, preferred_block, max_block;
  enum nbd_tls_mode tls_mode;
  const struct tls_config *tls; /* used by serve.c's starttls (NULL with NBD_TLS_OFF) */
  struct nbd_budget *budget;    /* request buffer memory shared by all connections */
};

/* Request buffer memory: each connection may hold NBD_CONN_FLOOR bytes of its own (never
 * waits for anyone else), up to NBD_CONN_CAP in all (beyond it, it waits for its own
 * requests to finish); what lies between comes from the shared budget (a wait of at most
 * NBD_BUDGET_WAIT seconds, then ENOMEM).  So a client that pipelines huge reads and never
 * reads the replies, or many idle ones, cannot starve a new client's small requests. */
#define NBD_CONN_FLOOR (8u << 20)
#define NBD_CONN_CAP (128u << 20)
#define NBD_BUDGET_WAIT 10
#define NBD_DEFAULT_BUDGET (2ULL << 30)
/* A budget of `bytes` shared by every connection (0: NBD_DEFAULT_BUDGET). */
struct nbd_budget *nbd_budget_new(uint64_t bytes);
void nbd_budget_free(struct nbd_budget *b);

/* Transport: full-length receive/send.  0 on success; -1 when the peer went away or the
 * transport failed (the connection is then finished). */
struct conn_io {
  int (*recv)(void *opaque, void *buf, size_t len);
  int (*sendv)(void *opaque, const struct iovec *iov, int n);
  /* Stop the reading side (wakes a blocked recv); may be NULL. */
  void (*shutdown)(void *opaque);
  /* Run the TLS handshake on the transport; from then on recv/sendv go through TLS.
   * 0, or -1 (the connection must end: the ACK is sent, plaintext is no longer possible).
   * NULL: no TLS. */
  int (*starttls)(void *opaque);
  /* Send the iovecs, then `len` bytes from the pipe `pipe_rd` (splice.c), with the reply
   * lock held; 0 or -1 as sendv.  NULL: not a socket (every reply goes through sendv). */
  int (*splice_out)(void *opaque, const struct iovec *iov, int n, int pipe_rd, size_t len);
  /* Receive what is there, at least 1 and at most cap bytes: the count, or -1 as recv.
   * NULL: requests are read with recv alone (inbuf.c). */
  long (*recv_some)(void *opaque, void *buf, size_t cap);
};

/* Meta context ids handed out by SET_META_CONTEXT. */
enum { NBD_META_BASE_ALLOCATION = 1, NBD_META_FERRY_HYDRATED = 2 };

struct conn {
  const struct nbd_export *exp;
  const struct conn_io *io;
  void *io_opaque;
  const char *peer; /* for messages */

  /* Negotiated in the handshake. */
  bool fixed_newstyle, no_zeroes, structured;
  bool meta_base, meta_hydrated; /* selected contexts */
  char *meta_export;             /* export name of the last SET_META_CONTEXT */
  uint16_t tflags;               /* transmission flags sent to the client */
  unsigned options_seen;
  bool tls; /* NBD_OPT_STARTTLS succeeded */

  /* Transmission: one reader at a time, one reply writer at a time. */
  pthread_mutex_t read_lock, write_lock;
  _Atomic bool quit;   /* no more requests will be read (DISC, EOF, error, shutdown) */
  _Atomic bool broken; /* a reply could not be sent: requests still queued are dropped */

  /* Received and not yet parsed (inbuf.c; under read_lock). */
  uint8_t *in;
  size_t in_pos, in_len;

  /* Replies held back while the reader runs quick requests itself (nbd_replies_hold;
   * under read_lock). */
  uint8_t *held;
  size_t held_len;
  unsigned held_n;
  bool no_nowait; /* the file refuses RWF_NOWAIT reads */

  /* Request buffers held by this connection's workers (see NBD_CONN_FLOOR). */
  pthread_mutex_t mem_lock;
  pthread_cond_t mem_freed;
  uint64_t mem_used, floor_left;
};

/* One request as read from the wire; data points into the reading worker's buffer. */
struct request {
  uint16_t flags, type;
  uint64_t handle, offset;
  uint32_t length;
  void *data; /* WRITE payload */
};

/* Per-worker reusable state: no allocation per request in the steady state. */
struct worker {
  void *buf;
  size_t cap;
  struct extent_list extents;
  struct iovec *iov;
  size_t iov_cap;
  uint8_t *hdrs; /* chunk headers for multi-chunk read replies */
  size_t hdrs_cap;
  uint64_t paid_floor, paid_shared; /* how buf's cap was accounted */
  int pipe[2];                      /* splice.c, when pipe_cap > 0 */
  size_t pipe_cap;
};

void conn_init(struct conn *c, const struct nbd_export *exp, const struct conn_io *io, void *opaque,
               const char *peer);
void conn_destroy(struct conn *c);
void worker_free(struct conn *c, struct worker *w);

/* Zero-copy read replies (splice.c): 1 = the reply (the header iovecs, then the bytes) was
 * sent, -1 = sending it failed (the connection ends), 0 = not done, nothing sent: reply from
 * a buffer.  Only for reads the volume has in a file, on a plain socket. */
int nbd_splice_read(struct conn *c, struct worker *w, const struct request *r, struct iovec *hdr,
                    int nhdr);
void nbd_splice_free(struct worker *w);

/* Handshake (handshake.c): 1 = transmission phase entered, 0 = the client ended the session
 * (ABORT or a clean close), -1 = protocol violation or transport failure (drop). */
int nbd_handshake(struct conn *c);
/* Transmission flags for this export and connection. */
uint16_t nbd_transmission_flags(const struct conn *c);

/* Transmission (transmission.c).  nbd_read_request: 1 = a request is in *req (its WRITE
 * payload in w->buf), 0 = the client disconnected (DISC or EOF), -1 = drop the connection
 * (bad magic, oversized write, transport failure).  Call with c->read_lock held. */
int nbd_read_request(struct conn *c, struct worker *w, struct request *req);
/* The request stream through the connection's receive buffer (inbuf.c): len bytes, 0 or -1
 * as conn_io.recv.  Call with c->read_lock held. */
int nbd_conn_recv(struct conn *c, void *buf, size_t len);
void nbd_conn_recv_free(struct conn *c);
/* Whether the receive buffer holds the next request whole (header, and a write's payload):
 * reading it will not wait for the client.  Call with c->read_lock held. */
bool nbd_conn_request_buffered(const struct conn *c);
/* Held replies (the reader running quick requests itself, serve.c): while this thread holds
 * c's replies, the short replies it sends are kept and leave together with the next
 * nbd_replies_flush, in one send.  nbd_replies_hold(NULL) stops holding; what is held stays
 * for the next flush.  Flush: 0, or -1 when the client is gone.  Call with c->read_lock held. */
void nbd_replies_hold(struct conn *c);
int nbd_replies_flush(struct conn *c);
/* Run a request in the reading thread when it is quick: a write into a file's page cache
 * (its reply held), or a small read whose bytes are all cached (answered into the held
 * buffer without waiting).  1 = it ran, 0 = it did not (run it as usual), -1 = the
 * connection failed.  Call with c->read_lock held. */
int nbd_run_while_reading(struct conn *c, struct worker *w, const struct request *req);
/* Check, execute and answer one request.  Returns -1 when the reply could not be sent. */
int nbd_handle_request(struct conn *c, struct worker *w, const struct request *req);
/* The NBD error for an invalid request, 0 when it may be executed (pure, no I/O). */
uint32_t nbd_validate_request(const struct conn *c, const struct request *req);

#endif
