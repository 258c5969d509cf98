/*
 * The load driver of bench.sh's `ranges` section: COUNT GETs of PATH with
 * `Range: bytes=a-b` (LEN bytes at a random offset a in a file of SIZE
 * bytes), CONNS keep-alive connections to 127.0.0.1:PORT kept busy at once
 * by one thread (epoll). Every answer is checked: status 206, a
 * Content-Length of LEN, and LEN body bytes read; an answer that is not is
 * counted as bad (bench.sh fails the run on any).
 *
 *   range_get PORT PATH COUNT SIZE LEN SEED CONNS TIMEOUT_S
 *   -> "RESULT answered bad seconds cpu_s" (cpu_s: this process, user+sys)
 *
 * Why not wrk with a Lua script (what was tried first): to see each status
 * and length, wrk needs a response() callback, and with one it buffers
 * every body and copies it into a Lua string: against nginx on 2 cores
 * that cost about a third of wrk's rate, so wrk became the bottleneck.
 * curl --parallel checks each answer with -w but reached about half of
 * nginx's rate at a fraction of a core (its event loop, not the server,
 * set the pace). This program parses each header, counts each body's
 * bytes without copying them (recv with MSG_TRUNC), and prints its CPU
 * time so that bench.sh can show how much of a core the driver used (its
 * ceiling).
 *
 * Offsets: the i-th request's offset is the i-th output of splitmix64
 * seeded with SEED, so every server gets the same offsets.
 * Build: cc -O2 -o range_get range_get.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { HDR_MAX = 16384, SCRATCH = 1 << 18 };

struct conn {
    int fd;
    int busy;             /* a request is in flight */
    size_t hdr_len;       /* bytes of header read so far */
    long long body_left;  /* -1: still reading the header */
    int bad;              /* this answer failed a check */
    int closing;          /* the answer said Connection: close */
    char hdr[HDR_MAX];
};

static int port, conns;
static const char *path;
static long long count, size, len;
static uint64_t rng;
static long long issued, answered, bad;
static char scratch[SCRATCH];

static uint64_t splitmix64(void) {
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "range_get: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int open_conn(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) die("fcntl");
    return fd;
}

/* Sends the next request on c (blocking write: a request is ~150 bytes and
 * the socket buffer is empty between requests). */
static void send_next(struct conn *c) {
    char req[1024];
    long long a = (long long)(splitmix64() % (uint64_t)(size - len + 1));
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nRange: bytes=%lld-%lld\r\n\r\n",
                     path, port, a, a + len - 1);
    for (int off = 0; off < n;) {
        ssize_t w = write(c->fd, req + off, n - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EPIPE || errno == ECONNRESET) break; /* read sees the close */
            die("write");
        }
        off += w;
    }
    issued++;
    c->busy = 1;
    c->hdr_len = 0;
    c->body_left = -1;
    c->bad = 0;
    c->closing = 0;
}

/* Parses the header in c->hdr (ends at end); returns the body length. */
static long long parse_header(struct conn *c, char *end) {
    *end = 0;
    int status = 0;
    if (sscanf(c->hdr, "HTTP/1.%*d %d", &status) != 1) status = 0;
    if (status != 206) c->bad = 1;
    long long cl = -1;
    for (char *p = strstr(c->hdr, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, "content-length:", 15) == 0) cl = atoll(p + 17);
        if (strncasecmp(p + 2, "connection:", 11) == 0 && strcasestr(p + 13, "close") &&
            strcasestr(p + 13, "close") < strstr(p + 2, "\r\n"))
            c->closing = 1;
    }
    if (cl != len) c->bad = 1;
    return cl < 0 ? 0 : cl;
}

static void reconnect(struct conn *c);

static void finish(struct conn *c) {
    answered++;
    if (c->bad) bad++;
    c->busy = 0;
    /* nginx closes a connection after keepalive_requests (1000) answers,
     * saying so in the last one: open another, as a browser would. */
    if (c->closing) reconnect(c);
    else if (issued < count) send_next(c);
}

