/* A listening address given as text, parsed one way for every server
 * (cloister-host, cloister-kms, cloister proxy): "HOST:PORT" with an IPv4
 * address, "[IPv6]" or "localhost"; port 0..65535 (0 picks a free one). Names
 * are never resolved. */
#ifndef CLOISTER_LISTEN_H
#define CLOISTER_LISTEN_H

#include <stdbool.h>
#include <sys/socket.h>

#include "cloister/err.h"

/* Fails with `code` and a detail naming what is wrong; outputs are written
 * only on success. sl and loopback may be NULL. */
CL_MUST_CHECK cl_err cl_listen_parse(const char *addr, cl_err code, struct sockaddr_storage *ss, socklen_t *sl,
                                     bool *loopback);

#endif
