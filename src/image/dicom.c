/* A strict, bounded reader of the DICOM subset Cloister accepts (docs/images.md): a Part-10 file (preamble,
 * "DICM", explicit-VR-LE group 0002 meta), transfer syntaxes Implicit VR LE, Explicit VR LE and JPEG Baseline
 * (one frame, encapsulated), monochrome 8/16-bit (signed or not) with rescale and window, or 8-bit RGB.
 *
 * Only the image pixel module's elements at the top level are read; everything else -- patient and study
 * identifiers included -- is skipped by length and never copied, logged or named in an error (errors give tag
 * numbers and offsets only). Sequences are walked with an explicit depth limit; nested datasets (icons, overlays)
 * are ignored even when they carry pixel data. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/buf.h"
#include "cloister/secmem.h"
#include "image_internal.h"

#define CL_DCM_MAX_DEPTH 16
#define CL_DCM_UNDEFINED 0xffffffffu
#define CL_DCM_TAG(g, e) ((uint32_t)(g) << 16 | (uint32_t)(e))
#define CL_DCM_ITEM CL_DCM_TAG(0xfffe, 0xe000)
#define CL_DCM_ITEM_END CL_DCM_TAG(0xfffe, 0xe00d)
#define CL_DCM_SEQ_END CL_DCM_TAG(0xfffe, 0xe0dd)
#define CL_DCM_PIXEL_DATA CL_DCM_TAG(0x7fe0, 0x0010)

enum cl_dcm_ts { CL_DCM_TS_NONE = 0, CL_DCM_TS_IMPLICIT_LE, CL_DCM_TS_EXPLICIT_LE, CL_DCM_TS_JPEG_BASELINE };
enum cl_dcm_photo { CL_DCM_PHOTO_NONE = 0, CL_DCM_PHOTO_MONO1, CL_DCM_PHOTO_MONO2, CL_DCM_PHOTO_RGB, CL_DCM_PHOTO_YBR };

/* The elements of interest, each at most once at the top level. */
enum cl_dcm_field {
    CL_DCM_F_SPP, CL_DCM_F_PHOTO, CL_DCM_F_PLANAR, CL_DCM_F_FRAMES, CL_DCM_F_ROWS, CL_DCM_F_COLS, CL_DCM_F_BA,
    CL_DCM_F_BS, CL_DCM_F_HB, CL_DCM_F_PR, CL_DCM_F_WC, CL_DCM_F_WW, CL_DCM_F_RI, CL_DCM_F_RS, CL_DCM_F_PIXEL,
    CL_DCM_F_COUNT
};

static const struct {
    uint32_t tag;
    const char *name;
} cl_dcm_fields[CL_DCM_F_COUNT] = {
    [CL_DCM_F_SPP] = {CL_DCM_TAG(0x0028, 0x0002), "SamplesPerPixel"},
    [CL_DCM_F_PHOTO] = {CL_DCM_TAG(0x0028, 0x0004), "PhotometricInterpretation"},
    [CL_DCM_F_PLANAR] = {CL_DCM_TAG(0x0028, 0x0006), "PlanarConfiguration"},
    [CL_DCM_F_FRAMES] = {CL_DCM_TAG(0x0028, 0x0008), "NumberOfFrames"},
    [CL_DCM_F_ROWS] = {CL_DCM_TAG(0x0028, 0x0010), "Rows"},
    [CL_DCM_F_COLS] = {CL_DCM_TAG(0x0028, 0x0011), "Columns"},
    [CL_DCM_F_BA] = {CL_DCM_TAG(0x0028, 0x0100), "BitsAllocated"},
    [CL_DCM_F_BS] = {CL_DCM_TAG(0x0028, 0x0101), "BitsStored"},
    [CL_DCM_F_HB] = {CL_DCM_TAG(0x0028, 0x0102), "HighBit"},
    [CL_DCM_F_PR] = {CL_DCM_TAG(0x0028, 0x0103), "PixelRepresentation"},
    [CL_DCM_F_WC] = {CL_DCM_TAG(0x0028, 0x1050), "WindowCenter"},
    [CL_DCM_F_WW] = {CL_DCM_TAG(0x0028, 0x1051), "WindowWidth"},
    [CL_DCM_F_RI] = {CL_DCM_TAG(0x0028, 0x1052), "RescaleIntercept"},
    [CL_DCM_F_RS] = {CL_DCM_TAG(0x0028, 0x1053), "RescaleSlope"},
    [CL_DCM_F_PIXEL] = {CL_DCM_PIXEL_DATA, "PixelData"},
};

