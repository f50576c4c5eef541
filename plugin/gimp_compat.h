/* gimp_compat.h: the one place where the GIMP API version shows in the shared plug-in code.
 *
 * The shared files (run.c, pixels.c, ui_preview.c) use the handle types and inline wrappers below
 * instead of version-specific libgimp calls, as G'MIC-Qt's host_gimp.cpp does: GIMP 2.10
 * (libgimp 2.0: gint32 IDs, gimp_get_data/set_data) and GIMP 3 (libgimp 3.0: object handles,
 * GimpProcedureConfig). Registration, argument unpacking and the dialogs are not here: they live
 * in plugin_gimp2.c + ui_gtk2.c and plugin_gimp3.c + ui_gtk3.c.
 */
#ifndef I2I_GIMP_COMPAT_H
#define I2I_GIMP_COMPAT_H

#include <libgimp/gimp.h>
#include <stdbool.h>
#include <stddef.h>

#if GIMP_CHECK_VERSION(2, 99, 0)

#define I2I_GIMP_API 3

typedef GimpImage *i2i_gimp_image;
typedef GimpDrawable *i2i_gimp_drawable;

/* The procedure being run, as the dialog needs it: its PDB name (the help id), and in GIMP 3
 * the procedure and its config, to which the dialog's widgets are bound. Borrowed. */
typedef struct {
  const char *name;
  GimpProcedure *procedure;
  GimpProcedureConfig *config;
} i2i_gimp_call;

static inline bool i2i_drawable_is_valid(i2i_gimp_drawable d) {
  return d && GIMP_IS_DRAWABLE(d) && gimp_item_is_valid(GIMP_ITEM(d)) && gimp_item_is_drawable(GIMP_ITEM(d));
}
static inline i2i_gimp_image i2i_drawable_image(i2i_gimp_drawable d) { return gimp_item_get_image(GIMP_ITEM(d)); }
/* A layer group (its pixels are its children's), or NULL. */
static inline bool i2i_drawable_is_group(i2i_gimp_drawable d) { return gimp_item_is_group(GIMP_ITEM(d)); }
/* The item whose "lock pixels" keeps d from being changed (d itself or a group holding it), or
 * NULL. */
static inline GimpItem *i2i_drawable_locker(i2i_gimp_drawable d) {
  for (GimpItem *it = GIMP_ITEM(d); it; it = gimp_item_get_parent(it))
    if (gimp_item_get_lock_content(it)) return it;
  return NULL;
}
static inline char *i2i_item_name(GimpItem *it) { return gimp_item_get_name(it); }
static inline int i2i_drawable_width(i2i_gimp_drawable d) { return gimp_drawable_get_width(d); }
static inline int i2i_drawable_height(i2i_gimp_drawable d) { return gimp_drawable_get_height(d); }

#else

#define I2I_GIMP_API 2

typedef gint32 i2i_gimp_image;
typedef gint32 i2i_gimp_drawable;

/* The procedure being run, as the dialog needs it: its PDB name (the help id). */
typedef struct {
  const char *name;
} i2i_gimp_call;

static inline bool i2i_drawable_is_valid(i2i_gimp_drawable d) {
  return d > 0 && gimp_item_is_valid(d) && gimp_item_is_drawable(d);
}
static inline i2i_gimp_image i2i_drawable_image(i2i_gimp_drawable d) { return gimp_item_get_image(d); }
/* A layer group (its pixels are its children's). */
static inline bool i2i_drawable_is_group(i2i_gimp_drawable d) { return gimp_item_is_group(d); }
/* The item whose "lock pixels" keeps d from being changed (d itself or a group holding it), or
 * 0. */
static inline gint32 i2i_drawable_locker(i2i_gimp_drawable d) {
  for (gint32 it = d; it > 0; it = gimp_item_get_parent(it))
    if (gimp_item_get_lock_content(it)) return it;
  return 0;
}
static inline char *i2i_item_name(gint32 it) { return gimp_item_get_name(it); }
static inline int i2i_drawable_width(i2i_gimp_drawable d) { return gimp_drawable_width(d); }
static inline int i2i_drawable_height(i2i_gimp_drawable d) { return gimp_drawable_height(d); }

/* Last values of a procedure (2.10: kept by the running GIMP only, gimp.md P13; GIMP 3 keeps
 * them in the procedure's config instead). `get` is false when nothing of exactly `size` bytes
 * was stored. */
static inline bool i2i_last_values_get(const char *proc, void *data, size_t size) {
  if (gimp_get_data_size(proc) != (gint)size) return false;
  return gimp_get_data(proc, data);
}
static inline void i2i_last_values_set(const char *proc, const void *data, size_t size) {
  gimp_set_data(proc, data, (guint32)size);
}

#endif

#endif
