/* vsock addressing (CID, port) over two transports chosen at run time:
 *
 *  - VSOCK: AF_VSOCK stream sockets (Nitro enclaves and their parent).
 *  - UNIX:  under cloister-sim, when $CLOISTER_VSOCK_DIR names a private
 *           directory (mode 0700, owned by the caller), address (cid, port)
 *           is the stream socket $CLOISTER_VSOCK_DIR/<cid>.<port>. A process's
 *           own CID is $CLOISTER_VSOCK_CID (default 3, the parent is 2 = host).
 *
 * Code that uses these calls is the same on both. */
#ifndef CLOISTER_VSOCK_H
#define CLOISTER_VSOCK_H

#include <stddef.h>
#include <stdint.h>

#include "cloister/err.h"

#define CL_VSOCK_DIR_ENV "CLOISTER_VSOCK_DIR"
#define CL_VSOCK_CID_ENV "CLOISTER_VSOCK_CID"
#define CL_VSOCK_CID_ANY 0xffffffffu /* listen: this machine's CID */
#define CL_VSOCK_CID_HOST 2u
#define CL_VSOCK_CID_DEFAULT_SELF 3u

enum cl_vsock_mode { CL_VSOCK_MODE_NONE = 0, CL_VSOCK_MODE_VSOCK, CL_VSOCK_MODE_UNIX, CL_VSOCK_MODE_COUNT };

enum cl_vsock_mode cl_vsock_mode(void);
/* This process's CID under the UNIX emulation (CL_VSOCK_CID_ANY for real vsock). */
uint32_t cl_vsock_self_cid(void);
/* Path of (cid, port) in the emulation directory. */
CL_MUST_CHECK cl_err cl_vsock_unix_path(const char *dir, uint32_t cid, uint32_t port, char *buf, size_t len);
/* Listening stream socket (close-on-exec). */
CL_MUST_CHECK cl_err cl_vsock_listen(uint32_t cid, uint32_t port, int backlog, int *fd);
CL_MUST_CHECK cl_err cl_vsock_connect(uint32_t cid, uint32_t port, int *fd);
CL_MUST_CHECK cl_err cl_vsock_accept(int listen_fd, int *fd);

#endif
