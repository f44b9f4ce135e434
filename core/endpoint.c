/* endpoint: see endpoint.h. */
#include "core/endpoint.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include <zmq.h>

/* "PORT": digits or "*". */
static bool s_is_port(const char *s)
{
    if (strcmp(s, "*") == 0)
        return true;
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

int endpoint_normalize(const char *text, char *out, size_t size, err_t *err)
{
    if (!text || !*text)
        return err_set(err, EINVAL, "no endpoint given: give " ENDPOINT_FORMS);
    int n = -1;
    if (strstr(text, "://")) {
        n = snprintf(out, size, "%s", text);
    } else {
        /* HOST:PORT with HOST "[...]" or without ':' and '/' */
        const char *colon = strrchr(text, ':');
        bool ok = colon && colon > text && s_is_port(colon + 1);
        if (ok && text[0] == '[')
            ok = colon[-1] == ']' && colon - text > 2;
        else if (ok)
            ok = memchr(text, ':', (size_t)(colon - text)) == NULL &&
                 memchr(text, '/', (size_t)(colon - text)) == NULL;
        if (ok)
            n = snprintf(out, size, "tcp://%s", text);
    }
    if (n < 0 || (size_t)n >= size)
        return err_set(err, EINVAL, "'%s' is not an endpoint: give " ENDPOINT_FORMS, text);
    return 0;
}

typedef int s_zmq_fn(void *socket, const char *endpoint);

static int s_attach(void *socket, const char *text, s_zmq_fn *fn, const char *verb,
                    err_t *err)
{
    char ep[ENDPOINT_MAX];
    if (endpoint_normalize(text, ep, sizeof ep, NULL) < 0)
        return err_set(err, EINVAL, "cannot %s %s: not an endpoint (give " ENDPOINT_FORMS
                       ")", verb, text ? text : "");
    int ipv6 = 1;
    if (strncmp(ep, "tcp://[", 7) == 0 &&
        zmq_setsockopt(socket, ZMQ_IPV6, &ipv6, sizeof ipv6) < 0)
        return err_set(err, errno, "cannot %s %s: cannot turn on IPv6: %s", verb, text,
                       zmq_strerror(errno));
    if (fn(socket, ep) < 0) {
        int code = errno;
        if (code == EINVAL)
            return err_set(err, code, "cannot %s %s: %s (give " ENDPOINT_FORMS ")", verb,
                           text, zmq_strerror(code));
        return err_set(err, code, "cannot %s %s: %s", verb, text, zmq_strerror(code));
    }
    return 0;
}

int endpoint_connect(void *socket, const char *text, err_t *err)
{
    return s_attach(socket, text, zmq_connect, "connect to", err);
}

int endpoint_bind(void *socket, const char *text, err_t *err)
{
    return s_attach(socket, text, zmq_bind, "bind", err);
}

bool endpoint_is_local(const char *endpoint)
{
    char ep[ENDPOINT_MAX];
    if (endpoint_normalize(endpoint, ep, sizeof ep, NULL) < 0)
        return false;
    if (strncmp(ep, "ipc://", 6) == 0 || strncmp(ep, "inproc://", 9) == 0)
        return true;
    if (strncmp(ep, "tcp://", 6) != 0)
        return false;
    const char *host = ep + 6;
    const char *colon = strrchr(host, ':');
    size_t n = colon ? (size_t)(colon - host) : strlen(host);
    char name[ENDPOINT_MAX];
    memcpy(name, host, n);
    name[n] = '\0';
    /* "tcp://IFACE;HOST:PORT" names a source: such a form is not local */
    struct in_addr v4;
    return (inet_pton(AF_INET, name, &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127) ||
           strcmp(name, "localhost") == 0 || strcmp(name, "[::1]") == 0;
}

void endpoint_warn_plain(FILE *log, const char *prog, const char *endpoint, bool curve)
{
    if (curve || endpoint_is_local(endpoint))
        return;
    fprintf(log, "%s: warning: %s is bound in plain TCP without CURVE: anyone who can "
            "reach it can send requests and read the traffic; bind 127.0.0.1 or use "
            "--curve-key (docs/DEPLOY.md, \"Security\")\n", prog, endpoint);
}
