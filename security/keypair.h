/* keypair: ZeroMQ CURVE key pairs and public keys in files.
 *
 * A key is 32 bytes, written as 40 characters of Z85 (ZeroMQ's text form).
 * moe-keygen writes two files per name (docs/DEPLOY.md, "Security"):
 *
 *   NAME.key  mode 0600, the pair:   # comment lines
 *                                    public-key = "<40 Z85 chars>"
 *                                    secret-key = "<40 Z85 chars>"
 *   NAME.pub  mode 0644, public key: public-key = "<40 Z85 chars>"
 *
 * Loading checks everything a bad file could get wrong and names the file:
 * a missing or repeated field, a value that is not 40 Z85 characters, a
 * secret key whose public key is not the one written beside it, and a .key
 * file that group or others may read (as ssh does: chmod 600).
 *
 * keypair_t is a value (no heap); the setters configure a socket as a CURVE
 * server or client before it binds or connects.
 */
#ifndef MOE_SECURITY_KEYPAIR_H
#define MOE_SECURITY_KEYPAIR_H

#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"

enum { KEYPAIR_Z85_LEN = 40 };   /* characters of one key in Z85 */
enum { KEYPAIR_BYTES = 32 };     /* bytes of one key */

typedef struct keypair {
    char public_key[KEYPAIR_Z85_LEN + 1]; /* Z85, NUL-terminated */
    char secret_key[KEYPAIR_Z85_LEN + 1]; /* Z85, NUL-terminated */
} keypair_t;

/* True when ZeroMQ was built with CURVE (libsodium or tweetnacl). */
bool keypair_curve_available(void);

/* A new random pair. 0, or -1 with errno/err (ENOTSUP without CURVE). */
int keypair_generate(keypair_t *out, err_t *err);

/* Writes dir/NAME.key (mode 0600, created new: an existing file is not
 * overwritten, EEXIST) and dir/NAME.pub. name is letters, digits, '.', '_'
 * and '-' only (EINVAL otherwise). 0, or -1 with errno/err; on failure
 * neither file is left behind. */
int keypair_save(const keypair_t *self, const char *dir, const char *name, err_t *err);

/* Reads a NAME.key file into *out. -1 with errno/err: ENOENT/EACCES from
 * opening it, EPERM when group or others may read it, EINVAL for bad
 * contents (the message names the file and line). */
int keypair_load(keypair_t *out, const char *path, err_t *err);

/* Reads the public key of a NAME.pub file (a NAME.key file is also accepted:
 * only its public-key line is read) into z85 (KEYPAIR_Z85_LEN + 1 chars).
 * -1 with errno/err as keypair_load. */
int keypair_load_public(char *z85, const char *path, err_t *err);

/* Z85 text -> 32 bytes; -1/EINVAL when it is not a key. */
int keypair_decode(uint8_t out[KEYPAIR_BYTES], const char *z85);

/* Makes socket a CURVE server with this pair (before bind); its peers must
 * know self's public key, and the context's ZAP handler (zap.h) decides
 * which client keys it accepts. zap_domain names the socket's role in the
 * ZAP requests. 0, or -1 with errno/err. */
int keypair_set_server(void *socket, const keypair_t *self, const char *zap_domain,
                       err_t *err);

/* Makes socket a CURVE client with this pair towards the server whose public
 * key is server_public (Z85), before connect. 0, or -1 with errno/err. */
int keypair_set_client(void *socket, const keypair_t *self, const char *server_public,
                       err_t *err);

/* The mechanism a socket uses: "CURVE", "NULL", "PLAIN", ... (static). */
const char *keypair_mechanism(void *socket);

#endif /* MOE_SECURITY_KEYPAIR_H */
