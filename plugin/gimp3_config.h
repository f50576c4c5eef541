/* gimp3_config.h: GIMP 3 only: the options (i2i_opts) to and from a procedure's config.
 *
 * A GimpProcedureConfig has one property per argument, named as in the argument table
 * (options.c); libgimp fills it from the arguments (RUN-NONINTERACTIVE) or from the last values
 * it keeps on disk (the other run modes) and saves it after an interactive run. Used by
 * plugin_gimp3.c (unpacking) and ui_gtk3.c (the dialog's widgets are bound to the config).
 */
#ifndef I2I_GIMP3_CONFIG_H
#define I2I_GIMP3_CONFIG_H

#include <string.h>

#include "i2i_plugin.h"
#include "gimp_compat.h"

/* Reads the options from `config` (`generic`: it has the "model" property too). False with
 * *err (g_free) when the model name does not fit i2i_opts. Ranges are checked later
 * (i2i_opts_check). */
static inline bool i2i_opts_from_config(GimpProcedureConfig *config, bool generic, i2i_opts *o, char **err) {
  gdouble strength = 100;
  gint device = 0, variant = 0, seed = 0, mode = 0, scale = I2I_SCALE_DEFAULT, memory = 0;
  i2i_opts_default(o);
  g_object_get(config, "strength", &strength, "device", &device, "variant", &variant, "seed", &seed,
               "pix2pix-mode", &mode, "scale", &scale, "memory-mb", &memory, NULL);
  o->strength = strength;
  o->device = device;
  o->variant = variant;
  o->seed = seed;
  o->pix2pix_mode = mode;
  o->scale = scale;
  o->memory_mb = memory;
  if (generic) {
    gchar *m = NULL;
    g_object_get(config, "model", &m, NULL);
    if (m && strlen(m) >= sizeof o->model) {
      g_free(m);
      *err = g_strdup_printf("i2i: argument 'model' is longer than %d bytes", I2I_MODEL_MAX - 1);
      return false;
    }
    g_strlcpy(o->model, m ? m : "", sizeof o->model);
    g_free(m);
  }
  return true;
}

/* Writes the options into `config` (the values libgimp saves as last values). */
static inline void i2i_opts_to_config(GimpProcedureConfig *config, bool generic, const i2i_opts *o) {
  g_object_set(config, "strength", o->strength, "device", (gint)o->device, "variant", (gint)o->variant, "seed",
               (gint)o->seed, "pix2pix-mode", (gint)o->pix2pix_mode, "scale", (gint)o->scale, "memory-mb",
               (gint)o->memory_mb, NULL);
  if (generic) g_object_set(config, "model", o->model, NULL);
}

#endif