struct cl_dcm {
    const uint8_t *base;
    enum cl_dcm_ts ts;
    bool seen[CL_DCM_F_COUNT];
    uint16_t spp, planar, rows, cols, ba, bs, hb, pr;
    long frames;
    enum cl_dcm_photo photo;
    double wc, ww, ri, rs;
    const uint8_t *pixel; /* native pixel data, inside the input */
    size_t pixel_len;
    struct cl_buf frame; /* encapsulated: the fragments of the one frame, concatenated (wiped when freed) */
};

struct cl_dcm_elem {
    uint32_t tag;
    char vr[3];
    uint32_t len;
    size_t at; /* offset of the element, for errors */
};

#define CL_DCM_G(t) ((unsigned)((t) >> 16))
#define CL_DCM_E(t) ((unsigned)((t) & 0xffff))

static uint16_t cl_dcm_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t cl_dcm_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* VRs whose explicit encoding has 2 reserved bytes and a 32-bit length. */
static bool cl_dcm_long_vr(const char *vr)
{
    static const char *const l[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"};
    for (size_t i = 0; i < sizeof(l) / sizeof(l[0]); i++)
        if (vr[0] == l[i][0] && vr[1] == l[i][1])
            return true;
    return false;
}

static cl_err cl_dcm_header(struct cl_dcm *d, struct cl_cursor *c, bool explicit_vr, struct cl_dcm_elem *e)
{
    cl_err rc = CL_OK;
    const uint8_t *p = NULL;
    e->at = c->off;
    CL_ENSURE_D(cl_cursor_left(c) >= 8, CL_E_IMAGE_TRUNCATED, "dicom: element header at offset %zu", e->at);
    CL_GUARD(cl_cursor_bytes(c, 4, &p));
    e->tag = (uint32_t)cl_dcm_le16(p) << 16 | cl_dcm_le16(p + 2);
    memset(e->vr, 0, sizeof(e->vr));
    if (CL_DCM_G(e->tag) == 0xfffe || !explicit_vr) {
        /* items and delimiters never carry a VR; implicit VR has none */
        CL_GUARD(cl_cursor_bytes(c, 4, &p));
        e->len = cl_dcm_le32(p);
        goto out;
    }
    CL_GUARD(cl_cursor_bytes(c, 2, &p));
    CL_ENSURE_D(p[0] >= 'A' && p[0] <= 'Z' && p[1] >= 'A' && p[1] <= 'Z', CL_E_IMAGE_DICOM_MALFORMED,
                "dicom: element (%04x,%04x) at offset %zu: invalid VR", CL_DCM_G(e->tag), CL_DCM_E(e->tag), e->at);
    e->vr[0] = (char)p[0];
    e->vr[1] = (char)p[1];
    if (cl_dcm_long_vr(e->vr)) {
        CL_ENSURE_D(cl_cursor_left(c) >= 6, CL_E_IMAGE_TRUNCATED, "dicom: element header at offset %zu", e->at);
        CL_GUARD(cl_cursor_bytes(c, 6, &p));
        e->len = cl_dcm_le32(p + 2);
    } else {
        CL_GUARD(cl_cursor_bytes(c, 2, &p));
        e->len = cl_dcm_le16(p);
    }
out:
    (void)d;
    return rc;
}

static cl_err cl_dcm_value(struct cl_cursor *c, const struct cl_dcm_elem *e, const uint8_t **v)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(e->len <= cl_cursor_left(c), CL_E_IMAGE_TRUNCATED,
                "dicom: element (%04x,%04x) at offset %zu: length %u > %zu bytes left", CL_DCM_G(e->tag),
                CL_DCM_E(e->tag), e->at, (unsigned)e->len, cl_cursor_left(c));
    CL_GUARD(cl_cursor_bytes(c, e->len, v));
out:
    return rc;
}

