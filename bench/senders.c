/* The benchmark's C senders: the fastest client each receiver can have, so that a two-process
 * row measures the receiver. Compiled at bench time into a temporary directory.
 *
 *   senders MODE TARGET N MSGLEN TAG [BATCH]
 *
 *   dgram    TARGET = unix datagram socket path; one RFC 3164 datagram per send() (rsyslog imuxsock)
 *   tcp      TARGET = port on 127.0.0.1; one LF-terminated syslog line per write() (rsyslog imtcp)
 *   journal  TARGET = journald native socket; one native-protocol datagram per send()
 *   journal-relayed  the same, but each datagram holds the fields virlogd's journald output
 *            writes for a record relayed for a client (virlogd/outputs/journald.py), the client
 *            being another live process (our parent, the harness), as it is behind virlogd:
 *            journald then keeps two processes' contexts per entry, the sender's and the
 *            object's. What journald alone does with virlogd's entries
 *   virlogd  TARGET = virlogd client socket; greeting, then BATCH frames per write();
 *            TAG is the records' source
 *
 * Every message holds the token BENCHMSG (the receivers' files are counted by it) and is
 * MSGLEN bytes on the wire (the payload is padded). The last journald datagram also carries
 * BENCH_END=TAG so the harness can see when journald has stored everything.

 * Prints "ready" once set up and waits for a byte on stdin (the harness's go); then prints
 * "start <monotonic seconds>" just before the first send and "end <seconds>" after
 * the last, on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) { perror(what); exit(2); }

static int unix_sock(int type, const char *path) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, type, 0);
    if (fd < 0) die("socket");
    strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
    return fd;
}

static void write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; die("write"); }
        p += w; n -= (size_t)w;
    }
}

static void send_one(int fd, const char *p, size_t n) {
    for (;;) {
        if (send(fd, p, n, 0) >= 0) return;
        if (errno == EINTR) continue;
        if (errno == ENOBUFS || errno == EAGAIN) { usleep(100); continue; }
        die("send");
    }
}

/* "BENCHMSG <seq> xxxx..." padded to exactly len bytes (len >= 24) */
static size_t body(char *out, long seq, int len) {
    int n = snprintf(out, (size_t)len + 1, "BENCHMSG %09ld ", seq);
    for (int i = n; i < len; i++) out[i] = 'a' + (i % 26);
    out[len] = 0;
    return (size_t)len;
}

/* every sender is set up (connected, buffers built) before the harness says go: several
 * senders then start together, and no start-up cost falls inside the measured span */
static double go(void) {
    char c;
    printf("ready\n"); fflush(stdout);
    if (read(0, &c, 1) < 0) die("read go");
    return now();
}

