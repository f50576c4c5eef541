/* cuda/cuda_api.h: the contract between libi2i and its run-time loaded CUDA module.
 *
 * The module (libi2i-cuda.so) exports i2i_cuda_open and i2i_cuda_get_ext and reaches the engine
 * only through the host table, so neither the tool nor the plug-in links CUDA. The extension
 * table is optional: device image path, statistics, precision, test and benchmark hooks. */
#ifndef I2I_CUDA_API_H
#define I2I_CUDA_API_H

#include "../internal.h"

#define I2I_CUDA_API_VERSION 2

typedef struct {
  int api_version;
  i2i_status (*fail)(i2i_ctx *ctx, i2i_status st, const char *fmt, ...);
  void (*log)(i2i_ctx *ctx, i2i_log_level lvl, const char *fmt, ...);
  i2i_status (*progress)(i2i_ctx *ctx, i2i_run_state *st, double done, double total);
  bool (*dropout_keep)(uint64_t seed, uint32_t x, uint32_t y, uint32_t channel, uint32_t batch_index,
                       uint32_t ordinal, uint64_t step, uint32_t threshold);
} i2i_cuda_host;

/* Opens the backend on CUDA device `device`. Returns 0 and fills *ops and *self, or nonzero
 * with a one-line reason in `why` (no driver, driver too old, no device, compute capability
 * below 7.5, cuDNN missing...). Never exits. */
typedef int (*i2i_cuda_open_fn)(const i2i_cuda_host *host, int device, const i2i_backend_ops **ops, void **self,
                                char *why, size_t whylen);

/* ---- extension table (exported as i2i_cuda_get_ext) ----------------------------------------- */

#define I2I_CUDA_EXT_VERSION 4

/* Device precisions. FP32: NCHW float32, cuDNN with CUDNN_FMA_MATH (no TF32 anywhere): the
 * parity path. FP16: NHWC half activations and KRSC half filters on tensor cores, float32
 * accumulation, float32 normalisation statistics: the speed path and the default. The
 * environment variable I2I_CUDA_PRECISION=fp32|fp16 sets the default of a new backend. */
enum { I2I_CUDA_FP32 = 0, I2I_CUDA_FP16 = 1 };

/* The caller's images for execute_images: what i2i_run received. */
typedef struct {
  int n_images, width, height;  /* before padding; the plan has the padded size */
  int layout;                   /* I2I_PIXELS_RGBA or I2I_PIXELS_RGB_SIGNED */
  float strength;
  const float *const *in;
  float *const *out;            /* may equal in[i] */
} i2i_cuda_images;

typedef struct {
  uint64_t algo_searches;       /* cuDNN algorithm searches (timed FindEx calls) this backend ran */
  uint64_t algo_cache_hits;     /* convolutions whose algorithm came from the on-disk cache */
  uint64_t plans_built;         /* device plans built (per shape, precision and mode) */
  uint64_t runs;
  uint64_t oom_retries;         /* runs retried after freeing the caches */
  uint64_t graphs_captured;     /* CUDA graphs captured (I2I_CUDA_GRAPH=1 or the bench hook) */
  uint64_t graph_failures;      /* captures that failed (those plans run eagerly) */
  uint64_t device_bytes;        /* device memory the backend holds now */
  uint64_t peak_device_bytes;   /* the most it held at once */
  int precision;                /* I2I_CUDA_FP32 / I2I_CUDA_FP16 */
  int dead;                     /* a sticky error made the device unusable */
  int cc_major, cc_minor;
  int driver_version, runtime_version;
  size_t cudnn_version;
  int sm_count;
  char device_name[128];
  char algo_cache_path[512];    /* "" when the cache is off */
} i2i_cuda_stats;

typedef struct {
  int version;  /* I2I_CUDA_EXT_VERSION */
  /* Runs the plan on the caller's images with the image conversions on the device: reflect-pad
   * to the plan's size, [0,1] RGBA (or [-1,1] RGB) to the model's input, the model, and the
   * crop, strength blend and alpha copy back; exactly what run.c does on the host. st->arena is
   * not used (it may be NULL). Errors as execute. */
  i2i_status (*execute_images)(void *self, i2i_ctx *ctx, const i2i_model *model, const struct i2i_plan *plan,
                               struct i2i_run_state *st, const i2i_cuda_images *im);
  void (*get_stats)(void *self, i2i_cuda_stats *out);
  /* Sets the precision of later runs (I2I_CUDA_FP32 / I2I_CUDA_FP16). I2I_E_ARG otherwise. */
  i2i_status (*set_precision)(void *self, int precision);
  /* Testing: runs steps [first, last) of `plan` alone. Every runtime value those steps read but
   * do not produce is uploaded from st->arena + plan->offset[v]; every value they produce is
   * downloaded to st->arena + plan->offset[v] (the caller gives distinct offsets). Fusions
   * apply only inside the range. No caching of the device plan. */
  i2i_status (*run_steps)(void *self, i2i_ctx *ctx, const i2i_model *model, const struct i2i_plan *plan,
                          struct i2i_run_state *st, int first, int last);
  /* Benchmark: uploads the plan's input from st->arena once, runs the whole plan `warmup`
   * times, then `iters` times with CUDA events around each run (device-resident: no host
   * transfers inside), writes each run's milliseconds to ms[0..iters-1] and downloads the
   * output to st->arena. `graph` nonzero replays a captured CUDA graph where capture works. */
  i2i_status (*bench)(void *self, i2i_ctx *ctx, const i2i_model *model, const struct i2i_plan *plan,
                      struct i2i_run_state *st, int warmup, int iters, int graph, double *ms);
  /* Frees every cached device plan and weight copy (the next run rebuilds them). */
  void (*trim)(void *self);
  /* Training (train.cu): a training backend (internal.h) on this device, float32 data; its
   * convolutions run on TF32 tensor cores where the GPU has them (compute capability 8.0 or
   * newer) unless I2I_CUDA_TF32=0 asks for float32 FMA (ops->math says which). Fills *ops and
   * *tself (freed by ops->destroy, before the backend itself goes). I2I_E_DEVICE with the reason
   * when the GPU is unusable. */
  i2i_status (*train_open)(void *self, i2i_ctx *ctx, const i2i_train_backend_ops **ops, void **tself);
  /* Layer-wise runs of images too large for the device budget (banded.cu): runs convolution
   * step `step` of `plan` for every image on the GPU in bands of output rows, reading its input
   * from st->arena (the halo rows a band needs are real neighbouring rows; padding is applied
   * only at the image's edges, as the CPU does) and writing its output there. Device memory:
   * the model's weights plus band buffers and workspace within st->device_budget (0 =
   * automatic: 90% of the free device memory); an out-of-memory halves the band and retries.
   * *bands: the bands of the step. Progress is reported through the host from `done` FLOPs
   * (plan->total_flops in all). Errors as execute (I2I_E_DEVICE_NOMEM when one row does not
   * fit). */
  i2i_status (*conv_step)(void *self, i2i_ctx *ctx, const i2i_model *model, const struct i2i_plan *plan,
                          struct i2i_run_state *st, int step, double done, int *bands);
  /* Starts a run with a device budget (bytes, 0 = none given): cached plans and weights that do
   * not fit in it are freed, and peak_device_bytes starts again from what the module then holds
   * (run.c, once per run, so the run's report has its own peak). */
  void (*begin_run)(void *self, uint64_t budget);
} i2i_cuda_ext;

/* Returns the module's extension table (static storage). */
typedef const i2i_cuda_ext *(*i2i_cuda_get_ext_fn)(void);

#endif