/* The first value of a multi-valued text element, without padding; bounded copy into buf. */
static cl_err cl_dcm_first_text(const uint8_t *v, uint32_t len, const struct cl_dcm_elem *e, char *buf, size_t cap)
{
    cl_err rc = CL_OK;
    size_t n = 0;
    while (n < len && v[n] != '\\')
        n++;
    size_t s = 0;
    while (s < n && (v[s] == ' ' || v[s] == 0))
        s++;
    while (n > s && (v[n - 1] == ' ' || v[n - 1] == 0))
        n--;
    CL_ENSURE_D(n - s < cap, CL_E_IMAGE_DICOM_MALFORMED, "dicom: element (%04x,%04x): value too long",
                CL_DCM_G(e->tag), CL_DCM_E(e->tag));
    memcpy(buf, v + s, n - s);
    buf[n - s] = 0;
out:
    return rc;
}

/* Decimal string (DS) or integer string (IS): digits, sign, point, exponent only, finite. */
static cl_err cl_dcm_number(const uint8_t *v, uint32_t len, const struct cl_dcm_elem *e, double *out)
{
    cl_err rc = CL_OK;
    char buf[40];
    char *end = NULL;
    CL_GUARD(cl_dcm_first_text(v, len, e, buf, sizeof(buf)));
    for (const char *q = buf; *q; q++)
        CL_ENSURE_D((*q >= '0' && *q <= '9') || *q == '+' || *q == '-' || *q == '.' || *q == 'e' || *q == 'E',
                    CL_E_IMAGE_DICOM_MALFORMED, "dicom: element (%04x,%04x): not a number", CL_DCM_G(e->tag),
                    CL_DCM_E(e->tag));
    double x = strtod(buf, &end);
    CL_ENSURE_D(buf[0] && end && *end == 0 && isfinite(x) && fabs(x) < 1e12, CL_E_IMAGE_DICOM_MALFORMED,
                "dicom: element (%04x,%04x): not a number", CL_DCM_G(e->tag), CL_DCM_E(e->tag));
    *out = x;
out:
    return rc;
}

static cl_err cl_dcm_us(const uint8_t *v, const struct cl_dcm_elem *e, uint16_t *out)
{
    if (e->len != 2)
        return cl_err_fail(CL_E_IMAGE_DICOM_MALFORMED, "dicom: element (%04x,%04x): length %u, 2 expected",
                           CL_DCM_G(e->tag), CL_DCM_E(e->tag), (unsigned)e->len);
    *out = cl_dcm_le16(v);
    return CL_OK;
}

static cl_err cl_dcm_field(struct cl_dcm *d, int f, const struct cl_dcm_elem *e, const uint8_t *v)
{
    cl_err rc = CL_OK;
    char text[24];
    double x = 0;
    switch (f) {
    case CL_DCM_F_SPP: CL_GUARD(cl_dcm_us(v, e, &d->spp)); break;
    case CL_DCM_F_PLANAR: CL_GUARD(cl_dcm_us(v, e, &d->planar)); break;
    case CL_DCM_F_ROWS: CL_GUARD(cl_dcm_us(v, e, &d->rows)); break;
    case CL_DCM_F_COLS: CL_GUARD(cl_dcm_us(v, e, &d->cols)); break;
    case CL_DCM_F_BA: CL_GUARD(cl_dcm_us(v, e, &d->ba)); break;
    case CL_DCM_F_BS: CL_GUARD(cl_dcm_us(v, e, &d->bs)); break;
    case CL_DCM_F_HB: CL_GUARD(cl_dcm_us(v, e, &d->hb)); break;
    case CL_DCM_F_PR: CL_GUARD(cl_dcm_us(v, e, &d->pr)); break;
    case CL_DCM_F_WC: CL_GUARD(cl_dcm_number(v, e->len, e, &d->wc)); break;
    case CL_DCM_F_WW: CL_GUARD(cl_dcm_number(v, e->len, e, &d->ww)); break;
    case CL_DCM_F_RI: CL_GUARD(cl_dcm_number(v, e->len, e, &d->ri)); break;
    case CL_DCM_F_RS: CL_GUARD(cl_dcm_number(v, e->len, e, &d->rs)); break;
    case CL_DCM_F_FRAMES:
        CL_GUARD(cl_dcm_number(v, e->len, e, &x));
        CL_ENSURE_D(x == floor(x) && x >= 1, CL_E_IMAGE_DICOM_MALFORMED, "dicom: NumberOfFrames invalid");
        d->frames = (long)x;
        break;
    case CL_DCM_F_PHOTO:
        CL_GUARD(cl_dcm_first_text(v, e->len, e, text, sizeof(text)));
        if (!strcmp(text, "MONOCHROME1"))
            d->photo = CL_DCM_PHOTO_MONO1;
        else if (!strcmp(text, "MONOCHROME2"))
            d->photo = CL_DCM_PHOTO_MONO2;
        else if (!strcmp(text, "RGB"))
            d->photo = CL_DCM_PHOTO_RGB;
        else if (!strcmp(text, "YBR_FULL_422") || !strcmp(text, "YBR_FULL"))
            d->photo = CL_DCM_PHOTO_YBR;
        else
            CL_FAIL(CL_E_IMAGE_DICOM_UNSUPPORTED, "dicom: PhotometricInterpretation not supported "
                                                  "(MONOCHROME1, MONOCHROME2, RGB, YBR_FULL(_422) with JPEG)");
        break;
    default: break;
    }
out:
    return rc;
}

