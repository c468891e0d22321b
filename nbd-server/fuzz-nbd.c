/* ferry-nbd: libFuzzer target for the handshake and the transmission parsing.
 *
 * The input is what a client sends: its first byte picks the export configuration
 * (read-only, --export-name, minimum block size, --tls mode and whether the STARTTLS
 * upgrade "succeeds": the in-memory transport pretends it did and carries on in clear, so the
 * post-TLS paths are reached too), the rest is fed byte by byte to the
 * handshake and then to the request loop, exactly as the server reads a socket.  Replies
 * are discarded.  The volume is 1 MiB of memory that claims every capability, so every
 * command path (including hole chunks and block status) is reachable.
 *
 * Built only with -Dfuzz=true and clang; tests/fuzz-nbd.sh runs it. */
#include "nbd-server/nbd.h"
#include "nbd-server/protocol.h"
#include "common/error.h"
#include "common/log.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MEM_SIZE (1u << 20)

static uint8_t mem[MEM_SIZE];

static int
mem_pread(struct volume *v, void *buf, size_t len, uint64_t off)
{
  (void)v;
  memcpy(buf, mem + off, len);
  return 0;
}

static int
mem_pwrite(struct volume *v, const void *buf, size_t len, uint64_t off, unsigned flags)
{
  (void)v, (void)flags;
  memcpy(mem + off, buf, len);
  return 0;
}

static int
mem_zero(struct volume *v, uint64_t len, uint64_t off, unsigned flags)
{
  (void)v;
  if ((flags & VOLUME_FAST_ZERO) && len > 65536)
    return error_set(ENOTSUP, "mem: large fast zero is not fast");
  memset(mem + off, 0, len);
  return 0;
}

static int
mem_trim(struct volume *v, uint64_t len, uint64_t off, unsigned flags)
{
  return mem_zero(v, len, off, flags & ~VOLUME_FAST_ZERO);
}

static int
mem_flush(struct volume *v)
{
  (void)v;
  return 0;
}

/* 64 KiB blocks, alternately data and hole: exercises multi-chunk reads and status. */
static int
mem_extents(struct volume *v, uint64_t len, uint64_t off, struct extent_list *out)
{
  (void)v;
  uint64_t end = off + len;
  while (off < end) {
    uint64_t next = (off | 0xffff) + 1;
    if (next > end)
      next = end;
    int r = extent_list_add(out, off, next - off, (off >> 16) & 1 ? EXTENT_HOLE | EXTENT_ZERO : 0);
    if (r < 0)
      return r;
    off = next;
  }
  return 0;
}

static int
mem_cache(struct volume *v, uint64_t len, uint64_t off)
{
  (void)v, (void)len, (void)off;
  return 0;
}

static void
mem_close(struct volume *v)
{
  (void)v;
}

static const struct volume_ops mem_ops = {
  .driver = "mem",
  .pread = mem_pread,
  .pwrite = mem_pwrite,
  .zero = mem_zero,
  .trim = mem_trim,
  .flush = mem_flush,
  .extents = mem_extents,
  .cache = mem_cache,
  .close = mem_close,
};

struct input {
  const uint8_t *p;
  size_t left;
};

static int
in_recv(void *opaque, void *buf, size_t len)
{
  struct input *in = opaque;
  if (len > in->left)
    return -1; /* the client "vanished" */
  memcpy(buf, in->p, len);
  in->p += len;
  in->left -= len;
  return 0;
}

static int
in_sendv(void *opaque, const struct iovec *iov, int n)
{
  (void)opaque;
  /* Touch every byte so the sanitizers see reads of uninitialised or freed reply data. */
  volatile uint8_t sink = 0;
  for (int i = 0; i < n; i++)
    for (size_t j = 0; j < iov[i].iov_len; j += 61)
      sink ^= ((const uint8_t *)iov[i].iov_base)[j];
  (void)sink;
  return 0;
}

static int
in_starttls_ok(void *opaque)
{
  (void)opaque;
  return 0;
}

static int
in_starttls_fail(void *opaque)
{
  (void)opaque;
  return -1;
}

static const struct conn_io in_io_tls_ok
    = { .recv = in_recv, .sendv = in_sendv, .starttls = in_starttls_ok };
static const struct conn_io in_io_tls_fail
    = { .recv = in_recv, .sendv = in_sendv, .starttls = in_starttls_fail };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static struct volume vol;
  static struct nbd_budget *budget;
  static bool init;
  if (!init) {
    budget = nbd_budget_new(64u << 20);
    log_init("fuzz-nbd");
    vol.ops = &mem_ops;
    vol.name = (char *)"mem";
    vol.size = MEM_SIZE;
    vol.min_block = 1;
    vol.preferred_block = 4096;
    vol.max_request = 1u << 20;
    vol.caps = VOLUME_CAN_WRITE | VOLUME_CAN_TRIM | VOLUME_CAN_ZERO | VOLUME_CAN_FAST_ZERO
               | VOLUME_CAN_EXTENTS | VOLUME_CAN_FLUSH | VOLUME_CAN_CACHE | VOLUME_MULTI_CONN;
    init = true;
  }
  if (size < 1)
    return 0;
  uint8_t cfg = data[0];
  struct nbd_export exp = {
    .vol = &vol,
    .name = (cfg & 2) ? "fuzz" : "",
    .strict_name = cfg & 2,
    .description = (cfg & 4) ? "fuzz export" : NULL,
    .readonly = cfg & 1,
    .min_block = (cfg & 8) ? 512 : 1,
    .preferred_block = 4096,
    .max_block = NBD_MAX_REQUEST,
    .tls_mode = ((cfg >> 4) & 3) == 0   ? NBD_TLS_OFF
                : ((cfg >> 4) & 3) == 1 ? NBD_TLS_ON
                                        : NBD_TLS_REQUIRE,
    .budget = budget,
  };
  struct input in = { data + 1, size - 1 };
  struct conn c;
  conn_init(&c, &exp, (cfg & 0x40) ? &in_io_tls_fail : &in_io_tls_ok, &in, "fuzz");
  if (nbd_handshake(&c) == 1) {
    struct worker w = { 0 };
    struct request req;
    while (nbd_read_request(&c, &w, &req) == 1)
      if (nbd_handle_request(&c, &w, &req) < 0)
        break;
    worker_free(&c, &w);
  }
  conn_destroy(&c);
  return 0;
}
