#include "cloister/log.h"

#include <inttypes.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "cloister/encode.h"

static FILE *cl_log_stream_;
static atomic_int cl_log_min = CL_LOG_INFO;
static const char *cl_log_component_ = "cloister";
static pthread_mutex_t cl_log_lock = PTHREAD_MUTEX_INITIALIZER;

void cl_log_set_level(enum cl_log_level lvl) { atomic_store(&cl_log_min, (int)lvl); }

enum cl_log_level cl_log_level_parse(const char *s)
{
    static const char *const names[CL_LOG_LEVEL_COUNT] = {[CL_LOG_DEBUG] = "debug", [CL_LOG_INFO] = "info",
                                                          [CL_LOG_WARN] = "warn", [CL_LOG_ERROR] = "error"};
    for (int l = CL_LOG_DEBUG; s && l < CL_LOG_LEVEL_COUNT; l++)
        if (!strcmp(s, names[l]))
            return (enum cl_log_level)l;
    return CL_LOG_NONE;
}
enum cl_log_level cl_log_level(void) { return (enum cl_log_level)atomic_load(&cl_log_min); }
void cl_log_set_stream(FILE *f) { cl_log_stream_ = f; }
void cl_log_set_component(const char *component) { cl_log_component_ = component; }

static const char *cl_log_level_name(enum cl_log_level l)
{
    switch (l) {
    case CL_LOG_DEBUG: return "debug";
    case CL_LOG_INFO: return "info";
    case CL_LOG_WARN: return "warn";
    case CL_LOG_ERROR: return "error";
    default: return "none";
    }
}

uint64_t cl_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void cl_reqid_new(struct cl_reqid *id)
{
    if (RAND_bytes(id->b, sizeof(id->b)) != 1)
        memset(id->b, 0, sizeof(id->b));
}

/* Keys and literals come from the program text, but are escaped anyway so a
 * log line is always valid JSON. */
static void cl_log_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void cl_log_field_out(FILE *f, const struct cl_log_field *x)
{
    char hex[33];
    const char *name;
    fputc(',', f);
    cl_log_json_str(f, x->key);
    fputc(':', f);
    switch (x->kind) {
    case CL_LOGF_ID:
        cl_hex_encode(x->v.id->b, sizeof(x->v.id->b), hex);
        fprintf(f, "\"%s\"", hex);
        break;
    case CL_LOGF_SIZE:
    case CL_LOGF_COUNT_:
    case CL_LOGF_DURATION:
        fprintf(f, "%" PRIu64, x->v.u);
        break;
    case CL_LOGF_ERR:
        name = cl_err_name(x->v.err);
        cl_log_json_str(f, name ? name : "UNKNOWN");
        break;
    case CL_LOGF_LITERAL:
        cl_log_json_str(f, x->v.lit);
        break;
    default:
        fputs("null", f);
    }
}

void cl_log_emit(enum cl_log_level lvl, const char *event, const struct cl_log_field *f, unsigned n)
{
    if ((int)lvl < atomic_load(&cl_log_min))
        return;
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);

    pthread_mutex_lock(&cl_log_lock);
    FILE *out = cl_log_stream_ ? cl_log_stream_ : stderr;
    fprintf(out, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"component\":", when, ts.tv_nsec / 1000000,
            cl_log_level_name(lvl));
    cl_log_json_str(out, cl_log_component_);
    fputs(",\"event\":", out);
    cl_log_json_str(out, event);
    for (unsigned i = 0; i < n && i < 16; i++)
        cl_log_field_out(out, &f[i]);
    fputs("}\n", out);
    fflush(out);
    pthread_mutex_unlock(&cl_log_lock);
}
