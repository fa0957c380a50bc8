/* cl_listen_parse (cloister/listen.h). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "cloister/listen.h"

cl_err cl_listen_parse(const char *addr, cl_err code, struct sockaddr_storage *ss, socklen_t *sl, bool *loopback)
{
    char host[128];
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    struct sockaddr_storage out;
    socklen_t len;
    bool lo;
    if (!colon || colon == addr)
        return cl_err_fail(code, "listen address must be HOST:PORT");
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof(host))
        return cl_err_fail(code, "listen host too long");
    memcpy(host, addr, hl);
    host[hl] = 0;
    const char *p = colon + 1;
    unsigned long port = 0;
    size_t digits = strspn(p, "0123456789");
    if (digits == 0 || digits > 5 || p[digits])
        return cl_err_fail(code, "listen port must be 0..65535");
    for (size_t i = 0; i < digits; i++)
        port = port * 10 + (unsigned long)(p[i] - '0');
    if (port > 65535)
        return cl_err_fail(code, "listen port must be 0..65535");
    memset(&out, 0, sizeof(out));
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = 0;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return cl_err_fail(code, "listen host is not an IPv6 address");
        lo = IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr);
        len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&out;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, !strcmp(host, "localhost") ? "127.0.0.1" : host, &s4->sin_addr) != 1)
            return cl_err_fail(code, "listen host is not an IPv4 address (names other than localhost are not resolved)");
        lo = (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
        len = sizeof(*s4);
    }
    *ss = out;
    if (sl)
        *sl = len;
    if (loopback)
        *loopback = lo;
    return CL_OK;
}