static cl_err cl_dcm_dataset(struct cl_dcm *d, struct cl_cursor *c, bool explicit_vr, int depth, bool top);

/* An undefined-length sequence: items (defined length skipped, undefined parsed for their delimiter) up to the
 * sequence delimiter. */
static cl_err cl_dcm_sequence(struct cl_dcm *d, struct cl_cursor *c, bool explicit_vr, int depth)
{
    cl_err rc = CL_OK;
    struct cl_dcm_elem e;
    const uint8_t *v = NULL;
    CL_ENSURE_D(depth < CL_DCM_MAX_DEPTH, CL_E_IMAGE_DICOM_DEPTH, "dicom: more than %d nested sequences at offset %zu",
                CL_DCM_MAX_DEPTH, c->off);
    for (;;) {
        CL_GUARD(cl_dcm_header(d, c, explicit_vr, &e));
        if (e.tag == CL_DCM_SEQ_END) {
            CL_ENSURE_D(e.len == 0, CL_E_IMAGE_DICOM_MALFORMED, "dicom: sequence delimiter at offset %zu has a length",
                        e.at);
            break;
        }
        CL_ENSURE_D(e.tag == CL_DCM_ITEM, CL_E_IMAGE_DICOM_MALFORMED,
                    "dicom: (%04x,%04x) at offset %zu inside a sequence, item expected", CL_DCM_G(e.tag),
                    CL_DCM_E(e.tag), e.at);
        if (e.len == CL_DCM_UNDEFINED)
            CL_GUARD(cl_dcm_dataset(d, c, explicit_vr, depth + 1, false));
        else
            CL_GUARD(cl_dcm_value(c, &e, &v));
    }
out:
    return rc;
}

/* Encapsulated pixel data: a Basic Offset Table item, then the fragments of the single frame, then the sequence
 * delimiter. The fragments are concatenated (a frame may span several). */
static cl_err cl_dcm_encapsulated(struct cl_dcm *d, struct cl_cursor *c)
{
    cl_err rc = CL_OK;
    struct cl_dcm_elem e;
    const uint8_t *v = NULL;
    size_t nfrag = 0;
    struct cl_buf *frame = &d->frame;
    CL_GUARD(cl_dcm_header(d, c, true, &e));
    CL_ENSURE_D(e.tag == CL_DCM_ITEM && e.len != CL_DCM_UNDEFINED, CL_E_IMAGE_DICOM_MALFORMED,
                "dicom: encapsulated pixel data at offset %zu: no offset table item", e.at);
    CL_GUARD(cl_dcm_value(c, &e, &v));
    for (;;) {
        CL_GUARD(cl_dcm_header(d, c, true, &e));
        if (e.tag == CL_DCM_SEQ_END) {
            CL_ENSURE_D(e.len == 0, CL_E_IMAGE_DICOM_MALFORMED, "dicom: sequence delimiter at offset %zu has a length",
                        e.at);
            break;
        }
        CL_ENSURE_D(e.tag == CL_DCM_ITEM && e.len != CL_DCM_UNDEFINED, CL_E_IMAGE_DICOM_MALFORMED,
                    "dicom: fragment at offset %zu: item with a defined length expected", e.at);
        CL_GUARD(cl_dcm_value(c, &e, &v));
        CL_GUARD(cl_buf_append(frame, v, e.len));
        nfrag++;
    }
    CL_ENSURE_D(nfrag > 0 && frame->len > 0, CL_E_IMAGE_DICOM_MALFORMED, "dicom: encapsulated pixel data has no fragment");
out:
    return rc;
}

