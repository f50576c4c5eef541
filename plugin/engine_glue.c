/* engine_glue.c: the plug-in's use of the engine run API: a context per run configuration,
 * run parameters from the options, the strength blend applied to cached results, and the
 * I2I_VERBOSE timing lines.
 *
 * The blend reproduces the engine's own (run.c): in clamped to [0,1], out = in + s(res - in),
 * alpha from the input. Nothing here talks to GIMP or GTK.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "i2i_plugin.h"

i2i_ctx *i2i_ctx_for(const i2i_opts *o, char **err) {
  *err = NULL;
  i2i_ctx_params p;
  i2i_ctx_default_params(&p);
  p.backend = o->device == I2I_DEVICE_GPU ? I2I_BACKEND_CUDA
            : o->device == I2I_DEVICE_CPU ? I2I_BACKEND_CPU
                                          : I2I_BACKEND_AUTO;
  p.memory_budget = (uint64_t)(o->memory_mb > 0 ? o->memory_mb : 0) << 20;
  i2i_ctx *ctx = NULL;
  i2i_status st = i2i_ctx_create(&p, &ctx);
  if (st) {
    *err = g_strdup_printf("i2i: cannot create the engine context (%s)", i2i_status_name(st));
    return NULL;
  }
  return ctx;
}

void i2i_run_params_for(const i2i_opts *o, double strength_override, int scale, i2i_run_params *rp) {
  i2i_run_default_params(rp);
  rp->layout = I2I_PIXELS_RGBA;
  rp->pix2pix_mode = (i2i_pix2pix_mode)o->pix2pix_mode;
  /* as `i2i translate --seed`: the signed value widened, then read as unsigned */
  rp->seed = (uint64_t)(int64_t)o->seed;
  rp->strength = strength_override >= 0 ? (float)strength_override : (float)(o->strength / 100.0);
  rp->scale = scale;
}

void i2i_blend_rows(const float *in, const float *res, size_t stride_px, int width, int height, float s,
                    float *out, size_t out_stride_px) {
  for (int y = 0; y < height; y++) {
    const float *a = in + (size_t)y * stride_px * 4;
    const float *r = res + (size_t)y * stride_px * 4;
    float *d = out + (size_t)y * out_stride_px * 4;
    for (int x = 0; x < width; x++) {
      for (int c = 0; c < 3; c++) {
        float o = a[x * 4 + c];
        if (!(o >= 0)) o = 0;
        if (o > 1) o = 1;
        d[x * 4 + c] = s == 1.0f ? r[x * 4 + c] : o + s * (r[x * 4 + c] - o);
      }
      d[x * 4 + 3] = a[x * 4 + 3];
    }
  }
}

static double now_ms(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* The process start from /proc/self/stat (clock ticks since boot), on CLOCK_BOOTTIME. */
static double process_start_ms(void) {
#ifdef __linux__
  FILE *f = fopen("/proc/self/stat", "r");
  if (f) {
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long long start = 0;
    int field = 2;
    for (; p && *p; p++)
      if (*p == ' ' && ++field == 22) {
        start = strtoull(p + 1, NULL, 10);
        break;
      }
    long tck = sysconf(_SC_CLK_TCK);
    if (start && tck > 0) return (double)start * 1e3 / (double)tck;
  }
#endif
  return -1;
}

double i2i_ms_since_start(void) {
  static double start = -2;
  if (start == -2) {
    start = process_start_ms();
    if (start < 0) start = now_ms(CLOCK_BOOTTIME);
  }
  return now_ms(CLOCK_BOOTTIME) - start;
}

double i2i_cpu_seconds(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

bool i2i_verbose(void) {
  const char *v = getenv("I2I_VERBOSE");
  return v && *v && strcmp(v, "0") != 0;
}

void i2i_vlog(const char *fmt, ...) {
  if (!i2i_verbose()) return;
  va_list ap;
  va_start(ap, fmt);
  char *s = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  fprintf(stderr, "i2i: [%8.1f ms] %s\n", i2i_ms_since_start(), s);
  g_free(s);
}
