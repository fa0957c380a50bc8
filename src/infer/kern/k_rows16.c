/* 16 interleaved rows: the in-place repacking of Q4_0/Q8_0/Q4_K/Q6_K weights, reading a
 * row back, and the matrix product over a repacked matrix (the path's
 * interleaved kernel for whole groups, the plain kernels on unpacked rows
 * for everything else). Layout in kernels.h. */
#include <stdlib.h>

#include "cloister/buf.h"

#include "k_internal.h"

/* Types with the layout: block bytes. */
static bool cl_k_r16_geom(uint32_t wtype, size_t *bb)
{
    switch (wtype) {
    case CL_GGML_Q8_0: *bb = sizeof(struct cl_k_block_q8_0); return true;
    case CL_GGML_Q4_0: *bb = sizeof(struct cl_k_block_q4_0); return true;
    case CL_GGML_Q4_K: *bb = sizeof(struct cl_k_block_q4_k); return true;
    case CL_GGML_Q6_K: *bb = sizeof(struct cl_k_block_q6_k); return true;
    default: return false;
    }
}

bool cl_k_rows16_fast(uint32_t wtype)
{
    size_t bb;
    return cl_k_r16_geom(wtype, &bb) && cl_k_kern_now(wtype)->mm16 != NULL;
}

/* Q4_K: the 12 packed scale bytes of a row <-> its 8 six-bit scales and 8 mins
 * (sm[0..7] scales, sm[8..15] mins; cl_k_scales_mins_k4 is the decoder). */
static void cl_k_r16_k4_encode(const uint8_t sm[16], uint8_t q[12])
{
    for (int i = 0; i < 4; i++) {
        q[i] = (uint8_t)(sm[i] | ((sm[4 + i] >> 4) << 6));
        q[4 + i] = (uint8_t)(sm[8 + i] | ((sm[12 + i] >> 4) << 6));
        q[8 + i] = (uint8_t)((sm[4 + i] & 0xF) | ((sm[12 + i] & 0xF) << 4));
    }
}

/* One block of 16 rows: plain (row l at src + l*rb) -> interleaved (g). */
static void cl_k_r16_pack_block(uint32_t wtype, const uint8_t *src, size_t rb, uint8_t *g)
{
    if (wtype == CL_GGML_Q6_K) {
        for (int l = 0; l < 16; l++) {
            const struct cl_k_block_q6_k *x = (const struct cl_k_block_q6_k *)(src + (size_t)l * rb);
            memcpy(g + 2 * l, &x->d, 2);
            for (int p = 0; p < 8; p++) {
                g[32 + 32 * p + 2 * l] = (uint8_t)x->scales[2 * p];
                g[32 + 32 * p + 2 * l + 1] = (uint8_t)x->scales[2 * p + 1];
            }
            for (int q = 0; q < 4; q++) /* ql[32q .. 32q+31] */
                for (int v = 0; v < 8; v++)
                    memcpy(g + 288 + 512 * q + 64 * v + 4 * l, x->ql + 32 * q + 4 * v, 4);
            for (int h = 0; h < 2; h++)
                for (int v = 0; v < 8; v++)
                    memcpy(g + 2336 + 512 * h + 64 * v + 4 * l, x->qh + 32 * h + 4 * v, 4);
        }
        return;
    }
    if (wtype == CL_GGML_Q4_K) {
        for (int l = 0; l < 16; l++) {
            const struct cl_k_block_q4_k *x = (const struct cl_k_block_q4_k *)(src + (size_t)l * rb);
            uint8_t sm[16];
            memcpy(g + 2 * l, &x->d, 2);
            memcpy(g + 32 + 2 * l, &x->dmin, 2);
            cl_k_scales_mins_k4(x->scales, sm);
            for (int j = 0; j < 8; j++) {
                g[64 + 16 * j + l] = (uint8_t)((sm[j] & 0xF) | ((sm[8 + j] & 0xF) << 4));
                const uint8_t hi = (uint8_t)((sm[j] >> 4) | ((sm[8 + j] >> 4) << 2));
                uint8_t *h = &g[192 + 16 * (j & 3) + l];
                *h = (uint8_t)(j < 4 ? (*h & 0xF0) | hi : (*h & 0x0F) | (hi << 4));
            }
            for (int k = 0; k < 4; k++)
                for (int v = 0; v < 8; v++)
                    memcpy(g + 256 + 512 * k + 64 * v + 4 * l, x->qs + 32 * k + 4 * v, 4);
        }
        return;
    }
    const int nv = wtype == CL_GGML_Q8_0 ? 8 : 4;
    const uint32_t flip = wtype == CL_GGML_Q8_0 ? 0x80808080u : 0;
    for (int l = 0; l < 16; l++) {
        const uint8_t *blk = src + (size_t)l * rb;
        memcpy(g + 2 * l, blk, 2);
        for (int v = 0; v < nv; v++) {
            uint32_t x;
            memcpy(&x, blk + 2 + 4 * v, 4);
            x ^= flip;
            memcpy(g + 32 + 64 * v + 4 * l, &x, 4);
        }
    }
}