static cl_err cl_dcm_dataset(struct cl_dcm *d, struct cl_cursor *c, bool explicit_vr, int depth, bool top)
{
    cl_err rc = CL_OK;
    struct cl_dcm_elem e;
    const uint8_t *v = NULL;
    uint32_t last = 0;
    bool any = false;
    CL_ENSURE_D(depth < CL_DCM_MAX_DEPTH, CL_E_IMAGE_DICOM_DEPTH, "dicom: more than %d nested sequences at offset %zu",
                CL_DCM_MAX_DEPTH, c->off);
    for (;;) {
        if (top && cl_cursor_done(c))
            break;
        CL_GUARD(cl_dcm_header(d, c, explicit_vr, &e));
        if (e.tag == CL_DCM_ITEM_END && !top) {
            CL_ENSURE_D(e.len == 0, CL_E_IMAGE_DICOM_MALFORMED, "dicom: item delimiter at offset %zu has a length", e.at);
            break;
        }
        CL_ENSURE_D(CL_DCM_G(e.tag) != 0xfffe, CL_E_IMAGE_DICOM_MALFORMED,
                    "dicom: (%04x,%04x) at offset %zu outside a sequence", CL_DCM_G(e.tag), CL_DCM_E(e.tag), e.at);
        CL_ENSURE_D(!top || CL_DCM_G(e.tag) != 0x0002, CL_E_IMAGE_DICOM_MALFORMED,
                    "dicom: meta element (0002,%04x) at offset %zu inside the dataset", CL_DCM_E(e.tag), e.at);
        CL_ENSURE_D(!any || e.tag > last, CL_E_IMAGE_DICOM_MALFORMED,
                    "dicom: element (%04x,%04x) at offset %zu out of order or repeated", CL_DCM_G(e.tag),
                    CL_DCM_E(e.tag), e.at);
        last = e.tag;
        any = true;
        int f = -1;
        if (top)
            for (int i = 0; i < CL_DCM_F_COUNT; i++)
                if (cl_dcm_fields[i].tag == e.tag)
                    f = i;
        if (e.len == CL_DCM_UNDEFINED) {
            if (f == CL_DCM_F_PIXEL) {
                CL_ENSURE_D(d->ts == CL_DCM_TS_JPEG_BASELINE, CL_E_IMAGE_DICOM_MALFORMED,
                            "dicom: encapsulated pixel data in a native transfer syntax");
                CL_ENSURE_D(!strcmp(e.vr, "OB") || !strcmp(e.vr, "OW"), CL_E_IMAGE_DICOM_MALFORMED,
                            "dicom: PixelData VR");
                CL_GUARD(cl_dcm_encapsulated(d, c));
                d->seen[f] = true;
                continue;
            }
            /* an undefined length is a sequence: SQ, or UN holding an implicit-VR sequence, or any element in
             * implicit VR (where only sequences may be undefined) */
            if (!explicit_vr || !strcmp(e.vr, "SQ"))
                CL_GUARD(cl_dcm_sequence(d, c, explicit_vr, depth + 1));
            else if (!strcmp(e.vr, "UN"))
                CL_GUARD(cl_dcm_sequence(d, c, false, depth + 1));
            else
                CL_FAIL(CL_E_IMAGE_DICOM_MALFORMED, "dicom: element (%04x,%04x) at offset %zu: undefined length",
                        CL_DCM_G(e.tag), CL_DCM_E(e.tag), e.at);
            CL_ENSURE_D(f < 0, CL_E_IMAGE_DICOM_MALFORMED, "dicom: %s is a sequence", f >= 0 ? cl_dcm_fields[f].name : "");
            continue;
        }
        CL_GUARD(cl_dcm_value(c, &e, &v));
        if (f < 0)
            continue; /* everything else, defined-length sequences included, is skipped unread */
        CL_ENSURE_D(!explicit_vr || strcmp(e.vr, "SQ"), CL_E_IMAGE_DICOM_MALFORMED, "dicom: %s is a sequence",
                    cl_dcm_fields[f].name);
        d->seen[f] = true;
        if (f == CL_DCM_F_PIXEL) {
            CL_ENSURE_D(d->ts != CL_DCM_TS_JPEG_BASELINE, CL_E_IMAGE_DICOM_MALFORMED,
                        "dicom: native pixel data in the JPEG Baseline transfer syntax");
            d->pixel = v;
            d->pixel_len = e.len;
        } else {
            CL_GUARD(cl_dcm_field(d, f, &e, v));
        }
    }
out:
    return rc;
}

