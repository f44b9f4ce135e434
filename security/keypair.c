/* keypair: see keypair.h. */
#include "security/keypair.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "core/mem.h"
#include "core/path.h"

enum { S_MAX_FILE = 4096 }; /* a key file is a few lines; larger is not one */

bool keypair_curve_available(void)
{
    return zmq_has("curve") != 0;
}

int keypair_generate(keypair_t *out, err_t *err)
{
    if (!keypair_curve_available())
        return err_set(err, ENOTSUP, "this ZeroMQ was built without CURVE (libsodium)");
    keypair_t kp;
    if (zmq_curve_keypair(kp.public_key, kp.secret_key) < 0)
        return err_set(err, errno, "cannot make a CURVE key pair: %s", zmq_strerror(errno));
    *out = kp;
    return 0;
}

int keypair_decode(uint8_t out[KEYPAIR_BYTES], const char *z85)
{
    if (!z85 || strlen(z85) != KEYPAIR_Z85_LEN || !zmq_z85_decode(out, z85)) {
        errno = EINVAL;
        return -1;
    }
    return 0;
}

static bool s_name_ok(const char *name)
{
    if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' || *c == '-'))
            return false;
    return true;
}

/* Creates path (never overwrites) with mode and writes text. */
static int s_write_new(const char *path, mode_t mode, const char *text, err_t *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return err_set(err, errno, "cannot create %s: %s", path, strerror(errno));
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    int e = n < 0 ? errno : EIO;
    if (n != (ssize_t)len || fsync(fd) < 0 || close(fd) < 0) {
        if (n == (ssize_t)len)
            e = errno;
        close(fd);
        unlink(path);
        return err_set(err, e, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

int keypair_save(const keypair_t *self, const char *dir, const char *name, err_t *err)
{
    if (!s_name_ok(name))
        return err_set(err, EINVAL, "key name '%s': use letters, digits, '.', '_' and '-'",
                       name);
    char key_name[256], pub_name[256], text[512];
    if (snprintf(key_name, sizeof key_name, "%s.key", name) >= (int)sizeof key_name ||
        snprintf(pub_name, sizeof pub_name, "%s.pub", name) >= (int)sizeof pub_name)
        return err_set(err, EINVAL, "key name '%s' is too long", name);
    char *key_path = path_join(dir, key_name), *pub_path = path_join(dir, pub_name);
    int rc = -1;
    if (!key_path || !pub_path) {
        err_set(err, ENOMEM, "out of memory for a path");
        goto done;
    }
    snprintf(text, sizeof text,
             "# moecluster CURVE key pair '%s': keep this file private (mode 0600)\n"
             "public-key = \"%s\"\nsecret-key = \"%s\"\n",
             name, self->public_key, self->secret_key);
    if (s_write_new(key_path, 0600, text, err) < 0)
        goto done;
    snprintf(text, sizeof text, "# moecluster CURVE public key '%s'\npublic-key = \"%s\"\n",
             name, self->public_key);
    if (s_write_new(pub_path, 0644, text, err) < 0) {
        unlink(key_path);
        goto done;
    }
    rc = 0;
done:
    mem_free(key_path);
    mem_free(pub_path);
    return rc;
}

/* Reads a whole small file into buf (NUL-terminated); its permission bits
 * into *mode. */
static int s_read(const char *path, mode_t *mode, char *buf, size_t size, err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, errno, "cannot open the key file %s: %s", path, strerror(errno));
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) < 0) {
        err_set(err, errno, "cannot stat %s: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        err_set(err, EINVAL, "the key file %s is not a regular file", path);
        goto done;
    }
    *mode = st.st_mode & 0777;
    if (st.st_size >= (off_t)size) {
        err_set(err, EINVAL, "%s is %lld bytes: too large for a key file", path,
                (long long)st.st_size);
        goto done;
    }
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, size - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err_set(err, errno, "cannot read %s: %s", path, strerror(errno));
            goto done;
        }
        if (n == 0 || got + (size_t)n == size - 1) {
            got += (size_t)n;
            break;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    if (strlen(buf) != got) {
        err_set(err, EINVAL, "%s holds a NUL byte: not a key file", path);
        goto done;
    }
    rc = 0;
done:
    close(fd);
    return rc;
}

/* One "name = value" line; the value may be in double quotes. */
static int s_parse_line(char *line, char **name, char **value)
{
    char *eq = strchr(line, '=');
    if (!eq)
        return -1;
    char *end = eq;
    while (end > line && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *end = '\0';
    *name = line;
    char *v = eq + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r'))
        v[--n] = '\0';
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v[n - 1] = '\0';
        v++;
    }
    *value = v;
    return **name ? 0 : -1;
}

/* Parses text into public (and secret when want_secret). */
static int s_parse(char *text, const char *path, bool want_secret, keypair_t *out,
                   err_t *err)
{
    bool have_pub = false, have_sec = false;
    int line_no = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        line_no++;
        while (*line == ' ' || *line == '\t')
            line++;
        if (!*line || *line == '#' || *line == '\r')
            continue;
        char *name, *value;
        if (s_parse_line(line, &name, &value) < 0)
            return err_set(err, EINVAL, "%s: line %d is not 'name = value'", path, line_no);
        bool is_pub = strcmp(name, "public-key") == 0;
        bool is_sec = strcmp(name, "secret-key") == 0;
        if (!is_pub && !is_sec)
            return err_set(err, EINVAL, "%s: line %d: unknown field '%.64s' (public-key, "
                           "secret-key)", path, line_no, name);
        if ((is_pub && have_pub) || (is_sec && have_sec))
            return err_set(err, EINVAL, "%s: line %d: %s given twice", path, line_no, name);
        uint8_t raw[KEYPAIR_BYTES];
        if (keypair_decode(raw, value) < 0)
            return err_set(err, EINVAL, "%s: line %d: %s is not a key (%d Z85 characters)",
                           path, line_no, name, KEYPAIR_Z85_LEN);
        if (is_pub) {
            memcpy(out->public_key, value, KEYPAIR_Z85_LEN + 1);
            have_pub = true;
        } else {
            memcpy(out->secret_key, value, KEYPAIR_Z85_LEN + 1);
            have_sec = true;
        }
    }
    if (!have_pub)
        return err_set(err, EINVAL, "%s has no public-key line: not a key file", path);
    if (want_secret && !have_sec)
        return err_set(err, EINVAL, "%s has no secret-key line: give the NAME.key file, "
                       "not NAME.pub", path);
    if (want_secret) {
        char derived[KEYPAIR_Z85_LEN + 1];
        if (zmq_curve_public(derived, out->secret_key) < 0)
            return err_set(err, errno, "%s: cannot derive the public key: %s", path,
                           zmq_strerror(errno));
        if (strcmp(derived, out->public_key) != 0)
            return err_set(err, EINVAL, "%s: the public key is not the secret key's: the "
                           "file was edited or mixed up", path);
    }
    return 0;
}

