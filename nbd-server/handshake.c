/* ferry-nbd: the fixed newstyle handshake and option haggling.
 *
 * Everything the client sends is untrusted: lengths are checked against the option's own
 * length before any field is read, option payloads are capped (NBD_MAX_OPTION_LENGTH) and
 * a client that breaks a MUST of the spec is dropped; everything else gets an error reply
 * and may try again, as the spec asks. */
#include "nbd-server/nbd.h"
#include "nbd-server/protocol.h"
#include "backends/clone.h"
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A client looping through options for ever is a denial of service. */
#define MAX_OPTIONS 10000

static int
send_reply(struct conn *c, uint32_t opt, uint32_t type, const void *data, size_t len)
{
  uint8_t hdr[20];
  put_be64(hdr, NBD_REP_MAGIC);
  put_be32(hdr + 8, opt);
  put_be32(hdr + 12, type);
  put_be32(hdr + 16, (uint32_t)len);
  struct iovec iov[2] = { { hdr, sizeof hdr }, { (void *)data, len } };
  return c->io->sendv(c->io_opaque, iov, len ? 2 : 1);
}

/* An error reply with a message for the user (the spec allows a string payload). */
static int send_error(struct conn *c, uint32_t opt, uint32_t type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int
send_error(struct conn *c, uint32_t opt, uint32_t type, const char *fmt, ...)
{
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0)
    n = 0;
  if ((size_t)n >= sizeof msg)
    n = sizeof msg - 1;
  debug("nbd", "%s: %s: %s", c->peer, nbd_option_name(opt), msg);
  return send_reply(c, opt, type, msg, (size_t)n);
}

static bool
valid_string(const char *s, size_t len)
{
  return len <= NBD_MAX_STRING && memchr(s, '\0', len) == NULL;
}

/* Is `name` (not NUL-terminated) the name of our export? */
static bool
export_matches(const struct conn *c, const char *name, size_t len)
{
  if (len == 0 || !c->exp->strict_name)
    return true; /* "" is the default export; without --export-name every name is ours */
  return strlen(c->exp->name) == len && memcmp(c->exp->name, name, len) == 0;
}

uint16_t
nbd_transmission_flags(const struct conn *c)
{
  const struct nbd_export *e = c->exp;
  const struct volume *v = e->vol;
  /* Flush is harmless on a read-only export and some clients expect it. */
  uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE;
  if (e->readonly) {
    f |= NBD_FLAG_READ_ONLY;
  } else {
    /* FUA and write zeroes are emulated by the volume dispatcher where a driver lacks them;
     * FAST_ZERO may always be advertised: we answer ENOTSUP quickly when it is not fast. */
    f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    if (volume_can(v, VOLUME_CAN_TRIM))
      f |= NBD_FLAG_SEND_TRIM;
  }
  if (volume_can(v, VOLUME_MULTI_CONN))
    f |= NBD_FLAG_CAN_MULTI_CONN;
  if (c->structured)
    f |= NBD_FLAG_SEND_DF;
  return f;
}

static int
send_info(struct conn *c, uint32_t opt, uint16_t type, const void *payload, size_t len)
{
  uint8_t buf[2 + NBD_MAX_STRING];
  put_be16(buf, type);
  memcpy(buf + 2, payload, len);
  return send_reply(c, opt, NBD_REP_INFO, buf, 2 + len);
}