/* Group 0002, always explicit VR LE: only the transfer syntax matters. */
static cl_err cl_dcm_meta(struct cl_dcm *d, struct cl_cursor *c)
{
    cl_err rc = CL_OK;
    struct cl_dcm_elem e;
    const uint8_t *v = NULL;
    char uid[68];
    bool have_ts = false;
    uint32_t last = 0;
    while (cl_cursor_left(c) >= 2 && cl_dcm_le16(c->p + c->off) == 0x0002) {
        CL_GUARD(cl_dcm_header(d, c, true, &e));
        CL_ENSURE_D(e.tag > last, CL_E_IMAGE_DICOM_MALFORMED, "dicom: meta element (0002,%04x) out of order",
                    CL_DCM_E(e.tag));
        last = e.tag;
        CL_ENSURE_D(e.len != CL_DCM_UNDEFINED, CL_E_IMAGE_DICOM_MALFORMED, "dicom: meta element (0002,%04x): undefined length",
                    CL_DCM_E(e.tag));
        CL_GUARD(cl_dcm_value(c, &e, &v));
        if (e.tag != CL_DCM_TAG(0x0002, 0x0010))
            continue;
        CL_GUARD(cl_dcm_first_text(v, e.len, &e, uid, sizeof(uid)));
        if (!strcmp(uid, "1.2.840.10008.1.2"))
            d->ts = CL_DCM_TS_IMPLICIT_LE;
        else if (!strcmp(uid, "1.2.840.10008.1.2.1"))
            d->ts = CL_DCM_TS_EXPLICIT_LE;
        else if (!strcmp(uid, "1.2.840.10008.1.2.4.50"))
            d->ts = CL_DCM_TS_JPEG_BASELINE;
        else
            CL_FAIL(CL_E_IMAGE_DICOM_UNSUPPORTED, "dicom: transfer syntax not supported (Implicit VR LE, "
                                                  "Explicit VR LE and JPEG Baseline are)");
        have_ts = true;
    }
    CL_ENSURE_D(have_ts, CL_E_IMAGE_DICOM_MISSING, "dicom: TransferSyntaxUID (0002,0010)");
out:
    return rc;
}

/* The rescaled value of monochrome pixel i: stored bits extracted by HighBit/BitsStored, sign-extended when
 * PixelRepresentation is 1, times RescaleSlope plus RescaleIntercept. */
struct cl_dcm_mono {
    const uint8_t *src;
    bool wide, is_signed;
    unsigned shift, bits;
    uint32_t mask;
    double slope, icpt;
};

static double cl_dcm_mono_value(const struct cl_dcm_mono *m, size_t i)
{
    uint32_t raw = m->wide ? cl_dcm_le16(m->src + i * 2) : m->src[i];
    uint32_t u = (raw >> m->shift) & m->mask;
    int32_t s = (int32_t)u;
    if (m->is_signed && (u >> (m->bits - 1)) & 1)
        s = (int32_t)u - (int32_t)(m->mask + 1); /* two's complement in BitsStored bits */
    return (double)s * m->slope + m->icpt;
}

/* Maps monochrome pixels to 8-bit gray in R, G and B: the window (PS3.3 C.11.2.1.2.1, linear) or, with no
 * window, the rescaled values' min..max; rounded; MONOCHROME1 inverted. Two passes, nothing stored. */