int keypair_load(keypair_t *out, const char *path, err_t *err)
{
    char buf[S_MAX_FILE];
    keypair_t kp = {{0}, {0}};
    if (!keypair_curve_available())
        return err_set(err, ENOTSUP, "this ZeroMQ was built without CURVE (libsodium)");
    int rc = -1;
    mode_t mode = 0;
    /* The mode is checked last, so that a .pub given by mistake is named so. */
    if (s_read(path, &mode, buf, sizeof buf, err) == 0 &&
        s_parse(buf, path, true, &kp, err) == 0) {
        if (mode & 077)
            err_set(err, EPERM, "the secret key file %s has mode %03o: group and others "
                    "must not read it (chmod 600 %s)", path, (unsigned)mode, path);
        else {
            *out = kp;
            rc = 0;
        }
    }
    /* The secret key must not linger on the stack. */
    memset(buf, 0, sizeof buf);
    memset(&kp, 0, sizeof kp);
    __asm__ __volatile__("" : : "r"(buf), "r"(&kp) : "memory");
    return rc;
}

int keypair_load_public(char *z85, const char *path, err_t *err)
{
    char buf[S_MAX_FILE];
    keypair_t kp = {{0}, {0}};
    int rc = -1;
    mode_t mode = 0;
    if (s_read(path, &mode, buf, sizeof buf, err) == 0 &&
        s_parse(buf, path, false, &kp, err) == 0) {
        memcpy(z85, kp.public_key, KEYPAIR_Z85_LEN + 1);
        rc = 0;
    }
    memset(buf, 0, sizeof buf);
    memset(&kp, 0, sizeof kp);
    __asm__ __volatile__("" : : "r"(buf), "r"(&kp) : "memory");
    return rc;
}

int keypair_set_server(void *socket, const keypair_t *self, const char *zap_domain,
                       err_t *err)
{
    int one = 1;
    if (zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &one, sizeof one) < 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, self->secret_key, KEYPAIR_Z85_LEN) < 0 ||
        zmq_setsockopt(socket, ZMQ_ZAP_DOMAIN, zap_domain, strlen(zap_domain)) < 0)
        return err_set(err, errno, "cannot make the socket a CURVE server: %s",
                       zmq_strerror(errno));
    return 0;
}

int keypair_set_client(void *socket, const keypair_t *self, const char *server_public,
                       err_t *err)
{
    uint8_t raw[KEYPAIR_BYTES];
    if (keypair_decode(raw, server_public) < 0)
        return err_set(err, EINVAL, "the server's public key is not a key");
    if (zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, server_public, KEYPAIR_Z85_LEN) < 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, self->public_key, KEYPAIR_Z85_LEN) < 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, self->secret_key, KEYPAIR_Z85_LEN) < 0)
        return err_set(err, errno, "cannot make the socket a CURVE client: %s",
                       zmq_strerror(errno));
    return 0;
}

const char *keypair_mechanism(void *socket)
{
    int m = -1;
    size_t len = sizeof m;
    if (zmq_getsockopt(socket, ZMQ_MECHANISM, &m, &len) < 0)
        return "unknown";
    switch (m) {
    case ZMQ_NULL: return "NULL";
    case ZMQ_PLAIN: return "PLAIN";
    case ZMQ_CURVE: return "CURVE";
    case ZMQ_GSSAPI: return "GSSAPI";
    default: return "unknown";
    }
}