/* NBD_OPT_INFO and NBD_OPT_GO.  Returns 1 when GO succeeded, 0 to continue, -1 to drop. */
static int
opt_info_go(struct conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
  if (len < 6)
    return send_error(c, opt, NBD_REP_ERR_INVALID, "option data too short (%" PRIu32 " bytes)",
                      len);
  uint32_t namelen = get_be32(data);
  if (namelen > len - 6)
    return send_error(c, opt, NBD_REP_ERR_INVALID,
                      "export name length %" PRIu32 " exceeds the option data", namelen);
  const char *name = (const char *)data + 4;
  uint16_t nreq = get_be16(data + 4 + namelen);
  if ((uint64_t)4 + namelen + 2 + 2u * nreq != len)
    return send_error(c, opt, NBD_REP_ERR_INVALID,
                      "%u information requests do not match the option length", nreq);
  if (!valid_string(name, namelen))
    return send_error(c, opt, NBD_REP_ERR_INVALID, "export name is not a valid string");
  if (!export_matches(c, name, namelen))
    return send_error(c, opt, NBD_REP_ERR_UNKNOWN,
                      "export '%.*s' does not exist (this server "
                      "exports '%s')",
                      (int)namelen, name, c->exp->name);

  bool want_name = false, want_description = false;
  for (unsigned i = 0; i < nreq; i++) {
    uint16_t t = get_be16(data + 4 + namelen + 2 + 2 * i);
    if (t == NBD_INFO_NAME)
      want_name = true;
    else if (t == NBD_INFO_DESCRIPTION)
      want_description = true;
    /* NBD_INFO_BLOCK_SIZE is always sent; unknown requests are ignored (spec). */
  }

  /* Meta contexts chosen for another export do not apply to this one. */
  bool meta_ok = c->meta_export && strlen(c->meta_export) == namelen
                 && memcmp(c->meta_export, name, namelen) == 0;
  uint16_t flags = nbd_transmission_flags(c);

  uint8_t info[12];
  put_be64(info, c->exp->vol->size);
  put_be16(info + 8, flags);
  if (send_info(c, opt, NBD_INFO_EXPORT, info, 10) < 0)
    return -1;
  uint8_t bs[12];
  put_be32(bs, c->exp->min_block);
  put_be32(bs + 4, c->exp->preferred_block);
  put_be32(bs + 8, c->exp->max_block);
  if (send_info(c, opt, NBD_INFO_BLOCK_SIZE, bs, sizeof bs) < 0)
    return -1;
  if (want_name && send_info(c, opt, NBD_INFO_NAME, c->exp->name, strlen(c->exp->name)) < 0)
    return -1;
  if (want_description && c->exp->description
      && send_info(c, opt, NBD_INFO_DESCRIPTION, c->exp->description, strlen(c->exp->description))
             < 0)
    return -1;
  if (send_reply(c, opt, NBD_REP_ACK, NULL, 0) < 0)
    return -1;
  if (opt == NBD_OPT_INFO)
    return 0;
  if (!meta_ok)
    c->meta_base = c->meta_hydrated = false;
  c->tflags = flags;
  return 1;
}

/* One query of LIST/SET_META_CONTEXT: which of our contexts it names. */
static void
match_query(const struct conn *c, const char *q, size_t len, bool list, bool *base, bool *hydrated)
{
#define IS(s) (len == sizeof(s) - 1 && memcmp(q, s, len) == 0)
  if (IS("base:allocation") || (list && IS("base:")))
    *base = true;
  if (c->exp->clone && (IS("ferry:hydrated") || (list && IS("ferry:"))))
    *hydrated = true;
#undef IS
  /* Anything else: an unknown namespace or leaf, which the spec says to ignore. */
}

static int
send_context(struct conn *c, uint32_t opt, uint32_t id, const char *name)
{
  uint8_t buf[64];
  size_t n = strlen(name);
  put_be32(buf, id);
  memcpy(buf + 4, name, n);
  return send_reply(c, opt, NBD_REP_META_CONTEXT, buf, 4 + n);
}

