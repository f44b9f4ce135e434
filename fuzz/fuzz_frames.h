/* fuzz_frames: how the wire harnesses cut one fuzz input into a message.
 *
 *   byte 0        flags: bits 0-1 the frame count (0..3), the rest is the
 *                 harness's own (which decoder, which limits)
 *   bytes 1..4    length L of frame 1 (the header), little-endian, clipped
 *                 to what follows
 *   next L bytes  frame 1
 *   the rest      frame 2 (the tensor); a frame 3 is empty
 * Inputs shorter than 5 bytes are a message of no frames. fuzz/gen_corpus.c
 * writes seeds in this layout from messages the wire encoder made.
 */
#ifndef MOE_FUZZ_FRAMES_H
#define MOE_FUZZ_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "proto/wire.h"

enum { FUZZ_FRAMES_MAX = 3 };

/* Fills frames[0..*n_frames) from data[0..size); returns the flags byte. */
static inline uint8_t fuzz_frames_split(const uint8_t *data, size_t size,
                                        wire_frame_t frames[FUZZ_FRAMES_MAX], int *n_frames)
{
    static const uint8_t none = 0;
    for (int i = 0; i < FUZZ_FRAMES_MAX; i++)
        frames[i] = (wire_frame_t){&none, 0};
    *n_frames = 0;
    if (size < 5)
        return 0;
    uint8_t flags = data[0];
    size_t len = (size_t)data[1] | (size_t)data[2] << 8 | (size_t)data[3] << 16 |
                 (size_t)data[4] << 24;
    size_t rest = size - 5;
    if (len > rest)
        len = rest;
    frames[0] = (wire_frame_t){data + 5, len};
    frames[1] = (wire_frame_t){data + 5 + len, rest - len};
    *n_frames = flags & 3;
    return flags;
}

/* One input as a harness decodes it. */
typedef struct fuzz_input {
    wire_frame_t frames[FUZZ_FRAMES_MAX];
    int n_frames;
    uint8_t flags;          /* byte 0 */
    bool limited;           /* decoded with the harness's limits */
    wire_inbox_t *inbox;    /* the inbox to decode with */
} fuzz_input_t;

/* Cuts data[0..size) into frames (fuzz_frames_split) and picks the inbox:
 * one made with lim, or, when flags & unbounded_flag, one without limits (a
 * client's, whose arena grows). Both inboxes are made on first use and reused
 * from input to input, as a receiver's are. */
static inline void fuzz_input_read(fuzz_input_t *in, const uint8_t *data, size_t size,
                                   const wire_limits_t *lim, uint8_t unbounded_flag)
{
    static wire_inbox_t *bounded, *unbounded;
    if (!bounded) {
        bounded = wire_inbox_new(lim, NULL);
        unbounded = wire_inbox_new(NULL, NULL);
        if (!bounded || !unbounded)
            abort();
    }
    in->flags = fuzz_frames_split(data, size, in->frames, &in->n_frames);
    in->limited = !(in->flags & unbounded_flag);
    in->inbox = in->limited ? bounded : unbounded;
}

#endif /* MOE_FUZZ_FRAMES_H */
