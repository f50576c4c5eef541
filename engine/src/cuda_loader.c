/* cuda_loader.c: finds and opens the CUDA backend module at run time (GModule).
 *
 * Search order: $I2I_CUDA_MODULE, the build tree's module folder, the installed module folder.
 * Any failure (module absent, libcudart or libcudnn absent, no driver, no device) leaves the
 * context on the CPU with the reason in ctx->cuda_why; nothing here links CUDA. The candidate
 * paths are fixed at build time or read from the environment, so this file allocates nothing;
 * g_module_open (dlopen) and the module itself allocate outside the context's allocator hook.
 */
#include <gmodule.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_api.h"
#include "internal.h"

#ifndef I2I_CUDA_BUILD_DIR
#define I2I_CUDA_BUILD_DIR ""
#endif
#ifndef I2I_CUDA_INSTALL_DIR
#define I2I_CUDA_INSTALL_DIR ""
#endif

static const i2i_cuda_host host = {I2I_CUDA_API_VERSION, i2i_fail, i2i_log, run_progress, dropout_keep};

static bool file_exists(const char *p) { return p && *p && g_file_test(p, G_FILE_TEST_IS_REGULAR); }

const i2i_backend_ops *cuda_backend(i2i_ctx *ctx, void **self) {
  if (ctx->cuda_probed) {
    *self = ctx->cuda_self;
    return ctx->cuda_ops;
  }
  ctx->cuda_probed = 1;
  const char *env = getenv("I2I_CUDA_MODULE");
  const char *cands[2] = {NULL, NULL};
  int nc = 0;
  if (env && *env) cands[nc++] = env;
  else {
    if (I2I_CUDA_BUILD_DIR[0]) cands[nc++] = I2I_CUDA_BUILD_DIR "/libi2i-cuda.so";
    if (I2I_CUDA_INSTALL_DIR[0]) cands[nc++] = I2I_CUDA_INSTALL_DIR "/libi2i-cuda.so";
  }
  const char *path = NULL;
  for (int i = 0; i < nc; i++)
    if (file_exists(cands[i])) {
      path = cands[i];
      break;
    }
  if (!path) {
    snprintf(ctx->cuda_why, sizeof ctx->cuda_why, "the CUDA backend module is not installed (looked for %s)",
             nc ? cands[nc - 1] : "libi2i-cuda.so");
    goto out;
  }
  /* no lazy binding: a libcudnn or libcudart lacking a symbol must fail here, not abort later */
  GModule *mod = g_module_open(path, G_MODULE_BIND_LOCAL);
  if (!mod) {
    const char *e = g_module_error();
    snprintf(ctx->cuda_why, sizeof ctx->cuda_why, "the CUDA backend cannot load: %s", e ? e : "unknown error");
    goto out;
  }
  gpointer sym = NULL;
  if (!g_module_symbol(mod, "i2i_cuda_open", &sym) || !sym) {
    snprintf(ctx->cuda_why, sizeof ctx->cuda_why, "'%s' is not an i2i CUDA module", path);
    g_module_close(mod);
    goto out;
  }
  i2i_cuda_open_fn open_fn = (i2i_cuda_open_fn)sym;
  char why[512] = "";
  const i2i_backend_ops *ops = NULL;
  void *s = NULL;
  if (open_fn(&host, ctx->p.device, &ops, &s, why, sizeof why) != 0 || !ops) {
    snprintf(ctx->cuda_why, sizeof ctx->cuda_why, "%s", why[0] ? why : "the CUDA backend did not start");
    g_module_close(mod);
    goto out;
  }
  ctx->cuda_module = mod;
  ctx->cuda_ops = ops;
  ctx->cuda_self = s;
  gpointer esym = NULL;
  if (g_module_symbol(mod, "i2i_cuda_get_ext", &esym) && esym) {
    const i2i_cuda_ext *ext = ((i2i_cuda_get_ext_fn)esym)();
    if (ext && ext->version == I2I_CUDA_EXT_VERSION) {
      ctx->cuda_ext = ext;
      i2i_precision pr = ctx->p.precision;
      const char *pe = getenv("I2I_PRECISION");
      if (pr == I2I_PRECISION_AUTO && pe && !strcmp(pe, "fp32")) pr = I2I_PRECISION_FP32;
      if (pr == I2I_PRECISION_AUTO && pe && !strcmp(pe, "fp16")) pr = I2I_PRECISION_FP16;
      if (pr != I2I_PRECISION_AUTO) ext->set_precision(s, pr == I2I_PRECISION_FP32 ? I2I_CUDA_FP32 : I2I_CUDA_FP16);
    }
  }
out:
  *self = ctx->cuda_self;
  return ctx->cuda_ops;
}

void cuda_backend_disable(i2i_ctx *ctx, const char *why) {
  ctx->cuda_probed = 1;
  if (ctx->cuda_ops && ctx->cuda_ops->destroy) ctx->cuda_ops->destroy(ctx->cuda_self);
  ctx->cuda_ops = NULL;
  ctx->cuda_self = NULL;
  ctx->cuda_ext = NULL;
  snprintf(ctx->cuda_why, sizeof ctx->cuda_why, "%s", why);
}

void i2i_cuda_unload(i2i_ctx *ctx) {
  if (ctx->cuda_ops && ctx->cuda_ops->destroy) ctx->cuda_ops->destroy(ctx->cuda_self);
  ctx->cuda_ops = NULL;
  ctx->cuda_self = NULL;
  ctx->cuda_ext = NULL;
  if (ctx->cuda_module) g_module_close(ctx->cuda_module);
  ctx->cuda_module = NULL;
}