static int
opt_meta_context(struct conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
  bool list = opt == NBD_OPT_LIST_META_CONTEXT;
  if (!list) {
    /* SET replaces the selection even when it fails (spec). */
    c->meta_base = c->meta_hydrated = false;
    free(c->meta_export);
    c->meta_export = NULL;
  }
  if (!c->structured)
    return send_error(c, opt, NBD_REP_ERR_INVALID, "structured replies must be negotiated first");
  if (len < 8)
    return send_error(c, opt, NBD_REP_ERR_INVALID, "option data too short (%" PRIu32 " bytes)",
                      len);
  uint32_t namelen = get_be32(data);
  if (namelen > len - 8)
    return send_error(c, opt, NBD_REP_ERR_INVALID,
                      "export name length %" PRIu32 " exceeds the option data", namelen);
  const char *name = (const char *)data + 4;
  if (!valid_string(name, namelen))
    return send_error(c, opt, NBD_REP_ERR_INVALID, "export name is not a valid string");
  uint32_t nq = get_be32(data + 4 + namelen);
  /* Parse every query before answering: a malformed request gets no partial answer. */
  bool base = false, hydrated = false;
  size_t pos = 8 + (size_t)namelen;
  for (uint32_t i = 0; i < nq; i++) {
    if (len - pos < 4)
      return send_error(c, opt, NBD_REP_ERR_INVALID, "query %" PRIu32 " is truncated", i);
    uint32_t qlen = get_be32(data + pos);
    pos += 4;
    if (qlen > len - pos)
      return send_error(c, opt, NBD_REP_ERR_INVALID,
                        "query %" PRIu32 " length %" PRIu32 " exceeds the option data", i, qlen);
    const char *q = (const char *)data + pos;
    pos += qlen;
    if (!valid_string(q, qlen) || !memchr(q, ':', qlen))
      return send_error(c, opt, NBD_REP_ERR_INVALID,
                        "query %" PRIu32 " is not a namespace:name string", i);
    match_query(c, q, qlen, list, &base, &hydrated);
  }
  if (pos != len)
    return send_error(c, opt, NBD_REP_ERR_INVALID, "%zu trailing bytes after the queries",
                      (size_t)(len - pos));
  if (!export_matches(c, name, namelen))
    return send_error(c, opt, NBD_REP_ERR_UNKNOWN, "export '%.*s' does not exist", (int)namelen,
                      name);
  if (list && nq == 0) {
    base = true;
    hydrated = c->exp->clone != NULL;
  }
  /* LIST answers with id 0 (reserved); SET hands out the ids used in BLOCK_STATUS. */
  if (base && send_context(c, opt, list ? 0 : NBD_META_BASE_ALLOCATION, "base:allocation") < 0)
    return -1;
  if (hydrated && send_context(c, opt, list ? 0 : NBD_META_FERRY_HYDRATED, "ferry:hydrated") < 0)
    return -1;
  if (!list) {
    c->meta_base = base;
    c->meta_hydrated = hydrated;
    c->meta_export = strndup(name, namelen);
    if (!c->meta_export)
      return -1;
  }
  return send_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

static int
opt_list(struct conn *c, uint32_t opt, uint32_t len)
{
  if (len != 0)
    return send_error(c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
  const char *name = c->exp->name, *desc = c->exp->description ? c->exp->description : "";
  size_t n = strlen(name), d = strlen(desc);
  uint8_t buf[4 + 2 * NBD_MAX_STRING];
  put_be32(buf, (uint32_t)n);
  memcpy(buf + 4, name, n);
  memcpy(buf + 4 + n, desc, d); /* the rest is a description for humans (spec) */
  if (send_reply(c, opt, NBD_REP_SERVER, buf, 4 + n + d) < 0)
    return -1;
  return send_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

/* NBD_OPT_EXPORT_NAME: no error reply exists, so a wrong name ends the session. */
static int
opt_export_name(struct conn *c, const uint8_t *data, uint32_t len)
{
  if (!valid_string((const char *)data, len) || !export_matches(c, (const char *)data, len)) {
    log_warning("%s: refused export '%.*s' (this server exports '%s')", c->peer,
                (int)(len > 256 ? 256 : len), (const char *)data, c->exp->name);
    return -1;
  }
  bool meta_ok
      = c->meta_export && strlen(c->meta_export) == len && memcmp(c->meta_export, data, len) == 0;
  if (!meta_ok)
    c->meta_base = c->meta_hydrated = false;
  c->tflags = nbd_transmission_flags(c);
  uint8_t buf[8 + 2 + 124] = { 0 };
  put_be64(buf, c->exp->vol->size);
  put_be16(buf + 8, c->tflags);
  struct iovec iov = { buf, c->no_zeroes ? 10 : sizeof buf };
  if (c->io->sendv(c->io_opaque, &iov, 1) < 0)
    return -1;
  return 1;
}

/* NBD_OPT_STARTTLS: ACK, then the TLS handshake; every option negotiated before it is
 * forgotten (it travelled in clear and may have been injected). */
static int
opt_starttls(struct conn *c, uint32_t opt, uint32_t len)
{
  if (c->exp->tls_mode == NBD_TLS_OFF || !c->io->starttls)
    return send_error(c, opt, NBD_REP_ERR_POLICY, "TLS is not enabled on this server");
  if (len != 0)
    return send_error(c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
  if (c->tls)
    return send_error(c, opt, NBD_REP_ERR_INVALID, "TLS is already negotiated");
  if (send_reply(c, opt, NBD_REP_ACK, NULL, 0) < 0)
    return -1;
  if (c->io->starttls(c->io_opaque) < 0)
    return -1; /* too late for plaintext: the session ends */
  c->tls = true;
  c->structured = false;
  c->meta_base = c->meta_hydrated = false;
  free(c->meta_export);
  c->meta_export = NULL;
  return 0;
}

int
nbd_handshake(struct conn *c)
{
  uint8_t greet[18];
  put_be64(greet, NBD_MAGIC);
  put_be64(greet + 8, NBD_IHAVEOPT);
  put_be16(greet + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  struct iovec iov = { greet, sizeof greet };
  if (c->io->sendv(c->io_opaque, &iov, 1) < 0)
    return -1;
  uint8_t cf[4];
  if (c->io->recv(c->io_opaque, cf, 4) < 0)
    return 0;
  uint32_t cflags = get_be32(cf);
  if (cflags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
    log_warning("%s: unknown client flags 0x%" PRIx32 ", dropping the connection", c->peer, cflags);
    return -1;
  }
  /* A client without the fixed-newstyle bit is still answered in fixed newstyle (the spec
   * allows it); only NO_ZEROES changes what we send. */
  c->fixed_newstyle = cflags & NBD_FLAG_C_FIXED_NEWSTYLE;
  c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

  uint8_t *data = malloc(NBD_MAX_OPTION_LENGTH);
  if (!data)
    return -1;
  int r = -1;
  for (;;) {
    uint8_t hdr[16];
    if (c->io->recv(c->io_opaque, hdr, sizeof hdr) < 0) {
      r = 0; /* the client went away during negotiation */
      break;
    }
    if (get_be64(hdr) != NBD_IHAVEOPT) {
      log_warning("%s: bad option magic 0x%016" PRIx64 ", dropping the connection", c->peer,
                  get_be64(hdr));
      break;
    }
    uint32_t opt = get_be32(hdr + 8), len = get_be32(hdr + 12);
    if (len > NBD_MAX_OPTION_LENGTH) {
      log_warning("%s: %s with %" PRIu32 " bytes of data (limit %u), dropping the connection",
                  c->peer, nbd_option_name(opt), len, NBD_MAX_OPTION_LENGTH);
      break;
    }
    if (++c->options_seen > MAX_OPTIONS) {
      log_warning("%s: more than %d options, dropping the connection", c->peer, MAX_OPTIONS);
      break;
    }
    if (len && c->io->recv(c->io_opaque, data, len) < 0) {
      r = 0;
      break;
    }
    debug("nbd", "%s: option %s, %" PRIu32 " bytes", c->peer, nbd_option_name(opt), len);
    int s;
    if (c->exp->tls_mode == NBD_TLS_REQUIRE && !c->tls && opt != NBD_OPT_STARTTLS
        && opt != NBD_OPT_ABORT) {
      /* FORCEDTLS: nothing but STARTTLS and ABORT before TLS; EXPORT_NAME has no error
       * reply, so the session ends. */
      if (opt == NBD_OPT_EXPORT_NAME) {
        log_warning("%s: NBD_OPT_EXPORT_NAME without TLS (--tls=require), dropping the "
                    "connection",
                    c->peer);
        goto out;
      }
      s = send_error(c, opt, NBD_REP_ERR_TLS_REQD,
                     "this server requires TLS: send NBD_OPT_STARTTLS first (e.g. an nbds:// URI)");
      if (s < 0)
        break;
      continue;
    }
    switch (opt) {
    case NBD_OPT_EXPORT_NAME:
      r = opt_export_name(c, data, len);
      goto out;
    case NBD_OPT_ABORT:
      send_reply(c, opt, NBD_REP_ACK, NULL, 0); /* the client may already be gone */
      r = 0;
      goto out;
    case NBD_OPT_LIST:
      s = opt_list(c, opt, len);
      break;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
      s = opt_info_go(c, opt, data, len);
      if (s == 1) {
        r = 1;
        goto out;
      }
      break;
    case NBD_OPT_STRUCTURED_REPLY:
      if (len != 0)
        s = send_error(c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
      else if (c->structured)
        s = send_error(c, opt, NBD_REP_ERR_INVALID, "structured replies already negotiated");
      else {
        c->structured = true;
        s = send_reply(c, opt, NBD_REP_ACK, NULL, 0);
      }
      break;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
      s = opt_meta_context(c, opt, data, len);
      break;
    case NBD_OPT_STARTTLS:
      s = opt_starttls(c, opt, len);
      break;
    default:
      s = send_error(c, opt, NBD_REP_ERR_UNSUP, "option %" PRIu32 " is not supported", opt);
      break;
    }
    if (s < 0)
      break;
  }
out:
  free(data);
  return r;
}

const char *
nbd_option_name(uint32_t opt)
{
  switch (opt) {
  case NBD_OPT_EXPORT_NAME:
    return "NBD_OPT_EXPORT_NAME";
  case NBD_OPT_ABORT:
    return "NBD_OPT_ABORT";
  case NBD_OPT_LIST:
    return "NBD_OPT_LIST";
  case NBD_OPT_STARTTLS:
    return "NBD_OPT_STARTTLS";
  case NBD_OPT_INFO:
    return "NBD_OPT_INFO";
  case NBD_OPT_GO:
    return "NBD_OPT_GO";
  case NBD_OPT_STRUCTURED_REPLY:
    return "NBD_OPT_STRUCTURED_REPLY";
  case NBD_OPT_LIST_META_CONTEXT:
    return "NBD_OPT_LIST_META_CONTEXT";
  case NBD_OPT_SET_META_CONTEXT:
    return "NBD_OPT_SET_META_CONTEXT";
  default:
    return "unknown option";
  }
}
