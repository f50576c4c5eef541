/* converter/imageio/imageio.h: image files <-> interleaved float RGBA for the `i2i` tool.
 * Loads and saves PNG, JPEG, TIFF and WebP as "R'G'B'A float" in [0,1] (the file's own gamma
 * encoding), with the file's depth, alpha and gray flags, its orientation applied and its ICC
 * profile's bytes kept for the save, atomic writes and readable errors. Loads use libpng,
 * libjpeg, libtiff and libwebp for both directions; saves write a row at a time where the
 * format allows (PNG, TIFF, JPEG). Not an image editor: no resizing, no colour management, no
 * multi-page or animated images. */
#ifndef I2I_IMAGEIO_H
#define I2I_IMAGEIO_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Threads: every call may be made from several threads at once; loads and saves of every
 * type run in parallel (each library reports to the call's own handlers). */

/* Limits checked before anything is allocated: each side and the pixel count. A load also
 * refuses, before allocating, a PNG, TIFF or (Huffman-coded) JPEG whose declared size is more
 * than its file could hold at the format's greatest compression ratio (truncated or forged),
 * and any image whose float RGBA buffer is larger than the memory available
 * (i2i_host_memory_available, swap counted). */
#define I2I_IMG_MAX_SIDE   262144
#define I2I_IMG_MAX_PIXELS (1u << 29)
/* Embedded ICC profiles larger than this are ignored. */
#define I2I_IMG_MAX_ICC    (16u << 20)

typedef enum {
  I2I_IMG_UNKNOWN = 0,   /* as a save type: take it from the file name's extension */
  I2I_IMG_PNG,
  I2I_IMG_JPEG,
  I2I_IMG_TIFF,
  I2I_IMG_WEBP
} i2i_img_type;

/* Warning bits in i2i_img_info.warnings: the load succeeded but something was fixed up. */
enum {
  I2I_IMG_WARN_NONFINITE = 1u << 0, /* NaN or infinity in a float file, replaced by 0 */
  I2I_IMG_WARN_CLAMPED   = 1u << 1, /* float values outside [0,1], clamped */
  I2I_IMG_WARN_DATA      = 1u << 2, /* the decoder reported minor corrupt data it skipped */
  I2I_IMG_WARN_PAGES     = 1u << 3  /* a TIFF of several pages (images): the first was read */
};

typedef struct {
  int width, height;
  i2i_img_type type;
  int bits;            /* bits per sample in the file: 8, 16, 32 or 64 */
  bool is_float;       /* samples are IEEE floats (TIFF only) */
  bool has_alpha;
  bool is_gray;        /* one colour channel in the file; the pixels still hold R = G = B */
  bool lossless;       /* PNG, TIFF, lossless WebP */
  unsigned warnings;   /* I2I_IMG_WARN_* bits */
  size_t n_nonfinite;  /* samples replaced by 0 */
  size_t n_clamped;    /* samples clamped into [0,1] */
  int orientation;     /* EXIF / TIFF orientation the file declared (1..8), already applied:
                          width and height are as displayed; 1 when the file has none */
  unsigned char *icc;  /* the file's embedded ICC profile (icc_len bytes) when it is an RGB
                          profile of a colour image or a gray one of a gray image and its
                          tags and curves lie inside it, else NULL; owned by the i2i_img
                          that holds this info, freed by i2i_img_free */
  size_t icc_len;
} i2i_img_info;

typedef struct {
  i2i_img_info info;
  float *pixels;       /* width * height * 4 floats, row-major RGBA; free with i2i_img_free */
} i2i_img;

typedef struct {
  i2i_img_type type;   /* I2I_IMG_UNKNOWN: from the destination's extension */
  int bits;            /* 8 or 16 (PNG, TIFF), 32 with is_float (TIFF); 0: 8 */
  bool is_float;
  bool gray;           /* write one colour channel (Rec. 601 luma of R'G'B', exact for R=G=B) */
  bool alpha;          /* write the alpha channel (ignored for JPEG, which has none) */
  int quality;         /* JPEG and lossy WebP, 1..100; 0: 95 */
  bool lossless;       /* WebP: lossless (exact); otherwise lossy at `quality` */
  int png_compression; /* zlib level 1..9; 0: zlib's run-length strategy (Z_RLE), made for PNG */
  const unsigned char *icc; /* ICC profile to embed (icc_len bytes), or NULL: read only, not
                          kept. Written only when it suits the output (an RGB profile into a
                          colour file, a gray one into a gray file; WebP takes RGB only) and
                          its tags and curves lie inside it */
  size_t icc_len;
} i2i_img_save_opts;

/* Maps a file name's extension (case-insensitive: .png .jpg .jpeg .jpe .tif .tiff .webp) to
 * a type; I2I_IMG_UNKNOWN otherwise. Does not touch the file system. `path` may be NULL. */
i2i_img_type i2i_img_type_from_name(const char *path);

/* True when `path` names a regular file (after symlinks) with a supported extension. Reads
 * no file content; the load still checks the bytes. */
bool i2i_img_path_is_supported(const char *path);


/* The type's short name ("PNG", "JPEG", "TIFF", "WebP", "unknown"); static storage. */
const char *i2i_img_type_name(i2i_img_type type);

/* Reads the file's first bytes and names its format by content. Returns false with a message
 * (missing, unreadable, directory, empty, not a supported image). */
bool i2i_img_sniff(const char *path, i2i_img_type *type, char *err, size_t errlen);

/* Loads `path` (format by content, not by name) into `out`, which the caller provides and
 * this call fills; on success the caller owns out->pixels and out->info.icc and frees both
 * with i2i_img_free. Grayscale is replicated into R, G and B; without alpha A = 1; NaN/inf
 * become 0 and float values are clamped into [0,1], counted in out->info. The orientation
 * (JPEG, PNG and WebP EXIF; TIFF tag 274) is applied, as PIL's ImageOps.exif_transpose does;
 * a malformed EXIF block is ignored. CMYK (JPEG, TIFF) becomes R'G'B' as (1 - C)(1 - K),
 * like PIL; TIFF min-is-white gray is inverted and associated alpha divided out. A TIFF with
 * fewer samples per pixel than its colours, or with signed or complex samples, is refused.
 * An embedded ICC profile is never interpreted (only bounds-checked before it is kept).
 * `path` must be a regular file (a FIFO or device is refused without being read). On failure
 * returns false, leaves out zeroed and writes a message naming the file into err (errlen
 * bytes, NUL-terminated; err may be NULL). Safe on any file content: never exits or aborts. */
bool i2i_img_load(const char *path, i2i_img *out, char *err, size_t errlen);

/* Frees the pixels and ICC profile of an image filled by i2i_img_load and zeroes it. NULL is
 * fine. */
void i2i_img_free(i2i_img *img);

/* Fills `opts` with defaults: type from the extension, 8-bit RGB without alpha, quality 95,
 * lossy WebP, PNG compression 3. */
void i2i_img_save_opts_default(i2i_img_save_opts *opts);

/* Fills `opts` to write an image like `src` (depth, gray, alpha, lossless, ICC profile) into
 * a file of type `out_type` (I2I_IMG_UNKNOWN: src's own type), picking the nearest depth that
 * type can store: 16-bit or float into PNG -> 16, anything into JPEG or WebP -> 8, TIFF
 * integer 32-bit, half or double -> 32-bit float. opts->icc then points into src->icc (not
 * copied): keep the image until the save is done. `src` NULL: same as
 * i2i_img_save_opts_default. */
void i2i_img_save_opts_from_info(i2i_img_save_opts *opts, const i2i_img_info *src,
                                 i2i_img_type out_type);

/* Writes `width` x `height` row-major float RGBA `pixels` (read only; not kept) to `path`.
 * Values are clamped into [0,1] and rounded to the depth (NaN -> 0); float TIFF keeps them
 * as they are except NaN/inf -> 0. Alpha is written from the same floats, untouched. The
 * file has no EXIF orientation (TIFF says 1, top-left); opts->icc, when it suits the output,
 * is embedded as PNG iCCP, JPEG APP2 ICC_PROFILE, TIFF tag 34675 or WebP ICCP; without one
 * the file has no colour chunk or tag (untagged, read as sRGB by convention, as its source).
 * PNG, TIFF and JPEG are written a row at a time (memory: a row besides `pixels`); WebP
 * takes an 8-bit copy of the image. TIFF is uncompressed, BigTIFF past 4 GB.
 * `opts` NULL: i2i_img_save_opts_default. The data goes to a temporary `.NAME.XXXXXX` in
 * the destination's folder, is flushed to disk and renamed over `path` only when complete;
 * on any failure the temporary is removed, `path` is untouched and false is returned with
 * a message in err. */
bool i2i_img_save(const char *path, const float *pixels, int width, int height,
                  const i2i_img_save_opts *opts, char *err, size_t errlen);

/* Replaces NaN/inf by 0 and clamps into [0,1], in place, over n floats; adds the counts to
 * *n_nonfinite and *n_clamped (either may be NULL). */
void i2i_img_sanitize(float *values, size_t n, size_t *n_nonfinite, size_t *n_clamped);

#ifdef __cplusplus
}
#endif

#endif
