/* ferry: a QMP client — qemu's JSON monitor protocol over a unix socket (what libvirt,
 * Proxmox and OpenStack drive underneath).
 *
 * One connection, one request at a time: qmp_execute() sends {"execute", "arguments", "id"}
 * and reads until the reply with that id arrives; asynchronous events read meanwhile are
 * queued (qmp_wait_event takes them from the queue first), replies to earlier requests that
 * timed out are recognised by their id and dropped.  A QMP error reply becomes -errno with
 * the message "COMMAND: DESC (CLASS)"; the class stays available from qmp_error_class().
 *
 * qemu serves one client per -qmp socket: while another client (libvirt, a second ferry) is
 * connected, qemu does not greet us and qmp_connect() times out saying so.
 */
#ifndef FERRY_QMP_H
#define FERRY_QMP_H

#include <stdbool.h>
#include <sys/types.h>

struct qmp;
typedef struct json_t json_t;

/* Connect to the QMP socket at path, read the greeting, negotiate capabilities (none are
 * enabled).  timeout: seconds for the whole handshake.  0 or -errno with a message naming
 * path: -ENOENT (no such socket), -ECONNREFUSED (nothing listening), -EPROTO (not QMP),
 * -ETIMEDOUT (no greeting: another client holds the monitor). */
int qmp_connect(const char *path, double timeout, struct qmp **out);
void qmp_close(struct qmp *q);

/* Run command with arguments (a JSON object, borrowed; NULL for none).  On success *ret (if
 * ret is not NULL) is a new reference to the "return" value.  timeout < 0 waits for ever.
 * Errors: a QMP error reply: -EIO (-ENODEV for DeviceNotFound, -ENOSYS for
 * CommandNotFound), message "COMMAND: DESC (CLASS)"; -ETIMEDOUT (the connection stays
 * usable: the late reply is dropped); -EPIPE/-ECONNRESET when qemu went away. */
int qmp_execute(struct qmp *q, const char *command, json_t *arguments, json_t **ret,
                double timeout);
/* The same with the arguments given as a jansson pack format ("{s:s, s:b}", ...). */
int qmp_executef(struct qmp *q, const char *command, json_t **ret, double timeout, const char *fmt,
                 ...);

/* The class of the last QMP error reply ("GenericError", "DeviceNotFound", ...), "" when the
 * last failure was not a QMP error reply. */
const char *qmp_error_class(const struct qmp *q);

/* Wait for the event named name whose data member key equals the string value (key NULL:
 * any).  Queued events are looked at first (and the match removed from the queue).  0 with
 * *event (a new reference to the whole message, may be NULL if not wanted), -ETIMEDOUT, or
 * -EPIPE when qemu went away. */
int qmp_wait_event(struct qmp *q, const char *name, const char *key, const char *value,
                   double timeout, json_t **event);
/* Number of events queued (not yet taken by qmp_wait_event); qmp_drop_events empties it. */
size_t qmp_pending_events(const struct qmp *q);
void qmp_drop_events(struct qmp *q);

/* The socket path given to qmp_connect. */
const char *qmp_socket_path(const struct qmp *q);
/* qemu's version from the greeting (major*10000 + minor*100 + micro, e.g. 70202). */
int qmp_qemu_version(const struct qmp *q);
/* The process at the other end of the socket (SO_PEERCRED), 0 when unknown. */
pid_t qmp_peer_pid(const struct qmp *q);

#endif
