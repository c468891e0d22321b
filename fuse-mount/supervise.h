/* ferry-fuse --supervise: a server that dies (kill -9, a crash) is restarted on its map while
 * the mount, and every file opened through it, stays.
 *
 * The supervisor is the process that mounted: it keeps the FUSE device (/dev/fuse) open, so
 * the kernel keeps the connection when the server goes — a FUSE connection ends only when its
 * last device descriptor closes, and the I/O of whoever has the disk open (qemu) then just
 * waits.  It also keeps the kernel's FUSE_INIT request, which it reads itself right after the
 * mount: the kernel sends INIT once per connection, and libfuse answers every other request
 * with EIO until it has seen one, so each server it starts is handed that INIT first (on a
 * restart libfuse's answer to it is refused by the kernel with ENOENT, which libfuse ignores).
 * The server runs the ordinary libfuse session over the inherited descriptor
 * (fuse_session_custom_io, libfuse >= 3.14).
 *
 * Requests the dead server had read but not answered are stranded in the kernel's
 * "processing" queue.  A restarted server asks the kernel to queue them again
 * (FUSE_NOTIFY_RESEND, Linux >= 6.9); every request ferry-fuse serves is idempotent (reads,
 * writes of the same bytes, zeroing, fsync).  On an older kernel those requests never get an
 * answer: their callers wait for ever (a guest sees a hung disk, not an error); the restart
 * logs it.  The number of open files lives in memory shared by every server of the mount, so
 * a restarted server knows who still has the disk open.
 */
#ifndef FERRY_FUSE_SUPERVISE_H
#define FERRY_FUSE_SUPERVISE_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include "frontend/daemon.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* What the supervisor hands to each server it starts. */
struct handoff {
  int fd;           /* the FUSE device, mounted and initialised by the kernel */
  const void *init; /* the kernel's FUSE_INIT request (header and body) */
  size_t init_len;
  unsigned start;          /* 0 for the first server, then 1, 2, ... */
  int ready_fd;            /* write "R" here once serving */
  atomic_uint *open_files; /* files open through the mount, shared by every server */
  atomic_bool *released;   /* a server ended the clone's hold: the next ones start without */
};

/* In the server: run the session se over h (instead of fuse_session_mount).  0 or -1 with
 * a message. */
int handoff_attach(struct handoff *h, struct fuse_session *se);

/* Call from the filesystem's init callback, i.e. once libfuse has processed FUSE_INIT: the
 * other session threads may read requests now, and a restarted server asks the kernel to
 * resend the requests its predecessor took. */
void handoff_init_done(void);

/* The server's main: serve until the mount goes or a signal, return the exit code. */
typedef int (*supervise_serve_fn)(void *opaque, struct handoff *h);

/* The supervisor: mount `mountpoint` with mount options `opts` (as ferry-fuse passes them to
 * libfuse), read FUSE_INIT, start serve() in a child process and start it again whenever it
 * dies after having served (at once, at most 10 times a minute), or again later when a
 * restarted one fails before serving (growing pauses, for two minutes; e.g. its source is
 * being reconnected).  Once the first server is ready, daemon_ready(d).  SIGINT/SIGTERM/SIGHUP are
 * passed on to the server. Returns the exit code: the server's own, or 1.  Call with those signals
 * blocked and no thread running. */
int supervise_run(const char *mountpoint, const char *opts, struct daemon *d,
                  const sigset_t *signals, supervise_serve_fn serve, void *opaque);

#endif
