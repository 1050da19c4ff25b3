/* A fake HTTP server for the tests of what probes other services
 * (tests/unit/test_health.c, tests/integration/test_status.c): it listens
 * on 127.0.0.1 on a free port and answers every connection with the same
 * bytes, whatever was asked; or never accepts at all; or, routed, with what
 * a function makes of the request (a fake schema registry,
 * tests/unit/test_event.c). Header-only (static definitions): each test is
 * its own executable. */
#ifndef OL_TEST_FAKE_HTTP_H
#define OL_TEST_FAKE_HTTP_H

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FAKE_HTTP static __attribute__((unused))

typedef struct fake_s {
    int fd;
    unsigned port;
    const char *answer; /* written after the request is read; NULL: accept nothing, answer nothing */
    size_t answer_len;
    int connections; /* to serve before the thread ends; < 0: until fake_stop */
    /* routed: the answer to the request req[0..len) (NUL-terminated), new
     * (freed after it is written); answer is then unused */
    char *(*route)(const char *req, size_t len, size_t *answer_len);
    pthread_t thread;
} fake_t;

/* Reads one HTTP request whole (its headers, then Content-Length bytes of
 * body: a schema registered is a few KiB) into req, NUL-terminated; the
 * bytes read, or what came before the peer stopped or req filled up. */
static ssize_t read_request(int c, char *req, size_t size) {
    size_t got = 0;
    for (;;) {
        req[got] = '\0';
        const char *end = strstr(req, "\r\n\r\n");
        if (end) {
            const char *cl = strcasestr(req, "\r\nContent-Length:");
            size_t body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
            if (got >= (size_t)(end + 4 - req) + body)
                return (ssize_t)got;
        }
        if (got + 1 >= size)
            return (ssize_t)got;
        ssize_t k = read(c, req + got, size - 1 - got);
        if (k <= 0)
            return (ssize_t)got;
        got += (size_t)k;
    }
}

static void *fake_run(void *arg) {
    fake_t *f = arg;
    for (int i = 0; f->connections < 0 || i < f->connections; i++) {
        int c = accept(f->fd, NULL, NULL);
        if (c < 0)
            break; /* the listening socket was shut down */
        char req[16384];
        ssize_t got = f->route ? read_request(c, req, sizeof(req))
                               : read(c, req, sizeof(req) - 1); /* one read holds a small request */
        req[got > 0 ? got : 0] = '\0';
        size_t len = f->answer_len;
        char *routed = f->route ? f->route(req, got > 0 ? (size_t)got : 0, &len) : NULL;
        const char *answer = routed ? routed : f->answer;
        for (size_t off = 0; off < len;) {
            ssize_t k = write(c, answer + off, len - off);
            if (k <= 0)
                break;
            off += (size_t)k;
        }
        free(routed);
        close(c);
    }
    return NULL;
}

typedef char *(*fake_route_t)(const char *req, size_t len, size_t *answer_len);

FAKE_HTTP void fake_open(fake_t *f, const char *answer, size_t len, int connections, fake_route_t route) {
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(f->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    cr_assert_eq(bind(f->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(f->fd, 16), 0);
    socklen_t sl = sizeof(sa);
    getsockname(f->fd, (struct sockaddr *)&sa, &sl);
    f->port = ntohs(sa.sin_port);
    f->answer = answer;
    f->answer_len = len;
    f->connections = connections;
    f->route = route;
    if (answer)
        cr_assert_eq(pthread_create(&f->thread, NULL, fake_run, f), 0);
}

/* Listens on 127.0.0.1:<free port>; with an answer (len bytes), serves it to
 * `connections` connections (< 0: every one until fake_stop) on a thread;
 * without one, never accepts (a connect succeeds through the backlog, then
 * nothing comes). */
FAKE_HTTP void fake_start(fake_t *f, const char *answer, size_t len, int connections) {
    fake_open(f, answer, len, connections, NULL);
}

/* Listens the same way, answering each request with route's answer, on a
 * thread, until fake_stop. */
FAKE_HTTP void fake_start_routed(fake_t *f, fake_route_t route) {
    fake_open(f, "", 0, -1, route);
}

/* Stops listening (the thread ends at its next accept) and waits for the thread. */
FAKE_HTTP void fake_stop(fake_t *f) {
    shutdown(f->fd, SHUT_RDWR); /* wakes the accept */
    if (f->answer)
        pthread_join(f->thread, NULL);
    close(f->fd);
}

/* A port nothing listens on: bound, then closed. */
FAKE_HTTP unsigned closed_port(void) {
    fake_t f;
    fake_start(&f, NULL, 0, 0);
    close(f.fd);
    return f.port;
}

#endif
