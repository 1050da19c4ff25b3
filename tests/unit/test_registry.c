/* The schema registry client against a one-answer server of the test's own:
 * the URL it accepts, the requests it sends (method, path, body) and how it
 * reads the API's answers. No registry needed (test_schemas meets the real
 * one). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/base/registry.h"

/* Accepts one connection, keeps what it was sent (head and a
 * Content-Length body), answers `answer` and closes. */
typedef struct fake_s {
    int fd, port;
    const char *answer;
    char request[8192];
    pthread_t thread;
} fake_t;

static void *serve(void *arg) {
    fake_t *f = arg;
    int c = accept(f->fd, NULL, NULL);
    if (c < 0)
        return NULL;
    size_t len = 0;
    for (;;) {
        ssize_t k = recv(c, f->request + len, sizeof(f->request) - 1 - len, 0);
        if (k <= 0)
            break;
        len += (size_t)k;
        f->request[len] = '\0';
        char *body = strstr(f->request, "\r\n\r\n");
        const char *cl = strcasestr(f->request, "content-length:");
        if (body && (!cl || strlen(body + 4) >= (size_t)atoi(cl + 15)))
            break;
    }
    ssize_t sent = send(c, f->answer, strlen(f->answer), MSG_NOSIGNAL);
    (void)sent;
    close(c);
    return NULL;
}

static void fake_start(fake_t *f, int status, const char *body) {
    static char answer[4096];
    snprintf(answer, sizeof(answer), "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             status, strlen(body), body);
    memset(f, 0, sizeof(*f));
    f->answer = answer;
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    cr_assert(f->fd >= 0 && bind(f->fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(f->fd, 1) == 0 &&
              getsockname(f->fd, (struct sockaddr *)&a, &alen) == 0);
    f->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&f->thread, NULL, serve, f), 0);
}

static void fake_join(fake_t *f) {
    pthread_join(f->thread, NULL);
    close(f->fd);
}

