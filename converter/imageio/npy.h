/* converter/imageio/npy.h: NumPy .npy images <-> interleaved float RGBA for the `i2i` tool.
 * Reads C-order float arrays of shape (H, W, 3) or (H, W, 4) from .npy versions 1.0, 2.0
 * and 3.0 with a strict header parser and checked sizes, from a file or from memory (the
 * fuzz entry point); writes version 1.0 float32 files atomically. Accepted dtypes: '<f4',
 * and converted to float32: '>f4', '<f8', '>f8'. Not a general NumPy reader: no other
 * dtypes, ranks or Fortran order, no pickled objects, no .npz. */
#ifndef I2I_NPY_H
#define I2I_NPY_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define I2I_NPY_MAX_SIDE   262144      /* per dimension H and W */
#define I2I_NPY_MAX_PIXELS (1u << 29)  /* H * W */
#define I2I_NPY_MAX_HEADER 65536       /* bytes of header text */

typedef struct {
  int major, minor;      /* format version: 1.0, 2.0 or 3.0 */
  size_t data_offset;    /* bytes from the file's start to the array data */
  size_t data_bytes;     /* height * width * channels * itemsize */
  int height, width, channels;
  int itemsize;          /* 4 (float32) or 8 (float64) */
  bool big_endian;
} i2i_npy_header;

typedef struct {
  int height, width;
  int channels;          /* in the file: 3 or 4 */
  float *rgba;           /* height * width * 4 floats, row-major; A = 1 when channels = 3 */
} i2i_npy_image;

/* Parses and checks the magic, version and header dict at the start of buf[0..len) into
 * `h` (caller storage). Needs only the header bytes; does not look at the data. Returns
 * false with a message (no file name) for anything malformed or unsupported. */
bool i2i_npy_parse_header(const void *buf, size_t len, i2i_npy_header *h, char *err,
                          size_t errlen);

/* Decodes a whole .npy held in memory (buf[0..len), read only) into `out` (caller storage;
 * filled on success, zeroed on failure). The data must be exactly the size the shape says.
 * Values are returned as stored (no clamping, NaN kept). On success the caller owns
 * out->rgba and frees it with i2i_npy_free. Never exits on any input. */
bool i2i_npy_decode(const void *buf, size_t len, i2i_npy_image *out, char *err,
                    size_t errlen);

/* As i2i_npy_decode, reading the file `path` in chunks (no whole-file copy in memory).
 * Messages name the file. */
bool i2i_npy_load(const char *path, i2i_npy_image *out, char *err, size_t errlen);

/* Writes `rgba` (height * width * 4 floats, read only) as a float32 '<f4' C-order array of
 * shape (height, width, channels), channels 3 (alpha dropped) or 4, .npy version 1.0 with
 * the header padded to 64 bytes. Goes through a temporary `.NAME.XXXXXX` renamed into place
 * when complete; on failure `path` is untouched and false is returned with a message. */
bool i2i_npy_save(const char *path, const float *rgba, int height, int width, int channels,
                  char *err, size_t errlen);

/* Frees out->rgba and zeroes the struct. NULL is fine. */
void i2i_npy_free(i2i_npy_image *img);

#ifdef __cplusplus
}
#endif

#endif
