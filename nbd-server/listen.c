/* ferry-nbd: listening sockets — TCP (IPv4 and IPv6), unix sockets and systemd socket
 * activation. */
#include "nbd-server/serve.h"
#include "common/error.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_PORT "10809"
#define BACKLOG 128

static int
add_fd(struct listeners *l, int fd)
{
  int *v = realloc(l->fds, (l->n + 1) * sizeof *v);
  if (!v) {
    close(fd);
    return error_set(ENOMEM, "out of memory");
  }
  l->fds = v;
  l->fds[l->n++] = fd;
  return 0;
}

int
listen_tcp(struct listeners *l, const char *hostport)
{
  char host[256], port[32];
  const char *colon;
  if (hostport[0] == '[') {
    const char *close_br = strchr(hostport, ']');
    if (!close_br || (close_br[1] && close_br[1] != ':'))
      return error_set(EINVAL, "--listen %s: expected [IPv6]:PORT", hostport);
    size_t hl = (size_t)(close_br - hostport - 1);
    if (hl >= sizeof host)
      return error_set(EINVAL, "--listen %s: host name too long", hostport);
    memcpy(host, hostport + 1, hl);
    host[hl] = 0;
    colon = close_br[1] ? close_br + 1 : NULL;
  } else {
    colon = strrchr(hostport, ':');
    if (colon && strchr(hostport, ':') != colon)
      return error_set(EINVAL, "--listen %s: write IPv6 addresses as [ADDRESS]:PORT", hostport);
    size_t hl = colon ? (size_t)(colon - hostport) : strlen(hostport);
    if (hl >= sizeof host)
      return error_set(EINVAL, "--listen %s: host name too long", hostport);
    memcpy(host, hostport, hl);
    host[hl] = 0;
  }
  snprintf(port, sizeof port, "%s", colon ? colon + 1 : DEFAULT_PORT);
  if (!*port || strspn(port, "0123456789") != strlen(port) || atoi(port) > 65535)
    return error_set(EINVAL, "--listen %s: '%s' is not a port number", hostport, port);

  struct addrinfo hints = { .ai_family = AF_UNSPEC,
                            .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_ADDRCONFIG };
  struct addrinfo *res;
  int e = getaddrinfo(*host ? host : NULL, port, &hints, &res);
  if (e != 0)
    return error_set(EINVAL, "--listen %s: %s", hostport, gai_strerror(e));
  int bound = 0, err = 0;
  for (struct addrinfo *a = res; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (a->ai_family == AF_INET6) /* keep v4 and v6 separate so both can be bound */
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, BACKLOG) < 0) {
      err = errno;
      close(fd);
      continue;
    }
    if (add_fd(l, fd) < 0) {
      freeaddrinfo(res);
      return -ENOMEM;
    }
    bound++;
  }
  freeaddrinfo(res);
  if (!bound)
    return error_set_errno(err ? err : EADDRNOTAVAIL, "--listen %s: cannot listen", hostport);
  debug("nbd", "listening on %s (%d socket(s))", hostport, bound);
  return 0;
}

int
listen_unix(struct listeners *l, const char *path)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  if (strlen(path) >= sizeof sa.sun_path)
    return error_set(ENAMETOOLONG, "--socket %s: path longer than %zu bytes", path,
                     sizeof sa.sun_path - 1);
  strcpy(sa.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return error_set_errno(errno, "--socket %s: socket", path);
  struct stat st;
  if (lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      close(fd);
      return error_set(EEXIST, "--socket %s: exists and is not a socket", path);
    }
    /* Someone answering there means a live server: never steal its socket. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
      close(fd);
      return error_set(EADDRINUSE, "--socket %s: another server is listening there", path);
    }
    close(fd);
    unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
      return error_set_errno(errno, "--socket %s: socket", path);
  }
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, BACKLOG) < 0) {
    int e = errno;
    close(fd);
    return error_set_errno(e, "--socket %s: cannot listen", path);
  }
  char **v = realloc(l->unix_paths, (l->npaths + 1) * sizeof *v);
  if (!v || !(v[l->npaths] = strdup(path))) {
    if (v)
      l->unix_paths = v;
    close(fd);
    unlink(path);
    return error_set(ENOMEM, "out of memory");
  }
  l->unix_paths = v;
  l->npaths++;
  return add_fd(l, fd);
}

int
listen_activation(struct listeners *l)
{
  const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
  if (!pid || !fds)
    return 0;
  char *end;
  long p = strtol(pid, &end, 10);
  if (*end || p != (long)getpid())
    return 0; /* meant for another process */
  long n = strtol(fds, &end, 10);
  if (*end || n < 1 || n > 64)
    return error_set(EINVAL, "LISTEN_FDS=%s: expected a number of sockets (1..64)", fds);
  for (long i = 0; i < n; i++) {
    int fd = 3 + (int)i; /* SD_LISTEN_FDS_START */
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    int type = 0;
    socklen_t tl = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM)
      return error_set(EINVAL, "LISTEN_FDS: descriptor %d is not a stream socket", fd);
    if (add_fd(l, fd) < 0)
      return -ENOMEM;
  }
  /* Our children (none today) must not think the sockets are theirs. */
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  debug("nbd", "socket activation: %ld socket(s)", n);
  return 1;
}

void
listeners_close(struct listeners *l)
{
  for (size_t i = 0; i < l->n; i++)
    close(l->fds[i]);
  for (size_t i = 0; i < l->npaths; i++) {
    unlink(l->unix_paths[i]);
    free(l->unix_paths[i]);
  }
  free(l->fds);
  free(l->unix_paths);
  memset(l, 0, sizeof *l);
}