/* Row l of one interleaved block back to its plain bytes. */
static void cl_k_r16_unpack_block(uint32_t wtype, const uint8_t *g, int l, uint8_t *dst)
{
    if (wtype == CL_GGML_Q6_K) {
        struct cl_k_block_q6_k *x = (struct cl_k_block_q6_k *)dst;
        memcpy(&x->d, g + 2 * l, 2);
        for (int p = 0; p < 8; p++) {
            x->scales[2 * p] = (int8_t)g[32 + 32 * p + 2 * l];
            x->scales[2 * p + 1] = (int8_t)g[32 + 32 * p + 2 * l + 1];
        }
        for (int q = 0; q < 4; q++)
            for (int v = 0; v < 8; v++)
                memcpy(x->ql + 32 * q + 4 * v, g + 288 + 512 * q + 64 * v + 4 * l, 4);
        for (int h = 0; h < 2; h++)
            for (int v = 0; v < 8; v++)
                memcpy(x->qh + 32 * h + 4 * v, g + 2336 + 512 * h + 64 * v + 4 * l, 4);
        return;
    }
    if (wtype == CL_GGML_Q4_K) {
        struct cl_k_block_q4_k *x = (struct cl_k_block_q4_k *)dst;
        uint8_t sm[16];
        memcpy(&x->d, g + 2 * l, 2);
        memcpy(&x->dmin, g + 32 + 2 * l, 2);
        for (int j = 0; j < 8; j++) {
            const uint8_t lo = g[64 + 16 * j + l], h = g[192 + 16 * (j & 3) + l];
            const uint8_t hi = (uint8_t)(j < 4 ? h & 0xF : h >> 4);
            sm[j] = (uint8_t)((lo & 0xF) | ((hi & 3) << 4));
            sm[8 + j] = (uint8_t)((lo >> 4) | ((hi >> 2) << 4));
        }
        cl_k_r16_k4_encode(sm, x->scales);
        for (int k = 0; k < 4; k++)
            for (int v = 0; v < 8; v++)
                memcpy(x->qs + 32 * k + 4 * v, g + 256 + 512 * k + 64 * v + 4 * l, 4);
        return;
    }
    const int nv = wtype == CL_GGML_Q8_0 ? 8 : 4;
    const uint32_t flip = wtype == CL_GGML_Q8_0 ? 0x80808080u : 0;
    memcpy(dst, g + 2 * l, 2);
    for (int v = 0; v < nv; v++) {
        uint32_t x;
        memcpy(&x, g + 32 + 64 * v + 4 * l, 4);
        x ^= flip;
        memcpy(dst + 2 + 4 * v, &x, 4);
    }
}

/* 16 plain rows (src, rb apart) -> one interleaved group (dst). */
static void cl_k_r16_pack_group(uint32_t wtype, const uint8_t *src, size_t rb, uint8_t *dst, size_t nb)
{
    size_t bb = 0;
    (void)cl_k_r16_geom(wtype, &bb);
    for (size_t b = 0; b < nb; b++)
        cl_k_r16_pack_block(wtype, src + b * bb, rb, dst + b * 16 * bb);
}

