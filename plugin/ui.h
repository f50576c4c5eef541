/* ui.h: the plug-in's dialog, as the shared run (run.c) calls it.
 *
 * One implementation per toolkit: ui_gtk2.c for GIMP 2.10 (GTK 2, hand-built GimpDialog) and
 * ui_gtk3.c for GIMP 3 (GTK 3, GimpProcedureDialog bound to the procedure's config); both use
 * the shared preview logic of ui_preview.c. The dialog shows a live preview rendered by the
 * preview worker (preview.c) and never writes to the drawable: on OK it hands back the options
 * and, when ready, the exact result it rendered.
 */
#ifndef I2I_UI_H
#define I2I_UI_H

#include "pixels.h"

/* Opens the display and initialises the toolkit for plug-in `binary`. False with *err (g_free)
 * when there is no display (e.g. RUN-INTERACTIVE under gimp-console). */
bool i2i_ui_init(const char *binary, char **err);

/* Runs the dialog of the procedure `call` (`dir` NULL for the generic procedure) on drawable
 * `d`, whose pixels `L` has read. `o` holds the initial options and receives the chosen ones
 * (GIMP 3: the call's config holds them too). Returns GIMP_PDB_SUCCESS on OK, with *model_name
 * (g_free) the model to run and *cached either NULL or the strength-1 whole-layer result for
 * exactly those options (the caller owns it); GIMP_PDB_CANCEL on Cancel; GIMP_PDB_EXECUTION_ERROR
 * with *err (g_free) when the dialog cannot work (no models installed, no thread). */
GimpPDBStatusType i2i_dialog_run(const i2i_gimp_call *call, const i2i_direction *dir, i2i_gimp_drawable d,
                                 const i2i_layer *L, i2i_opts *o, char **model_name, float **cached,
                                 char **err);

#endif
