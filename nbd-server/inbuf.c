/* ferry-nbd: the request stream's receive buffer (issue 15).  Requests are read through a
 * per-connection buffer (under conn.read_lock): one recv takes whatever the client has sent,
 * so a 4 KiB write is one system call for its header and payload instead of two, and a
 * client that pipelines many requests has several headers read at once.  Payloads of half
 * the buffer or more go straight into the worker's buffer after what was already received.
 * Without the transport's recv_some (the fuzzer) every read is the transport's exact recv. */
#include "nbd-server/nbd.h"
#include "nbd-server/protocol.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

#define INBUF_SIZE (64u * 1024)

int
nbd_conn_recv(struct conn *c, void *buf, size_t len)
{
  if (!c->io->recv_some)
    return c->io->recv(c->io_opaque, buf, len);
  char *p = buf;
  size_t have = c->in_len - c->in_pos, n = have < len ? have : len;
  if (n) {
    memcpy(p, c->in + c->in_pos, n);
    c->in_pos += n;
    p += n;
    len -= n;
  }
  if (len == 0)
    return 0;
  c->in_pos = c->in_len = 0; /* empty now */
  if (len >= INBUF_SIZE / 2 || (!c->in && !(c->in = malloc(INBUF_SIZE))))
    return c->io->recv(c->io_opaque, p, len);
  while (c->in_len < len) {
    long got = c->io->recv_some(c->io_opaque, c->in + c->in_len, INBUF_SIZE - c->in_len);
    if (got <= 0)
      return -1;
    c->in_len += (size_t)got;
  }
  memcpy(p, c->in, len);
  c->in_pos = len;
  return 0;
}

void
nbd_conn_recv_free(struct conn *c)
{
  free(c->in);
  c->in = NULL;
  c->in_pos = c->in_len = 0;
}

bool
nbd_conn_request_buffered(const struct conn *c)
{
  size_t have = c->in_len - c->in_pos;
  if (!c->in || have < NBD_REQUEST_SIZE)
    return false;
  const uint8_t *h = c->in + c->in_pos;
  if (get_be16(h + 6) != NBD_CMD_WRITE)
    return true;
  return have - NBD_REQUEST_SIZE >= get_be32(h + 24);
}