static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }  /* little-endian host */

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: senders MODE TARGET N MSGLEN TAG [BATCH]\n"); return 2; }
    const char *mode = argv[1], *target = argv[2], *tag = argv[5];
    long n = atol(argv[3]);
    int msglen = atoi(argv[4]);
    int batch = argc > 6 ? atoi(argv[6]) : 1;
    char msg[4096], pkt[8192];
    double t0 = 0;

    if (!strcmp(mode, "dgram")) {
        int fd = unix_sock(SOCK_DGRAM, target);
        int head = snprintf(pkt, sizeof pkt, "<14>Nov 25 10:00:00 bench[%d]: ", (int)getpid());
        int blen = msglen - head;
        t0 = go(); printf("start %.6f\n", t0); fflush(stdout);
        for (long i = 0; i < n; i++) {
            body(pkt + head, i, blen);
            send_one(fd, pkt, (size_t)msglen);
        }
    } else if (!strcmp(mode, "tcp")) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(target))};
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("tcp connect");
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int head = snprintf(pkt, sizeof pkt, "<14>Nov 25 10:00:00 bench[%d]: ", (int)getpid());
        int blen = msglen - head - 1;
        t0 = go(); printf("start %.6f\n", t0); fflush(stdout);
        for (long i = 0; i < n; i++) {
            body(pkt + head, i, blen);
            pkt[msglen - 1] = '\n';
            write_all(fd, pkt, (size_t)msglen);
        }
    } else if (!strcmp(mode, "journal") || !strcmp(mode, "journal-relayed")) {
        int fd = unix_sock(SOCK_DGRAM, target);
        char head[512];
        int h, blen;
        if (!strcmp(mode, "journal")) {
            h = snprintf(head, sizeof head, "SYSLOG_IDENTIFIER=bench\nPRIORITY=6\nBENCH_RUN=%s\nMESSAGE=", tag);
            blen = msglen - h - 1;
        } else {        /* virlogd's field order; MESSAGE last here, the same bytes */
            int pid = (int)getppid();    /* the client virlogd would relay for: not us */
            h = snprintf(head, sizeof head, "PRIORITY=6\nSYSLOG_FACILITY=3\nLIBVIRT_SOURCE=%s\n"
                         "SYSLOG_IDENTIFIER=%s\nSYSLOG_PID=%d\nOBJECT_PID=%d\nOBJECT_UID=%d\n"
                         "OBJECT_GID=%d\nMESSAGE=", tag, tag, pid, pid, (int)getuid(),
                         (int)getgid());
            blen = msglen;           /* the message virlogd's C client row sends */
        }
        if (blen < 24) blen = 24;
        t0 = go(); printf("start %.6f\n", t0); fflush(stdout);
        for (long i = 0; i < n; i++) {
            memcpy(pkt, head, (size_t)h);
            body(pkt + h, i, blen);
            size_t len = (size_t)(h + blen);
            pkt[len++] = '\n';
            if (i == n - 1) len += (size_t)sprintf(pkt + len, "BENCH_END=%s\n", tag);
            send_one(fd, pkt, len);
        }
    } else if (!strcmp(mode, "virlogd")) {
        /* protocol v1 (docs/protocol.md): u32 L, u8 type, u8 prio, u16 nfields, u32 line,
         * f64 time, 6 x u32 lengths, then source and message */
        int fd = unix_sock(SOCK_STREAM, target);
        write_all(fd, "VIRLOGD\x01", 8);
        const char *source = tag;   /* the record's source: filters match it */
        size_t slen = strlen(source);
        int blen = msglen;
        size_t flen = 44 + slen + (size_t)blen;
        if (batch < 1) batch = 1;
        size_t cap = flen * (size_t)batch;
        unsigned char *buf = malloc(cap);
        if (!buf) die("malloc");
        t0 = go(); printf("start %.6f\n", t0); fflush(stdout);
        long i = 0;
        while (i < n) {
            size_t used = 0;
            for (int b = 0; b < batch && i < n; b++, i++) {
                unsigned char *f = buf + used;
                struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);
                double t = ts.tv_sec + ts.tv_nsec / 1e9;
                put32(f, (uint32_t)(flen - 4));
                f[4] = 1; f[5] = 2; f[6] = 0; f[7] = 0;
                put32(f + 8, 0);
                memcpy(f + 12, &t, 8);
                put32(f + 20, (uint32_t)slen); put32(f + 24, (uint32_t)blen);
                put32(f + 28, 0); put32(f + 32, 0); put32(f + 36, 0); put32(f + 40, 0);
                memcpy(f + 44, source, slen);
                body(msg, i, blen);
                memcpy(f + 44 + slen, msg, (size_t)blen);
                used += flen;
            }
            write_all(fd, (const char *)buf, used);
        }
        /* close only after the daemon has routed everything: it closes once it saw our EOF */
        printf("end %.6f\n", now()); fflush(stdout);
        shutdown(fd, SHUT_WR);
        char c; while (read(fd, &c, 1) > 0) {}
        return 0;
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("end %.6f\n", now());
    return 0;
}
