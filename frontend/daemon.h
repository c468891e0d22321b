/* ferry: how a serving program starts (ferry-nbd, ferry-fuse, `ferry hydrate`).
 *
 *   struct daemon d;
 *   daemon_start(&d, foreground, pidfile);   before any thread exists
 *   ... listen, open the volume, mount ...
 *   daemon_ready(&d);    write the pidfile; when daemonized, detach and release the parent
 *   ... serve ...
 *   daemon_finish(&d);   remove the pidfile
 *
 * Daemonized, the parent process waits for the child: it exits 0 once the child is ready, or
 * with the child's exit status when the child fails first (its message went to the shared
 * stderr), so a script sees whether startup worked and can use the server as soon as the
 * command returns. */
#ifndef FERRY_FRONTEND_DAEMON_H
#define FERRY_FRONTEND_DAEMON_H

#include <stdbool.h>

struct daemon {
  int ready_fd;        /* write end of the readiness pipe; -1 in the foreground or once ready */
  const char *pidfile; /* NULL: none */
  bool pidfile_written;
};

/* Unless `foreground`, fork: the parent does not return (see above); the child starts a new
 * session.  0, or -errno with a message. */
int daemon_start(struct daemon *d, bool foreground, const char *pidfile);

/* Ready to serve: write the pidfile (atomically: written whole, then renamed); then, when
 * daemonized, point stdin/stdout/stderr at /dev/null (our stdout may be a pipe a script reads
 * to EOF), send log messages to syslog and release the parent.  0, or -errno with a message
 * (the pidfile could not be written; nothing detached). */
int daemon_ready(struct daemon *d);

/* At exit: remove the pidfile if daemon_ready wrote it; close the pipe if still open (the
 * parent then exits with our status). */
void daemon_finish(struct daemon *d);

/* Write the PID of this process to `path` atomically.  0, or -errno naming --pidfile PATH. */
int daemon_write_pidfile(const char *path);

#endif
