#include <limits.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "cloister/crypto.h"

cl_err cl_ossl_fail(cl_err code, const char *what)
{
    unsigned long e = ERR_peek_error();
    char reason[160] = "";
    if (e)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    return cl_err_fail(code, "%s%s%s", what, reason[0] ? ": " : "", reason);
}

cl_err cl_random_bytes(void *out, size_t n)
{
    if (n > INT_MAX)
        return CL_E_CORE_LIMIT;
    if (n && RAND_priv_bytes(out, (int)n) != 1)
        return cl_ossl_fail(CL_E_CRYPTO_RNG, "RAND_priv_bytes");
    return CL_OK;
}
