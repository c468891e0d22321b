/* ferry: the control socket — a unix socket speaking one JSON object per line each way
 * (ARCHITECTURE.md).  ferry-nbd and ferry-fuse (and `ferry hydrate --control`) start one; the
 * `ferry status|wait|pause|resume` commands and the migrator are its clients.
 *
 * Requests:  {"command":"status"} | {"command":"pause"} | {"command":"resume"}
 *            | {"command":"set-rate","rate":BYTES_PER_SECOND} | {"command":"wait"}
 * Replies:   {"ok":true,"status":{...}}  or  {"ok":false,"error":"message"}
 * "wait" replies once the clone has converged (ok) or failed (ok=false, error=reason).
 * Status fields: state, size, region_size, regions_total, regions_hydrated, bytes_copied,
 * bytes_fetched, bytes_skipped, rate_limit, rate, eta, clients, last_error, program, pid.
 * A server over a plain volume (no clone) reports state "direct" and has no hydrator.
 */
#ifndef FERRY_CONTROL_H
#define FERRY_CONTROL_H

struct clone;
struct control_server;

struct control_hooks {
  /* Number of connected clients/openers, for status (may be NULL). */
  unsigned (*clients)(void *opaque);
  void *opaque;
};

/* Bind PATH (refusing one that is in use by a live server; a stale socket file is replaced),
 * serve in a background thread.  clone may be NULL (plain volume, size given). */
int control_server_start(const char *path, const char *program, struct clone *clone,
                         unsigned long long size, const struct control_hooks *hooks,
                         struct control_server **out);
/* Stop serving and unlink the socket. */
void control_server_stop(struct control_server *s);

#endif
