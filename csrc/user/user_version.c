/* The version JSON (user_version.h): a bounded recursive-descent reader that knows the
 * capabilities members and skips the rest, and the writer. */
#include "user_version.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void user_caps_default(struct user_caps *c)
{
    memset(c, 0, sizeof *c);
    c->max_msg_fds = USER_DEFAULT_MAX_MSG_FDS;
    c->max_data_xfer_size = USER_DEFAULT_MAX_XFER;
    c->max_dma_maps = USER_DEFAULT_MAX_DMA_MAPS;
    c->pgsizes = USER_DEFAULT_PGSIZES;
    c->mig_pgsize = USER_DEFAULT_PGSIZES;
    c->twin_fd_index = -1;
}

struct jp {
    const char *s;
    size_t n, i;
};

static void ws(struct jp *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' ||
                           p->s[p->i] == '\r'))
        p->i++;
}

static bool eat(struct jp *p, char c)
{
    ws(p);
    if (p->i < p->n && p->s[p->i] == c) {
        p->i++;
        return true;
    }
    return false;
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A string; its raw contents (escapes as written) in *at, *len. */
static int string(struct jp *p, const char **at, size_t *len)
{
    if (!eat(p, '"'))
        return -EINVAL;
    size_t start = p->i;
    while (p->i < p->n) {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') {
            *at = p->s + start;
            *len = p->i - start;
            p->i++;
            return 0;
        }
        if (c < 0x20)
            return -EINVAL;
        if (c == '\\') {
            if (++p->i >= p->n)
                return -EINVAL;
            char e = p->s[p->i];
            if (e == 'u') {
                if (p->n - p->i < 5)
                    return -EINVAL;
                for (int k = 1; k <= 4; k++)
                    if (!is_hex(p->s[p->i + k]))
                        return -EINVAL;
                p->i += 4;
            } else if (!strchr("\"\\/bfnrt", e) || e == 0) {
                return -EINVAL;
            }
        }
        p->i++;
    }
    return -EINVAL;
}

/* Any JSON number (skipped): -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int any_number(struct jp *p)
{
    size_t i = p->i;
    const char *s = p->s;
#define DIGIT(k) ((k) < p->n && s[k] >= '0' && s[k] <= '9')
    if (i < p->n && s[i] == '-')
        i++;
    if (!DIGIT(i))
        return -EINVAL;
    if (s[i] == '0')
        i++;
    else
        while (DIGIT(i))
            i++;
    if (i < p->n && s[i] == '.') {
        i++;
        if (!DIGIT(i))
            return -EINVAL;
        while (DIGIT(i))
            i++;
    }
    if (i < p->n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (!DIGIT(i))
            return -EINVAL;
        while (DIGIT(i))
            i++;
    }
#undef DIGIT
    p->i = i;
    return 0;
}

static bool word(struct jp *p, const char *w)
{
    size_t k = strlen(w);
    if (p->n - p->i >= k && memcmp(p->s + p->i, w, k) == 0) {
        p->i += k;
        return true;
    }
    return false;
}

static int skip_value(struct jp *p, int depth);

/* An object or array's members, skipped. */
static int skip_container(struct jp *p, int depth, bool object)
{
    if (depth >= USER_JSON_DEPTH)
        return -EINVAL;
    p->i++;   /* the opening bracket */
    char close = object ? '}' : ']';
    if (eat(p, close))
        return 0;
    for (;;) {
        if (object) {
            const char *k;
            size_t kl;
            if (string(p, &k, &kl) < 0 || !eat(p, ':'))
                return -EINVAL;
        }
        if (skip_value(p, depth + 1) < 0)
            return -EINVAL;
        if (eat(p, close))
            return 0;
        if (!eat(p, ','))
            return -EINVAL;
    }
}

static int skip_value(struct jp *p, int depth)
{
    ws(p);
    if (p->i >= p->n)
        return -EINVAL;
    char c = p->s[p->i];
    if (c == '{' || c == '[')
        return skip_container(p, depth, c == '{');
    if (c == '"') {
        const char *s;
        size_t l;
        return string(p, &s, &l);
    }
    if (word(p, "true") || word(p, "false") || word(p, "null"))
        return 0;
    return any_number(p);
}

