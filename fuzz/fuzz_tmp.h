/* fuzz_tmp: a private directory per fuzzing process, for the loaders that
 * take a path (safetensors_open, tokenizer_load): each input is written to a
 * file there and loaded from it. The directory is on $TMPDIR (/tmp), under a
 * name mkdtemp makes unique, so parallel fuzzers do not meet; it is removed
 * at exit.
 */
#ifndef MOE_FUZZ_TMP_H
#define MOE_FUZZ_TMP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_tmp_dir[256];
static char fuzz_tmp_files[4][320];

static void fuzz_tmp_cleanup(void)
{
    for (int i = 0; i < 4; i++)
        if (fuzz_tmp_files[i][0])
            unlink(fuzz_tmp_files[i]);
    rmdir(fuzz_tmp_dir);
}

/* The directory, made on first use; aborts when it cannot be made. */
static inline const char *fuzz_tmp_get(void)
{
    if (fuzz_tmp_dir[0])
        return fuzz_tmp_dir;
    const char *base = getenv("TMPDIR");
    snprintf(fuzz_tmp_dir, sizeof fuzz_tmp_dir, "%s/moe-fuzz-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(fuzz_tmp_dir)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(fuzz_tmp_cleanup);
    return fuzz_tmp_dir;
}

/* Writes data[0..size) to <dir>/name (slot 0..3 remembers it for cleanup);
 * aborts on a write error: the harness, not the code under test, failed. */
static inline const char *fuzz_tmp_write(int slot, const char *name, const void *data,
                                         size_t size)
{
    snprintf(fuzz_tmp_files[slot], sizeof fuzz_tmp_files[slot], "%s/%s", fuzz_tmp_get(),
             name);
    FILE *f = fopen(fuzz_tmp_files[slot], "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror("fuzz: writing an input file");
        abort();
    }
    return fuzz_tmp_files[slot];
}

/* Removes <dir>/name of slot. */
static inline void fuzz_tmp_remove(int slot)
{
    if (fuzz_tmp_files[slot][0])
        unlink(fuzz_tmp_files[slot]);
}

#endif /* MOE_FUZZ_TMP_H */
