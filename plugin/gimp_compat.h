/* gimp_compat.h: the one place where the GIMP API version shows in the shared plug-in code.
 *
 * pixels.c (pixel I/O and the run) uses the handle types and inline wrappers below instead of
 * calling version-specific libgimp functions, as G'MIC-Qt's host_gimp.cpp does. This file covers
 * GIMP 2.10 (libgimp 2.0: gint32 IDs, gimp_get_data/set_data); the GIMP 3 branch (object
 * handles, GimpProcedureConfig for last values) is added by the GIMP 3 issue. Registration,
 * argument unpacking and the dialog are not here: they live in plugin_gimp2.c and ui_gtk2.c.
 */
#ifndef I2I_GIMP_COMPAT_H
#define I2I_GIMP_COMPAT_H

#include <libgimp/gimp.h>
#include <stdbool.h>
#include <stddef.h>

#if GIMP_CHECK_VERSION(2, 99, 0)
#error "GIMP 3 is not supported by this build yet (the GIMP 3 glue is a later issue); use -Dgimp_api=2"
#endif

#define I2I_GIMP_API 2

typedef gint32 i2i_gimp_image;
typedef gint32 i2i_gimp_drawable;

static inline bool i2i_drawable_is_valid(i2i_gimp_drawable d) {
  return d > 0 && gimp_item_is_valid(d) && gimp_item_is_drawable(d);
}
static inline i2i_gimp_image i2i_drawable_image(i2i_gimp_drawable d) { return gimp_item_get_image(d); }
static inline int i2i_drawable_width(i2i_gimp_drawable d) { return gimp_drawable_width(d); }
static inline int i2i_drawable_height(i2i_gimp_drawable d) { return gimp_drawable_height(d); }

/* Last values of a procedure (2.10: kept by the running GIMP only, gimp.md P13). `get` is false
 * when nothing of exactly `size` bytes was stored. */
static inline bool i2i_last_values_get(const char *proc, void *data, size_t size) {
  if (gimp_get_data_size(proc) != (gint)size) return false;
  return gimp_get_data(proc, data);
}
static inline void i2i_last_values_set(const char *proc, const void *data, size_t size) {
  gimp_set_data(proc, data, (guint32)size);
}

#endif