/* Row l (0..15) of an interleaved group back to its plain bytes. */
static void cl_k_r16_unpack_row(uint32_t wtype, const uint8_t *g, int l, uint8_t *dst, size_t nb)
{
    size_t bb = 0;
    (void)cl_k_r16_geom(wtype, &bb);
    for (size_t b = 0; b < nb; b++)
        cl_k_r16_unpack_block(wtype, g + b * 16 * bb, l, dst + b * bb);
}

static cl_err cl_k_r16_check(uint32_t wtype, const void *w, size_t n, size_t *rb)
{
    size_t bb = 0;
    cl_err rc = cl_k_check(wtype, n);
    if (rc != CL_OK)
        return rc;
    if (!cl_k_r16_geom(wtype, &bb))
        return cl_err_fail(CL_E_INFER_K_TYPE, "type id %u has no interleaved layout (Q4_0, Q8_0, Q4_K and Q6_K do)",
                           (unsigned)wtype);
    if (!w)
        return cl_err_fail(CL_E_INFER_K_ARG, "NULL weights");
    *rb = cl_k_row_bytes(wtype, n);
    return CL_OK;
}

/* The row readers' checks and where row r is: *g its interleaved group (row
 * r % 16 of it), or NULL when r is past the last group and stays plain at
 * w + r * rb. */
static cl_err cl_k_r16_find_row(uint32_t wtype, const void *w, size_t n, size_t n_rows, size_t r, const void *dst,
                                size_t *rb, const uint8_t **g)
{
    cl_err rc = cl_k_r16_check(wtype, w, n, rb);
    if (rc == CL_OK && (!dst || r >= n_rows))
        rc = cl_err_fail(CL_E_INFER_K_ARG, !dst ? "NULL destination" : "row %zu of %zu", r, n_rows);
    if (rc == CL_OK)
        *g = r < n_rows / CL_K_ROWS16 * CL_K_ROWS16 ? (const uint8_t *)w + (r / CL_K_ROWS16) * CL_K_ROWS16 * *rb : NULL;
    return rc;
}

cl_err cl_k_rows16_pack(uint32_t wtype, void *w, size_t n_rows, size_t n)
{
    size_t rb;
    cl_err rc = cl_k_r16_check(wtype, w, n, &rb);
    if (rc != CL_OK || n_rows < CL_K_ROWS16)
        return rc;
    uint8_t *tmp = malloc(CL_K_ROWS16 * rb); /* rb * 16 cannot overflow: the rows exist */
    if (!tmp)
        return cl_err_fail(CL_E_CORE_NOMEM, "%zu bytes to repack 16 rows", CL_K_ROWS16 * rb);
    const size_t nb = rb / cl_k_type(wtype)->block_bytes;
    for (size_t g = 0; g + 1 <= n_rows / CL_K_ROWS16; g++) {
        uint8_t *grp = (uint8_t *)w + g * CL_K_ROWS16 * rb;
        memcpy(tmp, grp, CL_K_ROWS16 * rb);
        cl_k_r16_pack_group(wtype, tmp, rb, grp, nb);
    }
    free(tmp);
    return CL_OK;
}

cl_err cl_k_rows16_row(uint32_t wtype, const void *w, size_t n_rows, size_t r, void *dst, size_t n)
{
    size_t rb;
    const uint8_t *g;
    cl_err rc = cl_k_r16_find_row(wtype, w, n, n_rows, r, dst, &rb, &g);
    if (rc != CL_OK)
        return rc;
    if (g)
        cl_k_r16_unpack_row(wtype, g, (int)(r % CL_K_ROWS16), dst, rb / cl_k_type(wtype)->block_bytes);
    else
        memcpy(dst, (const uint8_t *)w + r * rb, rb);
    return CL_OK;
}

cl_err cl_k_rows16_dequantize_row(uint32_t wtype, const void *w, size_t n_rows, size_t r, float *dst, size_t n)
{
    size_t rb;
    const uint8_t *g;
    cl_err rc = cl_k_r16_find_row(wtype, w, n, n_rows, r, dst, &rb, &g);
    if (rc != CL_OK)
        return rc;
    if (!g)
        return cl_k_dequantize_row(wtype, (const uint8_t *)w + r * rb, dst, n);
    const struct cl_k_type *ty = cl_k_type(wtype);
    const size_t bb = ty->block_bytes, be = ty->block_elems;
    uint8_t blk[sizeof(struct cl_k_block_q6_k)]; /* the largest block with the layout */
    for (size_t b = 0; b < n / be; b++) {
        cl_k_r16_unpack_block(wtype, g + b * CL_K_ROWS16 * bb, (int)(r % CL_K_ROWS16), blk);
        CL_GUARD(cl_k_dequantize_row(wtype, blk, dst + b * be, be));
    }
out:
    return rc;
}

