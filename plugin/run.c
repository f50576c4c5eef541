/* run.c: the run of one i2i procedure, the same for GIMP 2.10 and GIMP 3.
 *
 * Finds the procedure's direction (manifest, installed model, or the generic procedure), checks
 * the options, makes sure the model exists, reads the layer, shows the dialog in interactive
 * mode and applies the result as one undo step (pixels.c). Version differences come through
 * gimp_compat.h and ui.h; argument unpacking, last values and error return stay in the glue.
 */
#include <gegl.h>
#include <string.h>

#include "run.h"
#include "ui.h"

static bool model_installed(i2i_ctx *ctx, const char *task) {
  char *path = NULL;
  bool ok = i2i_model_find(ctx, task, &path) == I2I_OK;
  i2i_free(ctx, path);
  return ok;
}

GimpPDBStatusType i2i_run_procedure(const i2i_gimp_call *call, GimpRunMode mode, i2i_gimp_drawable drawable,
                                    i2i_opts *o, char **err) {
  GimpPDBStatusType status = GIMP_PDB_SUCCESS;
  i2i_ctx *ctx = NULL;
  i2i_direction *dirs = NULL, *inst = NULL;
  size_t nd = 0, ni = 0;
  i2i_layer L = {0};
  char *model_name = NULL;
  float *cached = NULL;
  const char *name = call->name;
  bool generic = !strcmp(name, I2I_PROC_GENERIC);
  *err = NULL;

  if (i2i_ctx_create(NULL, &ctx) != I2I_OK) {
    status = GIMP_PDB_EXECUTION_ERROR;
    *err = g_strdup("i2i: cannot create the engine context (out of memory)");
    goto done;
  }
  nd = i2i_directions_load(ctx, &dirs);
  const i2i_direction *dir = generic ? NULL : i2i_direction_find(dirs, nd, name);
  if (!generic && !dir) {
    ni = i2i_directions_installed(ctx, dirs, nd, &inst);
    dir = i2i_direction_find(inst, ni, name);
  }
  if (!generic && !dir) {
    status = GIMP_PDB_CALLING_ERROR;
    *err = g_strdup_printf("i2i: '%s' is not a direction of the installed manifest nor an installed model "
                           "(reinstall the plug-in, or use plug-in-i2i-translate with a model name)", name);
    goto done;
  }
  const char *label = dir ? dir->label : "Translate";

  o->model[sizeof o->model - 1] = 0;
  if ((*err = i2i_opts_check(o))) {
    status = GIMP_PDB_CALLING_ERROR;
    goto done;
  }
  if (mode != GIMP_RUN_INTERACTIVE) {
    model_name = i2i_model_name_for(ctx, dir, o, err);
    if (!model_name) {
      status = GIMP_PDB_CALLING_ERROR;
      goto done;
    }
  } else if (dir && !model_installed(ctx, dir->task) && !(dir->id0_task && model_installed(ctx, dir->id0_task))) {
    /* no dialog that cannot work: the engine's message names the install command */
    char *path = NULL;
    (void)i2i_model_find(ctx, dir->task, &path);
    *err = g_strdup_printf("i2i: %s", i2i_ctx_errmsg(ctx));
    i2i_free(ctx, path);
    status = GIMP_PDB_EXECUTION_ERROR;
    goto done;
  }

  double tg = i2i_ms_since_start();
  /* Only GeglBuffers and babl are used here, no GEGL operations: not loading the operation
   * modules saves about 0.2 s per call (gimp.md A4). I2I_GEGL_MODULES=1 keeps them. */
  if (!g_getenv("I2I_GEGL_MODULES")) g_setenv("GEGL_PATH", "", TRUE);
  gegl_init(NULL, NULL);
  i2i_vlog("gegl_init: %.1f ms", i2i_ms_since_start() - tg);
  double tr = i2i_ms_since_start();
  if (!i2i_layer_read(drawable, &L, true, err)) {
    status = GIMP_PDB_EXECUTION_ERROR;
    goto done;
  }
  i2i_vlog("read %dx%d %s%s layer (%s): %.1f ms", L.width, L.height, L.is_rgb ? "RGB" : "gray",
           L.has_alpha ? "A" : "", L.raw_format ? (L.raw_bytes == 1 ? "u8, exact" : "u16, exact") : "babl",
           i2i_ms_since_start() - tr);

  if (mode == GIMP_RUN_INTERACTIVE) {
    if (!L.any) {
      status = GIMP_PDB_EXECUTION_ERROR;
      *err = g_strdup("i2i: the selection does not touch the active layer: nothing to translate");
      goto done;
    }
    if (!i2i_ui_init(I2I_PLUG_IN_BINARY, err)) {
      status = GIMP_PDB_EXECUTION_ERROR;
      goto done;
    }
    status = i2i_dialog_run(call, dir, drawable, &L, o, &model_name, &cached, err);
    if (status != GIMP_PDB_SUCCESS) goto done;
    if (generic) label = o->model;
  }

  status = i2i_apply(drawable, &L, label, model_name, o, cached, mode == GIMP_RUN_INTERACTIVE, err);
  cached = NULL;

done:
  g_free(cached);
  g_free(model_name);
  i2i_layer_clear(&L);
  i2i_directions_free(inst, ni);
  i2i_directions_free(dirs, nd);
  i2i_ctx_free(ctx);
  if (status == GIMP_PDB_SUCCESS || status == GIMP_PDB_CANCEL) {
    g_free(*err);
    *err = NULL;
  }
  return status;
}
