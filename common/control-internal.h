/* ferry: shared by the control socket's server and client (not a public interface). */
#ifndef FERRY_CONTROL_INTERNAL_H
#define FERRY_CONTROL_INTERNAL_H

#include <sys/un.h>

/* PATH as a unix socket address: 0, or -errno with a message (empty, too long). */
int control_socket_address(const char *path, struct sockaddr_un *sa);

#endif
