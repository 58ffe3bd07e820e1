/* grpcload: a small gRPC (HTTP/2, plaintext, prior knowledge) load generator for
 * unary calls whose request body changes from call to call, which h2load cannot
 * do (it sends one body per process).
 *
 *   grpcload HOST PORT PATH BODIES [-c CONNS] [-m STREAMS] [-D SECONDS]
 *            [-r RATE] [-o OFFSET] [-H "name: value"]... [-l LATENCY_FILE]
 *
 * BODIES is a file of gRPC-framed request messages (1-byte flag, 4-byte length,
 * message), sent in order and cycled; connection i starts at OFFSET + i * n / CONNS.
 * Without -r the load is closed-loop (each connection keeps STREAMS calls in
 * flight); with -r RATE it is open-loop: calls are scheduled at RATE per second in
 * total, and a call's latency is measured from its scheduled time (so a server that
 * falls behind shows it, no coordinated omission).
 *
 * HTTP/2 is kept to what a unary client needs: the request header block is encoded
 * once, without the dynamic table (the server's header blocks are never decoded: a
 * call ends with a HEADERS frame carrying END_STREAM, and an answer with a message
 * has DATA, an error answer none), flow control is opened wide at start, PINGs and
 * SETTINGS are acknowledged. Output: one JSON line on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADERS 16
#define OUT_CAP (1 << 20)
#define IN_CAP (1 << 20)

typedef struct {
    uint32_t id;       /* 0 = free */
    double scheduled;  /* when the call was due (open loop) or sent */
    uint32_t data;     /* DATA bytes received */
} Stream;

typedef struct {
    int fd;
    uint32_t next_id;
    size_t cursor;     /* next body */
    int in_flight;
    double next_due;   /* open loop: when the next call is due */
    uint8_t *out;
    size_t out_len;
    uint8_t *in;
    size_t in_len;
    Stream *streams;
    int64_t send_window;
    int dead;
} Conn;

static const uint8_t *bodies;
static size_t bodies_len;
static size_t *offsets; /* start of each body in `bodies` */
static size_t n_bodies;
static uint8_t header_block[4096];
static size_t header_len;
static int streams_per_conn = 16;
static double rate = 0; /* calls/s in total; 0 = closed loop */
static double interval = 0; /* per connection, open loop */
static uint32_t *latencies;
static size_t n_lat, cap_lat;
static uint64_t done, ok, failed, data_bytes;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "grpcload: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* HPACK: an integer with an N-bit prefix. */
static void hp_int(uint32_t value, int bits, uint8_t first) {
    uint32_t max = (1u << bits) - 1;
    if (value < max) {
        header_block[header_len++] = first | value;
        return;
    }
    header_block[header_len++] = first | max;
    value -= max;
    while (value >= 128) {
        header_block[header_len++] = (value & 127) | 128;
        value >>= 7;
    }
    header_block[header_len++] = value;
}

static void hp_string(const char *s) {
    size_t n = strlen(s);
    hp_int(n, 7, 0); /* no Huffman */
    memcpy(header_block + header_len, s, n);
    header_len += n;
}

/* Literal header field without indexing: static-table name index, or a new name. */
static void hp_literal(int name_index, const char *name, const char *value) {
    if (name_index) {
        hp_int(name_index, 4, 0);
    } else {
        header_block[header_len++] = 0;
        hp_string(name);
    }
    hp_string(value);
}

static void put_frame(Conn *c, uint8_t type, uint8_t flags, uint32_t stream,
                      const uint8_t *payload, size_t len) {
    if (c->out_len + 9 + len > OUT_CAP) {
        fprintf(stderr, "grpcload: output buffer full\n");
        exit(1);
    }
    uint8_t *p = c->out + c->out_len;
    p[0] = len >> 16; p[1] = len >> 8; p[2] = len;
    p[3] = type; p[4] = flags;
    p[5] = (stream >> 24) & 0x7f; p[6] = stream >> 16; p[7] = stream >> 8; p[8] = stream;
    if (len) memcpy(p + 9, payload, len);
    c->out_len += 9 + len;
}

static Stream *stream_of(Conn *c, uint32_t id) {
    for (int i = 0; i < streams_per_conn; i++)
        if (c->streams[i].id == id) return &c->streams[i];
    return NULL;
}

static int start_call(Conn *c, double scheduled) {
    size_t index = c->cursor % n_bodies;
    size_t start = offsets[index];
    size_t len = (index + 1 < n_bodies ? offsets[index + 1] : bodies_len) - start;
    if (c->send_window < (int64_t)len) return 0;
    Stream *s = stream_of(c, 0);
    if (!s) return 0;
    c->cursor++;
    s->id = c->next_id;
    c->next_id += 2;
    s->scheduled = scheduled;
    s->data = 0;
    put_frame(c, 1, 0x4, s->id, header_block, header_len);          /* HEADERS, END_HEADERS */
    /* DATA frames of at most 16384 bytes (the default SETTINGS_MAX_FRAME_SIZE);
       END_STREAM on the last. */
    for (size_t sent = 0; sent < len || len == 0;) {
        size_t chunk = len - sent > 16384 ? 16384 : len - sent;
        put_frame(c, 0, sent + chunk == len ? 0x1 : 0, s->id, bodies + start + sent, chunk);
        sent += chunk;
        if (len == 0) break;
    }
    c->send_window -= len;
    c->in_flight++;
    return 1;
}

