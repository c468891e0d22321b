/* The FUSE session's worker loop (devloop.c): one reader of /dev/fuse at a time, which spins
 * briefly before it sleeps and, at queue depth 1, answers the request itself. */
#ifndef FERRY_FUSE_DEVLOOP_H
#define FERRY_FUSE_DEVLOOP_H

#include <stdbool.h>

struct fuse_session;

/* Run the session until it ends (unmount, fuse_session_exit) on the calling thread and up to
 * max_threads - 1 more.  `init_buffered`: the first request (INIT) comes from the session's
 * custom reader, not the device (--supervise), so it is read without waiting on the device.
 * Returns 0 or the first receive error (negative errno), as fuse_session_loop_mt does. */
int devloop_run(struct fuse_session *se, unsigned max_threads, bool init_buffered);

#endif
