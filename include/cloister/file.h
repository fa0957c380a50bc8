/* File helpers that never leave half-written output. */
#ifndef CLOISTER_FILE_H
#define CLOISTER_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"

/* Reads a whole regular file (at most max bytes) into out. */
CL_MUST_CHECK cl_err cl_file_read(const char *path, size_t max, struct cl_buf *out);
/* Writes data to path atomically: temp file in the same directory, fsync,
 * rename, fsync of the directory. mode applies to the new file. With
 * exclusive set, fails with CL_E_CORE_EXISTS if path exists. */
CL_MUST_CHECK cl_err cl_file_write_atomic(const char *path, const void *data, size_t n, unsigned mode, int exclusive);
/* write()/read() that loop over short transfers and EINTR; read_full fails
 * with CL_E_CORE_EOF on a short stream and reports how much it got. */
CL_MUST_CHECK cl_err cl_write_full(int fd, const void *p, size_t n);
CL_MUST_CHECK cl_err cl_read_full(int fd, void *p, size_t n, size_t *got);
/* Maps errno to a core error code with the operation named in the detail. */
cl_err cl_err_from_errno(int e, const char *what);

#endif