cl_err cl_k_rows16_matmul(uint32_t wtype, const void *w, size_t n_rows, size_t r0, size_t r1, const void *acts,
                          size_t act_stride, size_t n_cols, size_t n, float *out, size_t out_stride)
{
    size_t rb;
    uint8_t *tmp = NULL;
    cl_err rc = cl_k_r16_check(wtype, w, n, &rb);
    if (rc != CL_OK)
        return rc;
    if (r1 > n_rows)
        return cl_err_fail(CL_E_INFER_K_ARG, "row %zu of %zu", r1, n_rows);
    const size_t full = n_rows / CL_K_ROWS16 * CL_K_ROWS16;
    /* argument checks as the plain product's (the rows past the groups are plain) */
    CL_GUARD(cl_k_matmul_rows(wtype, w, rb, r1 > full ? (r0 > full ? r0 : full) : r1, r1, acts, act_stride, n_cols,
                              n, out, out_stride));
    CL_ENSURE_D(r0 <= r1, CL_E_INFER_K_ARG, "row range %zu > %zu", r0, r1);
    if (n_cols > 1)
        CL_ENSURE_D(out_stride >= r1, CL_E_INFER_K_ARG, "out stride %zu < rows %zu", out_stride, r1);
    const size_t end = r1 < full ? r1 : full;
    const size_t nb = rb / cl_k_type(wtype)->block_bytes;
    const cl_k_mm16_fn mm16 = cl_k_kern_now(wtype)->mm16;
    for (size_t r = r0; r < end;) {
        const size_t g = r / CL_K_ROWS16, gr0 = g * CL_K_ROWS16;
        const size_t hi = end - gr0 < CL_K_ROWS16 ? end : gr0 + CL_K_ROWS16;
        if (mm16 && r == gr0 && hi == gr0 + CL_K_ROWS16) { /* a run of whole groups */
            size_t g1 = end / CL_K_ROWS16;
            mm16(w, rb, g, g1, acts, act_stride, n_cols, n, out + gr0, out_stride);
            r = g1 * CL_K_ROWS16;
            continue;
        }
        if (mm16) { /* part of a group: the same kernel into a scratch group, so a row's bits never
                       depend on the range it was asked in */
            size_t need;
            CL_GUARD(cl_size_mul(n_cols, CL_K_ROWS16 * sizeof(float), &need));
            float *part = malloc(need);
            CL_ENSURE_D(part, CL_E_CORE_NOMEM, "%zu bytes for a partial group", need);
            mm16(w, rb, g, g + 1, acts, act_stride, n_cols, n, part, CL_K_ROWS16);
            for (size_t c = 0; c < n_cols; c++)
                memcpy(out + c * out_stride + r, part + c * CL_K_ROWS16 + (r - gr0), (hi - r) * sizeof(float));
            free(part);
            r = hi;
            continue;
        }
        if (!tmp) {
            tmp = malloc(CL_K_ROWS16 * rb);
            CL_ENSURE_D(tmp, CL_E_CORE_NOMEM, "%zu bytes to unpack 16 rows", CL_K_ROWS16 * rb);
        }
        const uint8_t *grp = (const uint8_t *)w + gr0 * rb;
        for (size_t i = r; i < hi; i++)
            cl_k_r16_unpack_row(wtype, grp, (int)(i - gr0), tmp + (i - gr0) * rb, nb);
        /* the plain kernel on the unpacked rows, written at the group's rows */
        CL_GUARD(cl_k_matmul_rows(wtype, tmp, rb, r - gr0, hi - gr0, acts, act_stride, n_cols, n, out + gr0,
                                  out_stride));
        r = hi;
    }
out:
    free(tmp);
    return rc;
}
