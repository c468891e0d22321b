/* ferry: NBD URIs for the nbd driver: nbd://, nbds://, nbd+unix://, nbds+unix:// (the NBD
 * URI specification), checked before libnbd sees them, with the TLS parameters libnbd
 * understands (tls-certificates=DIR, tls-psk-file=FILE, tls-username=NAME) taken out. */
#ifndef FERRY_NBD_URI_H
#define FERRY_NBD_URI_H

#include <stdbool.h>

struct nbd_uri {
  char *libnbd_uri;       /* the URI without the TLS parameters */
  bool tls;               /* nbds: TLS required */
  char *tls_certificates; /* NULL when not given (libnbd's default directories) */
  char *tls_psk_file;
  char *tls_username;
};

/* 0, or -errno with a message naming the URI ("URI: tls-psk-file=/x: No such file..."). */
int nbd_uri_parse(const char *uri, struct nbd_uri *out);
void nbd_uri_free(struct nbd_uri *u);

#endif
