/* ctx.c: the engine context: parameters, the allocator hook, error messages and logging.
 *
 * Every host allocation of the engine passes through i2i_alloc / i2i_dealloc here, so tests can
 * fail any of them. The context never touches a GPU when it is created; backends are chosen at
 * the first run (run.c, cuda_loader.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

const char *i2i_version(void) { return "0.1.0"; }

const char *i2i_status_name(i2i_status s) {
  switch (s) {
  case I2I_OK: return "I2I_OK";
  case I2I_E_ARG: return "I2I_E_ARG";
  case I2I_E_IO: return "I2I_E_IO";
  case I2I_E_FORMAT: return "I2I_E_FORMAT";
  case I2I_E_UNSUPPORTED: return "I2I_E_UNSUPPORTED";
  case I2I_E_LIMIT: return "I2I_E_LIMIT";
  case I2I_E_NOMEM: return "I2I_E_NOMEM";
  case I2I_E_DEVICE_NOMEM: return "I2I_E_DEVICE_NOMEM";
  case I2I_E_DEVICE: return "I2I_E_DEVICE";
  case I2I_E_CANCELLED: return "I2I_E_CANCELLED";
  case I2I_E_NOT_FOUND: return "I2I_E_NOT_FOUND";
  case I2I_E_INTERNAL: return "I2I_E_INTERNAL";
  }
  return "I2I_E_UNKNOWN";
}

void i2i_ctx_default_params(i2i_ctx_params *p) {
  memset(p, 0, sizeof *p);
  p->backend = I2I_BACKEND_AUTO;
  p->log_level = I2I_LOG_WARNING;
  p->limits.max_model_bytes = (uint64_t)1 << 30;
  p->limits.max_tensors = 100000;
  p->limits.max_nodes = 100000;
  p->limits.max_depth = 16;
  p->limits.max_image_side = 65536;
  p->limits.max_image_pixels = (uint64_t)1 << 30;
}

/* The backend asked for after the I2I_BACKEND override (which applies to AUTO only); an unknown
 * value is ignored, and reported on ctx when ctx is not NULL (at creation only). */
static i2i_backend env_backend(i2i_ctx *ctx, i2i_backend asked) {
  const char *e = getenv("I2I_BACKEND");
  if (!e || !*e) return asked;
  i2i_backend b = !strcmp(e, "cpu") ? I2I_BACKEND_CPU : !strcmp(e, "cuda") ? I2I_BACKEND_CUDA : I2I_BACKEND_AUTO;
  if (ctx && b == I2I_BACKEND_AUTO && strcmp(e, "auto"))
    i2i_log(ctx, I2I_LOG_WARNING, "I2I_BACKEND=%s is not auto, cpu or cuda: ignored", e);
  return asked != I2I_BACKEND_AUTO ? asked : b;
}

i2i_status i2i_ctx_create(const i2i_ctx_params *p, i2i_ctx **out) {
  if (!out) return I2I_E_ARG;
  *out = NULL;
  i2i_ctx_params d;
  if (!p) {
    i2i_ctx_default_params(&d);
    p = &d;
  }
  if ((p->allocator.alloc == NULL) != (p->allocator.free == NULL)) return I2I_E_ARG;
  if (p->threads < 0 || p->device < 0) return I2I_E_ARG;
  i2i_ctx *ctx = p->allocator.alloc ? p->allocator.alloc(p->allocator.user, sizeof *ctx)
                                    : malloc(sizeof *ctx);
  if (!ctx) return I2I_E_NOMEM;
  memset(ctx, 0, sizeof *ctx);
  ctx->p = *p;
  i2i_limits z = {0};
  if (!memcmp(&ctx->p.limits, &z, sizeof z)) {
    i2i_ctx_params dp;
    i2i_ctx_default_params(&dp);
    ctx->p.limits = dp.limits;
  }
  ctx->forced = env_backend(ctx, p->backend);
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  if (ncpu < 1) ncpu = 1;
  /* more threads than 4 per CPU only costs, and far more makes OpenMP fail to start them */
  ctx->threads = p->threads > 0 ? (p->threads > 4 * ncpu ? (int)(4 * ncpu) : p->threads) : (int)ncpu;
  *out = ctx;
  return I2I_OK;
}

