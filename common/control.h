/* ferry: the control socket — a unix socket speaking one JSON object per line each way
 * (ARCHITECTURE.md).  ferry-nbd and ferry-fuse (and `ferry hydrate --control`) start one; the
 * `ferry status|wait|pause|resume` commands and the migrator are its clients.
 *
 * Requests:  {"command":"status"} | {"command":"pause"} | {"command":"resume"}
 *            | {"command":"release"} (ends a clone's hold, see clone_options.hold)
 *            | {"command":"set-rate","rate":BYTES_PER_SECOND} | {"command":"wait"}
 * Replies:   {"ok":true,"status":{...}}  or  {"ok":false,"error":"message"}
 * "wait" replies once the clone has converged (ok) or failed (ok=false, error=reason).
 * Optional fields: "id" (any JSON value, echoed in the reply); "rate" may also be a size
 * string ("50M", 0 = unlimited); "wait" takes "timeout" (seconds, ok=false when it expires).
 * Replies to one connection come in request order (a pending "wait" holds later requests).
 * Status fields: state, size, region_size, regions_total, regions_hydrated, bytes_copied,
 * bytes_fetched, bytes_skipped, rate_limit, rate, eta, clients, last_error, program, pid,
 * plus percent (regions hydrated, 0..100) and control_clients (connections to this socket).
 * eta is null when unknown.  A clone's status also has "held" (true until released).
 * A server over a plain volume (no clone) reports state "direct" and has no hydrator.
 * State "reconnecting": hydrating while the clone's source is lost (the driver reconnects);
 * last_error then says why ("source URI: connection 1 lost 12 s ago: ...").
 */
#ifndef FERRY_CONTROL_H
#define FERRY_CONTROL_H

struct clone;
struct control_server;

struct control_hooks {
  /* Number of connected clients/openers, for status (may be NULL). */
  unsigned (*clients)(void *opaque);
  /* After a "release" ended the clone's hold (may be NULL). */
  void (*released)(void *opaque);
  void *opaque;
};

/* Bind PATH (refusing one that is in use by a live server; a stale socket file is replaced),
 * mode 0600, serve in a background thread (which blocks every signal).  clone may be NULL
 * (plain volume, size given).  hooks->clients is called from that thread: make it
 * thread-safe.  Start it after daemonizing (a thread does not survive fork). */
int control_server_start(const char *path, const char *program, struct clone *clone,
                         unsigned long long size, const struct control_hooks *hooks,
                         struct control_server **out);
/* Stop serving and unlink the socket (only if it is still ours).  Call it before
 * clone_close(): the server reads the clone's status until it returns.  Pending "wait"s get
 * the final state when the clone has converged or failed, else an error. */
void control_server_stop(struct control_server *s);

/* Longest request line the server accepts (bytes, without the newline); longer lines are
 * answered with an error and discarded. */
#define CONTROL_MAX_LINE 65536

/* --- client side (the `ferry` commands, the migrator) --- */

/* jansson's json_t, without making every includer depend on <jansson.h>. */
typedef struct json_t json_t;

/* Connect to the control socket PATH, send REQ (one line), read one reply line into *reply
 * (a new reference).  timeout: seconds for the whole exchange, < 0 for ever (use that for
 * "wait").  0, or -errno with a message naming PATH ("PATH: no ferry process is listening
 * (connection refused)", "PATH: no such control socket", "PATH: no reply within 5 s").
 * A reply with "ok":false is still a success here: look at the reply. */
int control_client_request(const char *path, json_t *req, json_t **reply, double timeout);

/* The same in two steps, for a caller that does other work while a request ("wait") is
 * pending: start sends REQ; finish waits up to timeout seconds (< 0: for ever) for the reply,
 * returning -ETIMEDOUT while it is still pending (call finish again), 0 with *reply, or
 * another -errno when the server went away.  free closes the connection. */
struct control_call;
int control_call_start(const char *path, json_t *req, struct control_call **out);
int control_call_finish(struct control_call *call, json_t **reply, double timeout);
void control_call_free(struct control_call *call);

/* {"command":COMMAND} plus the fields of EXTRA (may be NULL, not stolen); on "ok":true
 * returns 0 and the reply's "status" object in *status (a new reference, may be NULL when
 * the caller does not want it).  On "ok":false returns -EIO with the server's error as the
 * message (and *status set if the reply carried one). */
int control_client_call(const char *path, const char *command, json_t *extra, json_t **status,
                        double timeout);

#endif
