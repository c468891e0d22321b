/* ferry-nbd: zero-copy read replies (issue 15).  A large read of a volume that has its bytes
 * in a file (a plain file export, a clone's hydrated regions) is not copied from the page
 * cache into a buffer and from there into the socket: the file's pages are spliced into a
 * pipe of the worker's, outside the reply lock (a page-cache miss reads the disk while other
 * replies go out), and from the pipe into the socket after the reply's header, under it.
 * The server's CPU per GiB drops by the two copies; the client reads the same bytes.
 *
 * Only for plain sockets (the transport's splice_out; not TLS, not the fuzzer) and files not
 * opened O_DIRECT (volume_file_range).  Anything unexpected before the header went out
 * (a short file, a splice error) falls back to the buffered reply; the pipe is emptied
 * first, so no byte of this request is left in it for the next one. */
#include "nbd-server/nbd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

/* Reads smaller than this are buffered (a pipe round trip costs more than a small copy). */
#define SPLICE_MIN (128u * 1024)
/* The worker's pipe holds a whole reply up to this size (/proc/sys/fs/pipe-max-size is
 * 1 MiB by default); larger reads are buffered. */
#define SPLICE_PIPE (1u << 20)

void
nbd_splice_free(struct worker *w)
{
  if (w->pipe_cap) {
    close(w->pipe[0]);
    close(w->pipe[1]);
  }
  w->pipe_cap = 0;
}

static bool
pipe_ready(struct worker *w, size_t len)
{
  if (!w->pipe_cap) {
    if (pipe2(w->pipe, O_CLOEXEC) < 0)
      return false;
    int cap = fcntl(w->pipe[1], F_SETPIPE_SZ, SPLICE_PIPE);
    if (cap < 0)
      cap = fcntl(w->pipe[1], F_GETPIPE_SZ);
    if (cap <= 0) {
      close(w->pipe[0]);
      close(w->pipe[1]);
      return false;
    }
    w->pipe_cap = (size_t)cap;
  }
  return len <= w->pipe_cap;
}

/* Empty the pipe after a failed fill (`have` bytes in it), into scratch space. */
static void
drain(struct worker *w, size_t have)
{
  char scratch[16384];
  while (have > 0) {
    ssize_t n = read(w->pipe[0], scratch, have < sizeof scratch ? have : sizeof scratch);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      /* Cannot tell what is left in it: never use this pipe again. */
      nbd_splice_free(w);
      return;
    }
    have -= (size_t)n;
  }
}

int
nbd_splice_read(struct conn *c, struct worker *w, const struct request *r, struct iovec *hdr,
                int nhdr)
{
  if (!c->io->splice_out || c->tls || r->length < SPLICE_MIN)
    return 0;
  int fd;
  uint64_t foff;
  if (volume_file_range(c->exp->vol, r->length, r->offset, &fd, &foff) < 0 || foff > LLONG_MAX)
    return 0;
  /* A pipe holds pages, not bytes: an unaligned range needs one more of them. */
  if (!pipe_ready(w, (size_t)(((foff & 4095) + r->length + 4095) & ~(uint64_t)4095)))
    return 0;
  loff_t pos = (loff_t)foff;
  size_t have = 0;
  while (have < r->length) {
    /* Non-blocking on the pipe: it cannot fill up (checked above), and if it did anyway,
     * this would wait for ever for a reader that is this thread. */
    ssize_t n
        = splice(fd, &pos, w->pipe[1], NULL, r->length - have, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) { /* an error, or the file ends early: the buffered reply says what */
      drain(w, have);
      return 0;
    }
    have += (size_t)n;
  }
  pthread_mutex_lock(&c->write_lock);
  int s = c->io->splice_out(c->io_opaque, hdr, nhdr, w->pipe[0], r->length);
  pthread_mutex_unlock(&c->write_lock);
  if (s < 0) {
    /* The client is gone, or what is left in the pipe is unknown: the connection ends. */
    nbd_splice_free(w);
    c->broken = true;
    c->quit = true;
    if (c->io->shutdown)
      c->io->shutdown(c->io_opaque);
    return -1;
  }
  return 1;
}