static void cl_dcm_voi(const struct cl_dcm *d, const struct cl_dcm_mono *m, size_t n, uint8_t *rgb)
{
    double lo = 0, hi = 0;
    bool window = d->seen[CL_DCM_F_WC] && d->seen[CL_DCM_F_WW] && d->ww >= 1.0;
    if (!window && n > 0) {
        lo = hi = cl_dcm_mono_value(m, 0);
        for (size_t i = 1; i < n; i++) {
            double x = cl_dcm_mono_value(m, i);
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
        }
    }
    for (size_t i = 0; i < n; i++) {
        double x = cl_dcm_mono_value(m, i), y;
        if (window) {
            double c = d->wc - 0.5, w = d->ww - 1.0;
            if (x <= c - w / 2)
                y = 0;
            else if (x > c + w / 2)
                y = 255;
            else
                y = ((x - c) / w + 0.5) * 255.0;
        } else {
            y = hi > lo ? (x - lo) / (hi - lo) * 255.0 : 0;
        }
        long q = lround(y);
        q = q < 0 ? 0 : q > 255 ? 255 : q;
        memset(rgb + i * 3, (int)(d->photo == CL_DCM_PHOTO_MONO1 ? 255 - q : q), 3);
    }
}

static cl_err cl_dcm_pixels(struct cl_dcm *d, const struct cl_image_limits *lim, struct cl_image *out)
{
    cl_err rc = CL_OK;
    static const int required[] = {CL_DCM_F_PHOTO, CL_DCM_F_ROWS, CL_DCM_F_COLS, CL_DCM_F_BA, CL_DCM_F_PIXEL};
    size_t rgb_bytes = 0, n = 0;
    uint8_t *jpeg = NULL;
    size_t jpeg_bytes = 0;
    struct cl_image img = {0};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        CL_ENSURE_D(d->seen[required[i]], CL_E_IMAGE_DICOM_MISSING, "dicom: %s (%04x,%04x)",
                    cl_dcm_fields[required[i]].name, CL_DCM_G(cl_dcm_fields[required[i]].tag),
                    CL_DCM_E(cl_dcm_fields[required[i]].tag));
    CL_GUARD(cl_image_check_dims(d->cols, d->rows, lim, "dicom", &rgb_bytes));
    CL_ENSURE_D(d->frames == 1, CL_E_IMAGE_DICOM_UNSUPPORTED, "dicom: %ld frames (one is supported)", d->frames);
    if (!d->seen[CL_DCM_F_SPP])
        d->spp = 1;
    if (!d->seen[CL_DCM_F_BS])
        d->bs = d->ba;
    if (!d->seen[CL_DCM_F_HB])
        d->hb = (uint16_t)(d->bs - 1);
    bool mono = d->photo == CL_DCM_PHOTO_MONO1 || d->photo == CL_DCM_PHOTO_MONO2;
    CL_ENSURE_D(mono ? d->spp == 1 : d->spp == 3, CL_E_IMAGE_DICOM_MALFORMED,
                "dicom: SamplesPerPixel %u does not match the photometric interpretation", (unsigned)d->spp);
    CL_ENSURE_D(d->ba == 8 || (d->ba == 16 && mono), CL_E_IMAGE_DICOM_UNSUPPORTED,
                "dicom: BitsAllocated %u (8 or 16 for monochrome, 8 for colour)", (unsigned)d->ba);
    CL_ENSURE_D(d->bs >= 1 && d->bs <= d->ba && d->hb < d->ba && d->hb + 1 >= d->bs, CL_E_IMAGE_DICOM_MALFORMED,
                "dicom: BitsStored %u / HighBit %u invalid for BitsAllocated %u", (unsigned)d->bs, (unsigned)d->hb,
                (unsigned)d->ba);
    CL_ENSURE_D(d->pr <= 1, CL_E_IMAGE_DICOM_MALFORMED, "dicom: PixelRepresentation %u", (unsigned)d->pr);
    CL_ENSURE_D(!d->seen[CL_DCM_F_RS] || d->rs != 0, CL_E_IMAGE_DICOM_MALFORMED, "dicom: RescaleSlope is zero");
    n = (size_t)d->rows * d->cols;
    CL_GUARD(cl_image_alloc(d->cols, d->rows, &img));

    const uint8_t *src = d->pixel;
    int ncomp = d->spp;
    if (d->ts == CL_DCM_TS_JPEG_BASELINE) {
        uint32_t jw = 0, jh = 0;
        CL_ENSURE_D(d->ba == 8 && d->bs == 8, CL_E_IMAGE_DICOM_UNSUPPORTED, "dicom: JPEG Baseline with %u bits",
                    (unsigned)d->bs);
        CL_GUARD(cl_image_jpeg_decode_gray(d->frame.data, d->frame.len, lim, &jw, &jh, &ncomp, &jpeg));
        jpeg_bytes = (size_t)jw * jh * (size_t)ncomp;
        CL_ENSURE_D(jw == d->cols && jh == d->rows && ncomp == d->spp, CL_E_IMAGE_DICOM_MALFORMED,
                    "dicom: JPEG frame is %ux%u with %d components, header says %ux%u with %u", (unsigned)jw,
                    (unsigned)jh, ncomp, (unsigned)d->cols, (unsigned)d->rows, (unsigned)d->spp);
        src = jpeg;
    } else {
        CL_ENSURE_D(d->photo != CL_DCM_PHOTO_YBR, CL_E_IMAGE_DICOM_UNSUPPORTED,
                    "dicom: YBR photometric interpretation without JPEG");
        size_t need = 0;
        CL_GUARD(cl_size_mul(n, (size_t)d->spp * (d->ba / 8), &need));
        CL_ENSURE_D(d->pixel_len >= need && d->pixel_len <= need + 1, CL_E_IMAGE_DICOM_MALFORMED,
                    "dicom: PixelData has %zu bytes, %zu expected", d->pixel_len, need);
    }

    if (!mono) {
        bool planar = d->ts != CL_DCM_TS_JPEG_BASELINE && d->seen[CL_DCM_F_PLANAR] && d->planar == 1;
        CL_ENSURE_D(!d->seen[CL_DCM_F_PLANAR] || d->planar <= 1, CL_E_IMAGE_DICOM_MALFORMED,
                    "dicom: PlanarConfiguration %u", (unsigned)d->planar);
        for (size_t i = 0; i < n; i++)
            for (int ch = 0; ch < 3; ch++)
                img.rgb[i * 3 + (size_t)ch] = planar ? src[(size_t)ch * n + i] : src[i * 3 + (size_t)ch];
    } else {
        struct cl_dcm_mono m = {
            .src = src,
            .wide = d->ba == 16,
            .is_signed = d->pr == 1,
            .shift = (unsigned)(d->hb + 1 - d->bs),
            .bits = d->bs,
            .mask = (uint32_t)((1u << d->bs) - 1), /* bs <= 16 */
            .slope = d->seen[CL_DCM_F_RS] ? d->rs : 1.0,
            .icpt = d->seen[CL_DCM_F_RI] ? d->ri : 0.0,
        };
        cl_dcm_voi(d, &m, n, img.rgb);
    }
    *out = img;
    img.rgb = NULL;
out:
    if (jpeg) {
        cl_wipe(jpeg, jpeg_bytes);
        free(jpeg);
    }
    cl_image_free(&img);
    return rc;
}

cl_err cl_image_dicom_decode(const uint8_t *data, size_t len, const struct cl_image_limits *lim,
                             struct cl_image *out)
{
    cl_err rc = CL_OK;
    struct cl_dcm d = {.base = data, .frames = 1};
    struct cl_cursor c;
    cl_buf_init(&d.frame, len > 0 ? len : 1, CL_BUF_NONE);
    CL_ENSURE_D(len >= 132 && !memcmp(data + 128, "DICM", 4), CL_E_IMAGE_FORMAT, "dicom: no Part 10 \"DICM\" prefix");
    cl_cursor_init(&c, data, len);
    CL_GUARD(cl_cursor_skip(&c, 132));
    CL_GUARD(cl_dcm_meta(&d, &c));
    CL_GUARD(cl_dcm_dataset(&d, &c, d.ts != CL_DCM_TS_IMPLICIT_LE, 0, true));
    CL_GUARD(cl_dcm_pixels(&d, lim, out));
out:
    cl_buf_free(&d.frame);
    return rc;
}
