/* run.h: the run of one i2i procedure, shared by the GIMP 2.10 and the GIMP 3 glue.
 *
 * The glue unpacks the arguments (2.10: GimpParam by position; GIMP 3: the procedure's config)
 * into i2i_opts and hands over here: range checks, the model, the layer's pixels, the dialog in
 * interactive mode, the engine run and the write-back as one undo step. Not here: registration,
 * last values and the way errors go back to GIMP (a STRING return value or a GError).
 */
#ifndef I2I_RUN_H
#define I2I_RUN_H

#include "pixels.h"

/* Runs procedure call->name (a published direction, an installed model's procedure or the
 * generic plug-in-i2i-translate) on `drawable` in run mode `mode`. `o` holds the options the
 * glue unpacked: the arguments for RUN-NONINTERACTIVE, the last values (or the defaults) for the
 * other modes; after an interactive run it holds the options chosen in the dialog. Returns
 * GIMP_PDB_SUCCESS, GIMP_PDB_CANCEL (dialog cancelled; *err NULL), or GIMP_PDB_CALLING_ERROR /
 * GIMP_PDB_EXECUTION_ERROR with *err (g_free) the message ("i2i: ..."). Never writes to the
 * drawable unless it succeeds. */
GimpPDBStatusType i2i_run_procedure(const i2i_gimp_call *call, GimpRunMode mode, i2i_gimp_drawable drawable,
                                    i2i_opts *o, char **err);

#endif