void i2i_ctx_free(i2i_ctx *ctx) {
  if (!ctx) return;
  if (ctx->plan_cache) plan_free(ctx, ctx->plan_cache);
  for (int i = 0; i < 2; i++) i2i_free_aligned(ctx, ctx->kept[i]);
  manifest_free(ctx);
  i2i_cuda_unload(ctx);
  if (ctx->p.allocator.free)
    ctx->p.allocator.free(ctx->p.allocator.user, ctx);
  else
    free(ctx);
}

const char *i2i_ctx_errmsg(const i2i_ctx *ctx) { return ctx ? ctx->err : "no context"; }

void i2i_ctx_set_memory_budget(i2i_ctx *ctx, uint64_t bytes) {
  if (ctx) ctx->p.memory_budget = bytes;
}

void i2i_ctx_set_backend(i2i_ctx *ctx, i2i_backend backend) {
  if (!ctx) return;
  ctx->p.backend = backend;
  ctx->forced = env_backend(NULL, backend);
}

void *i2i_alloc(i2i_ctx *ctx, size_t size) {
  if (size == 0) size = 1;
  if (ctx->p.allocator.alloc) return ctx->p.allocator.alloc(ctx->p.allocator.user, size);
  return malloc(size);
}

void *i2i_calloc(i2i_ctx *ctx, size_t n, size_t size) {
  size_t total;
  if (!i2i_mul_ok(n, size, &total)) return NULL;
  void *p = i2i_alloc(ctx, total);
  if (p) memset(p, 0, total ? total : 1);
  return p;
}

void i2i_dealloc(i2i_ctx *ctx, void *ptr) {
  if (!ptr) return;
  if (ctx->p.allocator.free)
    ctx->p.allocator.free(ctx->p.allocator.user, ptr);
  else
    free(ptr);
}

void i2i_free(i2i_ctx *ctx, void *ptr) {
  if (ctx) i2i_dealloc(ctx, ptr);
}

char *i2i_strdup(i2i_ctx *ctx, const char *s) {
  if (!s) s = "";
  size_t n = strlen(s) + 1;
  char *r = i2i_alloc(ctx, n);
  if (r) memcpy(r, s, n);
  return r;
}

/* Aligned blocks keep the offset to the underlying allocation just before the block. */
void *i2i_alloc_aligned(i2i_ctx *ctx, size_t size) {
  size_t total;
  if (!i2i_add_ok(size, 64 + sizeof(size_t), &total)) return NULL;
  unsigned char *raw = i2i_alloc(ctx, total);
  if (!raw) return NULL;
  uintptr_t a = ((uintptr_t)raw + sizeof(size_t) + 63) & ~(uintptr_t)63;
  ((size_t *)a)[-1] = a - (uintptr_t)raw;
  return (void *)a;
}

void i2i_free_aligned(i2i_ctx *ctx, void *ptr) {
  if (!ptr) return;
  size_t off = ((size_t *)ptr)[-1];
  i2i_dealloc(ctx, (unsigned char *)ptr - off);
}

i2i_status i2i_fail(i2i_ctx *ctx, i2i_status st, const char *fmt, ...) {
  if (!ctx) return st;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
  va_end(ap);
  i2i_log(ctx, I2I_LOG_DEBUG, "error %s: %s", i2i_status_name(st), ctx->err);
  return st;
}

void i2i_prefix_err(i2i_ctx *ctx, const char *fmt, ...) {
  char pre[I2I_ERRLEN], old[I2I_ERRLEN];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(pre, sizeof pre, fmt, ap);
  va_end(ap);
  snprintf(old, sizeof old, "%s", ctx->err);
  snprintf(ctx->err, sizeof ctx->err, "%.400s: %.600s", pre, old);
}

void i2i_clear_err(i2i_ctx *ctx) { ctx->err[0] = 0; }

void i2i_log(i2i_ctx *ctx, i2i_log_level lvl, const char *fmt, ...) {
  if (!ctx || !ctx->p.log || lvl > ctx->p.log_level) return;
  char buf[I2I_ERRLEN];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  ctx->p.log(ctx->p.log_user, lvl, buf);
}