static void finish(Conn *c, Stream *s, int reset, double t) {
    done++;
    data_bytes += s->data;
    if (!reset && s->data > 5) ok++; else failed++;
    if (latencies) {
        if (n_lat == cap_lat) {
            cap_lat = cap_lat ? cap_lat * 2 : 1 << 16;
            latencies = realloc(latencies, cap_lat * sizeof(uint32_t));
        }
        latencies[n_lat++] = (uint32_t)((t - s->scheduled) * 1e6);
    }
    s->id = 0;
    c->in_flight--;
}

static void handle_frames(Conn *c, double t) {
    size_t pos = 0;
    while (c->in_len - pos >= 9) {
        uint8_t *f = c->in + pos;
        uint32_t len = (f[0] << 16) | (f[1] << 8) | f[2];
        uint8_t type = f[3], flags = f[4];
        uint32_t id = ((f[5] & 0x7f) << 24) | (f[6] << 16) | (f[7] << 8) | f[8];
        if (c->in_len - pos < 9 + len) break;
        uint8_t *payload = f + 9;
        Stream *s = id ? stream_of(c, id) : NULL;
        switch (type) {
        case 0: /* DATA */
            if (s) {
                s->data += len;
                if (flags & 1) finish(c, s, 0, t);
            }
            break;
        case 1: /* HEADERS */
        case 9: /* CONTINUATION */
            if (s && (flags & 1)) finish(c, s, 0, t);
            break;
        case 3: /* RST_STREAM */
            if (s) finish(c, s, 1, t);
            break;
        case 4: /* SETTINGS */
            if (!(flags & 1)) put_frame(c, 4, 1, 0, NULL, 0);
            break;
        case 6: /* PING */
            if (!(flags & 1)) put_frame(c, 6, 1, 0, payload, len);
            break;
        case 7: /* GOAWAY */
            c->dead = 1;
            break;
        case 8: /* WINDOW_UPDATE */
            if (id == 0 && len == 4)
                c->send_window += ((payload[0] & 0x7f) << 24) | (payload[1] << 16) |
                                  (payload[2] << 8) | payload[3];
            break;
        default:
            break;
        }
        pos += 9 + len;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
}

static void flush(Conn *c) {
    while (c->out_len) {
        ssize_t n = write(c->fd, c->out, c->out_len);
        if (n < 0) {
            if (errno == EAGAIN) return;
            c->dead = 1;
            return;
        }
        memmove(c->out, c->out + n, c->out_len - n);
        c->out_len -= n;
    }
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: grpcload HOST PORT PATH BODIES [-c N] [-m N] [-D S] [-r RATE] "
                        "[-o OFFSET] [-H 'name: value']... [-l FILE]\n");
        return 2;
    }
    const char *host = argv[1], *port = argv[2], *path = argv[3], *file = argv[4];
    int conns = 2;
    double duration = 10;
    size_t offset = 0;
    const char *lat_file = NULL;
    const char *extra[MAX_HEADERS];
    int n_extra = 0;
    for (int i = 5; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "grpcload: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "-c")) conns = atoi(v);
        else if (!strcmp(a, "-m")) streams_per_conn = atoi(v);
        else if (!strcmp(a, "-D")) duration = atof(v);
        else if (!strcmp(a, "-r")) rate = atof(v);
        else if (!strcmp(a, "-o")) offset = strtoull(v, NULL, 10);
        else if (!strcmp(a, "-l")) lat_file = v;
        else if (!strcmp(a, "-H") && n_extra < MAX_HEADERS) extra[n_extra++] = v;
        else { fprintf(stderr, "grpcload: unknown option %s\n", a); return 2; }
        i++;
    }
    if (conns < 1 || streams_per_conn < 1) { fprintf(stderr, "grpcload: bad -c/-m\n"); return 2; }

    FILE *fp = fopen(file, "rb");
    if (!fp) die(file);
    fseek(fp, 0, SEEK_END);
    bodies_len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc(bodies_len);
    if (fread(buf, 1, bodies_len, fp) != bodies_len) die("read");
    fclose(fp);
    bodies = buf;
    size_t cap = 1024;
    offsets = malloc(cap * sizeof(size_t));
    for (size_t pos = 0; pos + 5 <= bodies_len;) {
        if (n_bodies == cap) offsets = realloc(offsets, (cap *= 2) * sizeof(size_t));
        offsets[n_bodies++] = pos;
        pos += 5 + ((bodies[pos + 1] << 24) | (bodies[pos + 2] << 16) | (bodies[pos + 3] << 8) | bodies[pos + 4]);
    }
    if (!n_bodies) { fprintf(stderr, "grpcload: no bodies in %s\n", file); return 2; }
    if (lat_file) { cap_lat = 1 << 16; latencies = malloc(cap_lat * sizeof(uint32_t)); }

    char authority[300];
    snprintf(authority, sizeof authority, "%s:%s", host, port);
    header_block[header_len++] = 0x83; /* :method POST */
    header_block[header_len++] = 0x86; /* :scheme http */
    hp_literal(4, NULL, path);          /* :path */
    hp_literal(1, NULL, authority);     /* :authority */
    hp_literal(31, NULL, "application/grpc"); /* content-type */
    hp_literal(0, "te", "trailers");
    for (int i = 0; i < n_extra; i++) {
        char name[256];
        const char *colon = strchr(extra[i], ':');
        if (!colon || colon - extra[i] >= (long)sizeof name) continue;
        memcpy(name, extra[i], colon - extra[i]);
        name[colon - extra[i]] = 0;
        const char *value = colon + 1;
        while (*value == ' ') value++;
        hp_literal(0, name, value);
    }

    struct addrinfo hints = {0}, *addr;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &addr)) { fprintf(stderr, "grpcload: cannot resolve %s\n", host); return 1; }
    int ep = epoll_create1(0);
    Conn *cs = calloc(conns, sizeof(Conn));
    static const uint8_t settings[] = {0, 2, 0, 0, 0, 0, 0, 4, 0x7f, 0xff, 0xff, 0xff};
    uint32_t inc = 0x7fffffff - 65535;
    uint8_t wu[4] = {inc >> 24, inc >> 16, inc >> 8, inc};
    for (int i = 0; i < conns; i++) {
        Conn *c = &cs[i];
        c->fd = socket(addr->ai_family, SOCK_STREAM, 0);
        if (c->fd < 0 || connect(c->fd, addr->ai_addr, addr->ai_addrlen)) die("connect");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c->fd, F_SETFL, O_NONBLOCK);
        c->out = malloc(OUT_CAP);
        c->in = malloc(IN_CAP);
        c->streams = calloc(streams_per_conn, sizeof(Stream));
        c->next_id = 1;
        c->send_window = 65535;
        c->cursor = offset + (n_bodies * (size_t)i) / conns;
        memcpy(c->out, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
        c->out_len = 24;
        put_frame(c, 4, 0, 0, settings, sizeof settings);
        put_frame(c, 8, 0, 0, wu, 4);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    freeaddrinfo(addr);

    double start = now(), stop = start + duration;
    if (rate > 0) {
        interval = conns / rate;
        for (int i = 0; i < conns; i++) cs[i].next_due = start + interval * i / conns;
    }
    struct epoll_event events[64];
    double t = start;
    while (t < stop) {
        for (int i = 0; i < conns; i++) {
            Conn *c = &cs[i];
            if (c->dead) continue;
            if (rate > 0) {
                while (c->next_due <= t && c->in_flight < streams_per_conn && start_call(c, c->next_due))
                    c->next_due += interval;
            } else {
                while (c->in_flight < streams_per_conn && start_call(c, t)) {}
            }
            flush(c);
        }
        int wait_ms = 50;
        if (rate > 0) {
            double soonest = stop;
            for (int i = 0; i < conns; i++)
                if (!cs[i].dead && cs[i].in_flight < streams_per_conn && cs[i].next_due < soonest)
                    soonest = cs[i].next_due;
            double dt = soonest - now();
            wait_ms = dt <= 0 ? 0 : (int)(dt * 1000) + (dt * 1000 > (int)(dt * 1000));
            if (wait_ms > 50) wait_ms = 50;
        }
        int n = epoll_wait(ep, events, 64, wait_ms);
        t = now();
        for (int k = 0; k < n; k++) {
            Conn *c = events[k].data.ptr;
            if (events[k].events & (EPOLLERR | EPOLLHUP)) c->dead = 1;
            if (events[k].events & EPOLLIN) {
                for (;;) {
                    ssize_t got = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);
                    if (got > 0) {
                        c->in_len += got;
                        handle_frames(c, t);
                        continue;
                    }
                    if (got == 0 || errno != EAGAIN) c->dead = 1;
                    break;
                }
            }
        }
    }
    double elapsed = now() - start;
    int dead = 0;
    for (int i = 0; i < conns; i++)
        if (cs[i].dead) fprintf(stderr, "grpcload: connection %d closed by the server\n", i);
    for (int i = 0; i < conns; i++) dead += cs[i].dead;
    if (lat_file) {
        FILE *lf = fopen(lat_file, "w");
        if (!lf) die(lat_file);
        for (size_t i = 0; i < n_lat; i++) fprintf(lf, "%u\n", latencies[i]);
        fclose(lf);
    }
    printf("{\"done\": %llu, \"ok\": %llu, \"failed\": %llu, \"seconds\": %.3f, \"rps\": %.1f, "
           "\"data_bytes\": %llu, \"dead_connections\": %d}\n",
           (unsigned long long)done, (unsigned long long)ok, (unsigned long long)failed, elapsed,
           done / elapsed, (unsigned long long)data_bytes, dead);
    return dead == conns ? 1 : 0;
}