/* Reads what is there on c; returns 0 if the server closed the connection. */
static int on_readable(struct conn *c) {
    for (;;) {
        ssize_t r;
        if (c->body_left < 0) {
            r = read(c->fd, c->hdr + c->hdr_len, HDR_MAX - 1 - c->hdr_len);
        } else {
            /* Body bytes are counted, not copied: on TCP, MSG_TRUNC makes
             * the kernel drop them (the bytes themselves are compared with
             * the file by bench.sh, on a sample, outside the timed runs).
             * The copy would be most of this driver's CPU per answer. */
            size_t want = c->body_left < SCRATCH ? (size_t)c->body_left : SCRATCH;
            if (want == 0) want = SCRATCH;
            r = recv(c->fd, scratch, want, MSG_TRUNC);
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) return 1;
            die("read");
        }
        if (r == 0) return 0;
        if (!c->busy) { /* bytes nobody asked for */
            bad++;
            continue;
        }
        if (c->body_left < 0) {
            c->hdr_len += r;
            c->hdr[c->hdr_len] = 0;
            char *e = strstr(c->hdr, "\r\n\r\n");
            if (!e) {
                if (c->hdr_len >= HDR_MAX - 1) {
                    fprintf(stderr, "range_get: header over %d bytes\n", HDR_MAX);
                    exit(1);
                }
                continue;
            }
            size_t extra = c->hdr_len - (size_t)(e + 4 - c->hdr);
            c->body_left = parse_header(c, e + 2) - (long long)extra;
            if (c->body_left < 0) { /* more than one answer's bytes */
                c->bad = 1;
                c->body_left = 0;
            }
        } else {
            c->body_left -= r;
        }
        if (c->body_left == 0) finish(c);
    }
}

static int ep;

static void reconnect(struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (issued >= count) return;
    c->fd = open_conn();
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) die("epoll_ctl");
    send_next(c);
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: range_get PORT PATH COUNT SIZE LEN SEED CONNS TIMEOUT_S\n");
        return 2;
    }
    port = atoi(argv[1]);
    path = argv[2];
    count = atoll(argv[3]);
    size = atoll(argv[4]);
    len = atoll(argv[5]);
    rng = strtoull(argv[6], NULL, 10);
    conns = atoi(argv[7]);
    double timeout = atof(argv[8]);
    if (port <= 0 || count <= 0 || len <= 0 || size < len || conns <= 0 || timeout <= 0) {
        fprintf(stderr, "range_get: bad arguments\n");
        return 2;
    }
    if (conns > count) conns = (int)count;
    signal(SIGPIPE, SIG_IGN); /* a write to a closed connection: EPIPE, handled */
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct conn *cs = calloc(conns, sizeof *cs);
    if (!cs) die("calloc");
    /* Connect first, then start the clock: the rate is of requests, not
     * of connection set-up (both servers keep connections alive). */
    for (int i = 0; i < conns; i++) {
        cs[i].fd = open_conn();
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) != 0) die("epoll_ctl");
    }
    double t0 = now(), deadline = t0 + timeout;
    for (int i = 0; i < conns; i++) send_next(&cs[i]);
    struct epoll_event evs[256];
    while (answered < count) {
        double left = deadline - now();
        if (left <= 0) {
            fprintf(stderr, "range_get: %lld of %lld answers after %.0f s\n", answered, count, timeout);
            return 1;
        }
        int n = epoll_wait(ep, evs, 256, (int)(left * 1000) + 1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!on_readable(c)) {
                /* Closed by the server: mid-answer it is an error; before
                 * any byte of an answer (an idle connection closed as the
                 * request went out), send that request again on a new one. */
                if (c->busy && (c->hdr_len > 0 || c->body_left >= 0)) {
                    fprintf(stderr, "range_get: connection closed mid-answer\n");
                    return 1;
                }
                if (c->busy) issued--;
                c->busy = 0;
                reconnect(c);
            }
        }
    }
    double secs = now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("RESULT %lld %lld %.6f %.3f\n", answered, bad, secs, cpu);
    return 0;
}
