/* pixels.h: a drawable's pixels as interleaved float R'G'B'A, and the write-back through the
 * shadow buffer; the run of a procedure on a drawable (apply.c).
 *
 * Everything is read and written in the drawable's own colour space, so 8/16/32-bit integer and
 * float, linear and perceptual layers keep their precision, and gray layers become R=G=B for
 * the model and Y'(A) again when written: perceptual 8- and 16-bit integer layers with exact
 * conversions of pixels.c's own, everything else through babl. Version-specific calls come from gimp_compat.h. Not
 * here: registration, argument unpacking and the dialog.
 */
#ifndef I2I_PIXELS_H
#define I2I_PIXELS_H

#include <babl/babl.h>

#include "gimp_compat.h"
#include "i2i_plugin.h"

typedef struct {
  int width, height;          /* the drawable's size (it may exceed the canvas or be offset) */
  bool is_rgb, has_alpha;
  const Babl *rgba_float;     /* "R'G'B'A float" in the drawable's space: what the engine gets */
  const Babl *preview_format; /* 8-bit, with the drawable's channels: what previews draw */
  const Babl *raw_format;     /* the drawable's own format when pixels.c converts it exactly
                                 itself (perceptual 8/16-bit integer), else NULL: babl does */
  int raw_channels, raw_bytes; /* of raw_format: 1..4 samples of 1 or 2 bytes */
  bool any;                   /* false when the selection misses the drawable */
  int mx, my, mw, mh;         /* selection box within the drawable (drawable coordinates) */
  float *pixels;              /* the whole drawable, width*height RGBA floats (g_free) */
} i2i_layer;

/* Reads the geometry, formats and selection box of `d` and, when `read` is true and the
 * selection touches the drawable, all its pixels. False with *err (g_free) when the drawable is
 * gone, too large to address, or memory runs out; L is then empty. */
bool i2i_layer_read(i2i_gimp_drawable d, i2i_layer *L, bool read, char **err);

/* Frees the pixels. */
void i2i_layer_clear(i2i_layer *L);

/* Writes the selection box of `result` (a whole-drawable RGBA float buffer) into the shadow
 * buffer and merges it as one undo step (GIMP applies the selection mask and its feathering),
 * then updates the display region. The drawable is untouched before this call. The box's colour
 * values are clamped to 0..1 in `result` itself. */
bool i2i_layer_write(i2i_gimp_drawable d, const i2i_layer *L, float *result, char **err);

/* Converts `w`x`h` RGBA floats (packed) to the preview format into `dst` (w*h*bpp bytes).
 * Returns the bytes per pixel. */
int i2i_layer_to_preview(const i2i_layer *L, const float *src, int w, int h, guchar *dst);

/* Runs procedure `proc` (label for progress) with `o` on `d`: model lookup and load, the engine
 * run on the whole layer, write-back of the selection box, one undo step. `L` holds the pixels
 * already read (i2i_layer_read with read = true). `cached`, when not NULL, is a strength-1 result
 * computed for exactly these options (the dialog's preview); it is consumed (freed). Returns a
 * GIMP status; on error *err (g_free) holds the message. `interactive` flushes displays. */
GimpPDBStatusType i2i_apply(i2i_gimp_drawable d, i2i_layer *L, const char *label, const char *model_name,
                            const i2i_opts *o, float *cached, bool interactive, char **err);

#endif