static ol_registry_t *client_of(const fake_t *f) {
    char url[128], errstr[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/apis/ccompat/v6/", f->port);
    ol_registry_t *r;
    cr_assert_eq(ol_registry_new(url, 2000, &r, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    return r;
}

/* fake_start, then a client of it (destroy it; fake_join the server). */
static ol_registry_t *fake_client(fake_t *f, int status, const char *body) {
    fake_start(f, status, body);
    return client_of(f);
}

Test(registry, takes_plain_http_urls_only) {
    char errstr[256];
    ol_registry_t *r = NULL;
    cr_expect_eq(ol_registry_new("https://reg:443", 1000, &r, errstr, sizeof(errstr)), OL_ERR_UNSUPPORTED);
    cr_expect(strstr(errstr, "https is not supported"), "%s", errstr);
    cr_expect_eq(ol_registry_new("reg:8081", 1000, &r, errstr, sizeof(errstr)), OL_ERR_CONFIG);
    cr_expect_eq(ol_registry_new("", 1000, &r, errstr, sizeof(errstr)), OL_ERR_CONFIG);
    cr_expect_eq(ol_registry_new("http://user:pw@reg:1/", 1000, &r, errstr, sizeof(errstr)), OL_ERR_CONFIG);
    cr_expect_eq(ol_registry_new("http://reg:1/x?y=1", 1000, &r, errstr, sizeof(errstr)), OL_ERR_CONFIG);
    cr_expect_null(r);
    cr_assert_eq(ol_registry_new("http://reg", 1000, &r, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_str_eq(ol_registry_url(r), "http://reg");
    ol_registry_destroy(r);
}

Test(registry, registers_with_a_json_body_and_reads_the_id) {
    fake_t f;
    ol_registry_t *r = fake_client(&f, 200, "{\"id\":42}");
    char errstr[256];
    int id = 0;
    cr_assert_eq(ol_registry_register(r, "t-x.E", "{\"type\":\"record\",\"name\":\"E\",\"fields\":[]}", &id, errstr,
                                      sizeof(errstr)),
                 OL_ERR_OK, "%s", errstr);
    fake_join(&f);
    cr_expect_eq(id, 42);
    cr_expect(!strncmp(f.request, "POST /apis/ccompat/v6/subjects/t-x.E/versions HTTP/1.1\r\n", 56), "%s", f.request);
    cr_expect(strcasestr(f.request, "Content-Type: application/vnd.schemaregistry.v1+json"), "%s", f.request);
    /* the schema as a JSON string, its quotes escaped */
    cr_expect(strstr(f.request, "\"schema\":\"{\\\"type\\\":\\\"record\\\""), "%s", f.request);
    cr_expect(strstr(f.request, "\"schemaType\":\"AVRO\""), "%s", f.request);
    ol_registry_destroy(r);
}

Test(registry, a_subject_is_percent_encoded_in_the_path) {
    fake_t f;
    ol_registry_t *r = fake_client(&f, 200, "{\"compatibility\":\"FULL\"}");
    char errstr[256];
    cr_assert_eq(ol_registry_set_compatibility(r, "a b/c", "FULL", errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    fake_join(&f);
    cr_expect(!strncmp(f.request, "PUT /apis/ccompat/v6/config/a%20b%2Fc HTTP/1.1", 46), "%s", f.request);
    cr_expect(strstr(f.request, "{\"compatibility\":\"FULL\"}"), "%s", f.request);
    ol_registry_destroy(r);
}

Test(registry, a_refused_schema_is_invalid_with_the_registrys_message) {
    fake_t f;
    ol_registry_t *r = fake_client(&f, 409, "{\"error_code\":409,\"message\":\"Incompatible artifact: x\"}");
    char errstr[256];
    int id = -1;
    cr_expect_eq(ol_registry_register(r, "s", "{}", &id, errstr, sizeof(errstr)), OL_ERR_INVALID);
    fake_join(&f);
    cr_expect_str_eq(errstr, "Incompatible artifact: x");
    ol_registry_destroy(r);
}

Test(registry, check_reads_compatible_incompatible_and_unregistered) {
    struct {
        int status;
        const char *body;
        bool registered, compatible;
        const char *reason;
    } cases[] = {
        {200, "{\"is_compatible\":true}", true, true, ""},
        {200, "{\"is_compatible\":false,\"reason\":null}", true, false, ""},
        {200, "{\"is_compatible\":false,\"messages\":[\"a gone\",\"b new\"]}", true, false, "a gone; b new"},
        {404, "{\"error_code\":40401,\"message\":\"no subject\"}", false, true, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fake_t f;
        ol_registry_t *r = fake_client(&f, cases[i].status, cases[i].body);
        char errstr[256], reason[256];
        bool registered, compatible;
        cr_assert_eq(
            ol_registry_check(r, "s", "{}", &registered, &compatible, reason, sizeof(reason), errstr, sizeof(errstr)),
            OL_ERR_OK, "case %zu: %s", i, errstr);
        fake_join(&f);
        cr_expect(strstr(f.request, "POST /apis/ccompat/v6/compatibility/subjects/s/versions/latest"), "%s", f.request);
        cr_expect_eq(registered, cases[i].registered, "case %zu", i);
        cr_expect_eq(compatible, cases[i].compatible, "case %zu", i);
        cr_expect_str_eq(reason, cases[i].reason, "case %zu", i);
        ol_registry_destroy(r);
    }
}

Test(registry, a_server_error_names_the_url) {
    fake_t f;
    ol_registry_t *r = fake_client(&f, 503, "{\"error_code\":50001,\"message\":\"storage down\"}");
    char errstr[512];
    bool found;
    int id, version;
    cr_expect_eq(ol_registry_lookup(r, "s", "{}", &found, &id, &version, errstr, sizeof(errstr)), OL_ERR_UNREACHABLE);
    fake_join(&f);
    cr_expect(strstr(errstr, "schema registry at http://127.0.0.1:"), "%s", errstr);
    cr_expect(strstr(errstr, "answered 503: storage down"), "%s", errstr);
    ol_registry_destroy(r);
}
