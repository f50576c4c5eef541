/* tests/imageio/fuzz_npy.c: libFuzzer target for the .npy reader's in-memory entry point.
 * Feeds each input to i2i_npy_decode (header parse, size checks, conversion) and frees the
 * result; any crash, leak or sanitizer report is a bug. Not built by default:
 *   clang -fsanitize=fuzzer,address,undefined -Iconverter/imageio tests/imageio/fuzz_npy.c \
 *     converter/imageio/npy.c converter/imageio/atomicfile.c -o fuzz_npy
 * or meson -Dfuzz=true with CC=clang. */
#include "npy.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char err[256];
  memset(err, 0x55, sizeof err); /* no terminator until the reader writes a message */
  i2i_npy_image img;
  i2i_npy_header h;
  if (i2i_npy_decode(data, size, &img, err, sizeof err)) {
    /* Touch every value so the sanitizers see any out-of-bounds write in the conversion. */
    volatile float sink = 0.0f;
    size_t n = (size_t)img.width * (size_t)img.height * 4;
    for (size_t i = 0; i < n; i++)
      sink += img.rgba[i];
    (void)sink;
    i2i_npy_free(&img);
  } else if (memchr(err, '\0', sizeof err) == NULL || err[0] == '\0') {
    __builtin_trap(); /* a refusal must come with a message */
  }
  (void)i2i_npy_parse_header(data, size, &h, err, sizeof err);
  return 0;
}
