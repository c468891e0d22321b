/* ferry-nbd: NBD protocol constants and wire encoding (doc/proto.md of the NBD project).
 * Everything on the wire is big-endian; the get/put helpers below are the only place that
 * knows it. */
#ifndef FERRY_NBD_PROTOCOL_H
#define FERRY_NBD_PROTOCOL_H

#include <stdint.h>

/* Handshake magics. */
#define NBD_MAGIC 0x4e42444d41474943ULL     /* "NBDMAGIC" */
#define NBD_IHAVEOPT 0x49484156454F5054ULL  /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x0003e889045565a9ULL /* option replies */

/* Handshake flags (server) and client flags. */
enum {
  NBD_FLAG_FIXED_NEWSTYLE = 1u << 0,
  NBD_FLAG_NO_ZEROES = 1u << 1,
  NBD_FLAG_C_FIXED_NEWSTYLE = 1u << 0,
  NBD_FLAG_C_NO_ZEROES = 1u << 1,
};

/* Transmission flags. */
enum {
  NBD_FLAG_HAS_FLAGS = 1u << 0,
  NBD_FLAG_READ_ONLY = 1u << 1,
  NBD_FLAG_SEND_FLUSH = 1u << 2,
  NBD_FLAG_SEND_FUA = 1u << 3,
  NBD_FLAG_ROTATIONAL = 1u << 4,
  NBD_FLAG_SEND_TRIM = 1u << 5,
  NBD_FLAG_SEND_WRITE_ZEROES = 1u << 6,
  NBD_FLAG_SEND_DF = 1u << 7,
  NBD_FLAG_CAN_MULTI_CONN = 1u << 8,
  NBD_FLAG_SEND_CACHE = 1u << 10,
  NBD_FLAG_SEND_FAST_ZERO = 1u << 11,
};

/* Options. */
enum {
  NBD_OPT_EXPORT_NAME = 1,
  NBD_OPT_ABORT = 2,
  NBD_OPT_LIST = 3,
  NBD_OPT_STARTTLS = 5,
  NBD_OPT_INFO = 6,
  NBD_OPT_GO = 7,
  NBD_OPT_STRUCTURED_REPLY = 8,
  NBD_OPT_LIST_META_CONTEXT = 9,
  NBD_OPT_SET_META_CONTEXT = 10,
};

/* Option replies. */
#define NBD_REP_ERR(n) (0x80000000u | (n))
enum {
  NBD_REP_ACK = 1,
  NBD_REP_SERVER = 2,
  NBD_REP_INFO = 3,
  NBD_REP_META_CONTEXT = 4,
  NBD_REP_ERR_UNSUP = NBD_REP_ERR(1),
  NBD_REP_ERR_POLICY = NBD_REP_ERR(2),
  NBD_REP_ERR_INVALID = NBD_REP_ERR(3),
  NBD_REP_ERR_PLATFORM = NBD_REP_ERR(4),
  NBD_REP_ERR_TLS_REQD = NBD_REP_ERR(5),
  NBD_REP_ERR_UNKNOWN = NBD_REP_ERR(6),
  NBD_REP_ERR_SHUTDOWN = NBD_REP_ERR(7),
  NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_ERR(8),
  NBD_REP_ERR_TOO_BIG = NBD_REP_ERR(9),
};

/* NBD_REP_INFO types. */
enum {
  NBD_INFO_EXPORT = 0,
  NBD_INFO_NAME = 1,
  NBD_INFO_DESCRIPTION = 2,
  NBD_INFO_BLOCK_SIZE = 3,
};

/* Transmission. */
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu
#define NBD_REQUEST_SIZE 28
#define NBD_SIMPLE_REPLY_SIZE 16
#define NBD_CHUNK_HEADER_SIZE 20

enum {
  NBD_CMD_READ = 0,
  NBD_CMD_WRITE = 1,
  NBD_CMD_DISC = 2,
  NBD_CMD_FLUSH = 3,
  NBD_CMD_TRIM = 4,
  NBD_CMD_CACHE = 5,
  NBD_CMD_WRITE_ZEROES = 6,
  NBD_CMD_BLOCK_STATUS = 7,
};

enum {
  NBD_CMD_FLAG_FUA = 1u << 0,
  NBD_CMD_FLAG_NO_HOLE = 1u << 1,
  NBD_CMD_FLAG_DF = 1u << 2,
  NBD_CMD_FLAG_REQ_ONE = 1u << 3,
  NBD_CMD_FLAG_FAST_ZERO = 1u << 4,
};

enum {
  NBD_REPLY_FLAG_DONE = 1u << 0,
};

enum {
  NBD_REPLY_TYPE_NONE = 0,
  NBD_REPLY_TYPE_OFFSET_DATA = 1,
  NBD_REPLY_TYPE_OFFSET_HOLE = 2,
  NBD_REPLY_TYPE_BLOCK_STATUS = 5,
  NBD_REPLY_TYPE_ERROR = (1u << 15) + 1,
  NBD_REPLY_TYPE_ERROR_OFFSET = (1u << 15) + 2,
};

/* Error values (the wire values, not the host's errno). */
enum {
  NBD_EPERM = 1,
  NBD_EIO = 5,
  NBD_ENOMEM = 12,
  NBD_EINVAL = 22,
  NBD_ENOSPC = 28,
  NBD_EOVERFLOW = 75,
  NBD_ENOTSUP = 95,
  NBD_ESHUTDOWN = 108,
};

/* base:allocation flags (same values as EXTENT_HOLE / EXTENT_ZERO in volume.h). */
enum {
  NBD_STATE_HOLE = 1u << 0,
  NBD_STATE_ZERO = 1u << 1,
};

/* Limits.  The spec's strings are at most 4096 bytes; option payloads beyond what any
 * option we know needs are a denial of service and the connection is dropped. */
#define NBD_MAX_STRING 4096
#define NBD_MAX_OPTION_LENGTH (64u * 1024)
/* Largest READ/WRITE payload (also the advertised maximum block size). */
#define NBD_MAX_REQUEST (32u * 1024 * 1024)

static inline uint16_t
get_be16(const void *p)
{
  const uint8_t *b = p;
  return (uint16_t)(b[0] << 8 | b[1]);
}

static inline uint32_t
get_be32(const void *p)
{
  const uint8_t *b = p;
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static inline uint64_t
get_be64(const void *p)
{
  const uint8_t *b = p;
  return (uint64_t)get_be32(b) << 32 | get_be32(b + 4);
}

static inline void
put_be16(void *p, uint16_t v)
{
  uint8_t *b = p;
  b[0] = (uint8_t)(v >> 8);
  b[1] = (uint8_t)v;
}

static inline void
put_be32(void *p, uint32_t v)
{
  uint8_t *b = p;
  b[0] = (uint8_t)(v >> 24);
  b[1] = (uint8_t)(v >> 16);
  b[2] = (uint8_t)(v >> 8);
  b[3] = (uint8_t)v;
}

static inline void
put_be64(void *p, uint64_t v)
{
  put_be32(p, (uint32_t)(v >> 32));
  put_be32((uint8_t *)p + 4, (uint32_t)v);
}

/* Names for debug messages. */
const char *nbd_option_name(uint32_t opt);
const char *nbd_command_name(uint16_t cmd);
/* Host errno -> NBD wire error. */
uint32_t nbd_errno_to_wire(int err);

#endif