/* A known member's number: digits only, below 2^64. */
static int uint_value(struct jp *p, uint64_t *v)
{
    ws(p);
    size_t i = p->i;
    if (i >= p->n || p->s[i] < '0' || p->s[i] > '9')
        return -EINVAL;
    if (p->s[i] == '0' && i + 1 < p->n && p->s[i + 1] >= '0' && p->s[i + 1] <= '9')
        return -EINVAL;   /* no leading zeros in JSON */
    uint64_t x = 0;
    while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') {
        unsigned d = (unsigned)(p->s[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -EINVAL;
        x = x * 10 + d;
        i++;
    }
    if (i < p->n && (p->s[i] == '.' || p->s[i] == 'e' || p->s[i] == 'E'))
        return -EINVAL;   /* a fraction or an exponent is no count */
    p->i = i;
    *v = x;
    return 0;
}

static int bool_value(struct jp *p, bool *v)
{
    ws(p);
    if (word(p, "true"))
        *v = true;
    else if (word(p, "false"))
        *v = false;
    else
        return -EINVAL;
    return 0;
}

/* The members an object level knows; `seen` refuses a known one named twice. */
struct member {
    const char *name;
    int (*read)(struct jp *p, struct user_caps *c, int depth);
};

static int read_object(struct jp *p, struct user_caps *c, int depth,
                       const struct member *known)
{
    if (depth >= USER_JSON_DEPTH || !eat(p, '{'))
        return -EINVAL;
    unsigned seen = 0;
    if (eat(p, '}'))
        return 0;
    for (;;) {
        const char *k;
        size_t kl;
        if (string(p, &k, &kl) < 0 || !eat(p, ':'))
            return -EINVAL;
        int r = 1;
        for (unsigned i = 0; known[i].name; i++)
            if (strlen(known[i].name) == kl && memcmp(known[i].name, k, kl) == 0) {
                if (seen & (1u << i))
                    return -EINVAL;
                seen |= 1u << i;
                r = known[i].read(p, c, depth + 1);
                break;
            }
        if (r == 1)
            r = skip_value(p, depth + 1);
        if (r < 0)
            return r;
        if (eat(p, '}'))
            return 0;
        if (!eat(p, ','))
            return -EINVAL;
    }
}

#define UINT_MEMBER(fn, field, bit)                                                      \
    static int fn(struct jp *p, struct user_caps *c, int depth)                          \
    {                                                                                    \
        (void)depth;                                                                     \
        c->present |= (bit);                                                             \
        return uint_value(p, &c->field);                                                 \
    }
UINT_MEMBER(rd_max_fds, max_msg_fds, USER_CAP_MAX_MSG_FDS)
UINT_MEMBER(rd_max_xfer, max_data_xfer_size, USER_CAP_MAX_XFER)
UINT_MEMBER(rd_max_maps, max_dma_maps, USER_CAP_MAX_DMA_MAPS)
UINT_MEMBER(rd_pgsizes, pgsizes, USER_CAP_PGSIZES)
UINT_MEMBER(rd_mig_pgsize, mig_pgsize, USER_CAP_MIGRATION)
UINT_MEMBER(rd_mig_bitmap, mig_max_bitmap_size, USER_CAP_MIGRATION)

static int rd_write_multiple(struct jp *p, struct user_caps *c, int depth)
{
    (void)depth;
    c->present |= USER_CAP_WRITE_MULTIPLE;
    return bool_value(p, &c->write_multiple);
}

static int rd_twin_supported(struct jp *p, struct user_caps *c, int depth)
{
    (void)depth;
    return bool_value(p, &c->twin_supported);
}

static int rd_twin_fd_index(struct jp *p, struct user_caps *c, int depth)
{
    (void)depth;
    uint64_t v;
    int r = uint_value(p, &v);
    if (r < 0)
        return r;
    if (v > USER_FDS_MAX)
        return -EINVAL;
    c->twin_fd_index = (int64_t)v;
    return 0;
}

static const struct member migration_members[] = {
    {"pgsize", rd_mig_pgsize}, {"max_bitmap_size", rd_mig_bitmap}, {NULL, NULL}};
static const struct member twin_members[] = {
    {"supported", rd_twin_supported}, {"fd_index", rd_twin_fd_index}, {NULL, NULL}};

static int rd_migration(struct jp *p, struct user_caps *c, int depth)
{
    c->present |= USER_CAP_MIGRATION;
    return read_object(p, c, depth, migration_members);
}

static int rd_twin(struct jp *p, struct user_caps *c, int depth)
{
    c->present |= USER_CAP_TWIN_SOCKET;
    return read_object(p, c, depth, twin_members);
}

static const struct member cap_members[] = {
    {"max_msg_fds", rd_max_fds},       {"max_data_xfer_size", rd_max_xfer},
    {"max_dma_maps", rd_max_maps},     {"pgsizes", rd_pgsizes},
    {"migration", rd_migration},       {"write_multiple", rd_write_multiple},
    {"twin_socket", rd_twin},          {NULL, NULL}};

static int rd_capabilities(struct jp *p, struct user_caps *c, int depth)
{
    return read_object(p, c, depth, cap_members);
}

static const struct member top_members[] = {{"capabilities", rd_capabilities}, {NULL, NULL}};

int user_caps_parse(const char *json, size_t len, struct user_caps *c)
{
    user_caps_default(c);
    if (len > USER_VERSION_JSON_MAX)
        return -EINVAL;
    struct jp p = {.s = json, .n = len, .i = 0};
    int r = read_object(&p, c, 0, top_members);
    if (r < 0) {
        user_caps_default(c);
        return r;
    }
    ws(&p);
    if (p.i != p.n) {
        user_caps_default(c);
        return -EINVAL;
    }
    return 0;
}

int user_caps_format(char *buf, size_t cap, const struct user_caps *c)
{
    size_t at = 0;
    bool first = true;
#define OUT(...)                                                                         \
    do {                                                                                 \
        int w_ = snprintf(buf + at, at < cap ? cap - at : 0, __VA_ARGS__);               \
        if (w_ < 0)                                                                      \
            return -ENOSPC;                                                              \
        at += (size_t)w_;                                                                \
    } while (0)
#define SEP() (first ? (first = false, "") : ",")
    OUT("{\"capabilities\":{");
    if (c->present & USER_CAP_MAX_MSG_FDS)
        OUT("%s\"max_msg_fds\":%" PRIu64, SEP(), c->max_msg_fds);
    if (c->present & USER_CAP_MAX_XFER)
        OUT("%s\"max_data_xfer_size\":%" PRIu64, SEP(), c->max_data_xfer_size);
    if (c->present & USER_CAP_MAX_DMA_MAPS)
        OUT("%s\"max_dma_maps\":%" PRIu64, SEP(), c->max_dma_maps);
    if (c->present & USER_CAP_PGSIZES)
        OUT("%s\"pgsizes\":%" PRIu64, SEP(), c->pgsizes);
    if (c->present & USER_CAP_MIGRATION)
        OUT("%s\"migration\":{\"pgsize\":%" PRIu64 ",\"max_bitmap_size\":%" PRIu64 "}",
            SEP(), c->mig_pgsize, c->mig_max_bitmap_size);
    if (c->present & USER_CAP_WRITE_MULTIPLE)
        OUT("%s\"write_multiple\":%s", SEP(), c->write_multiple ? "true" : "false");
    if (c->present & USER_CAP_TWIN_SOCKET) {
        OUT("%s\"twin_socket\":{\"supported\":%s", SEP(), c->twin_supported ? "true" : "false");
        if (c->twin_fd_index >= 0)
            OUT(",\"fd_index\":%" PRId64, c->twin_fd_index);
        OUT("}");
    }
    OUT("}}");
#undef OUT
#undef SEP
    if (at >= cap)
        return -ENOSPC;
    return (int)at;
}

void user_caps_send_limits(const struct user_caps *peer, struct user_limits *send)
{
    uint64_t x = peer->max_data_xfer_size, f = peer->max_msg_fds;
    send->max_data_xfer_size = (uint32_t)(x > USER_XFER_MAX ? USER_XFER_MAX : x);
    send->max_msg_fds = (uint32_t)(f > USER_FDS_MAX ? USER_FDS_MAX : f);
}
