/* internal.h: libi2i's private declarations, shared by the engine's source files.
 *
 * Holds the context, the allocator and error helpers, the graph model every part works on
 * (constant tensors, values, nodes with parsed attributes), the execution plan and the backend
 * table. Nothing here is visible to clients: they see engine/include/i2i.h only.
 */
#ifndef I2I_INTERNAL_H
#define I2I_INTERNAL_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "i2i.h"

#define I2I_MAX_RANK 8
#define I2I_ERRLEN 1024

#if defined(__GNUC__)
#define I2I_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define I2I_PRINTF(a, b)
#endif

/* ---- checked arithmetic ---------------------------------------------------------------- */

static inline bool i2i_mul_ok(size_t a, size_t b, size_t *r) { return !__builtin_mul_overflow(a, b, r); }
static inline bool i2i_add_ok(size_t a, size_t b, size_t *r) { return !__builtin_add_overflow(a, b, r); }
static inline bool i2i_mul64_ok(int64_t a, int64_t b, int64_t *r) { return !__builtin_mul_overflow(a, b, r); }
static inline bool i2i_add64_ok(int64_t a, int64_t b, int64_t *r) { return !__builtin_add_overflow(a, b, r); }

/* ---- backends ---------------------------------------------------------------------------- */

struct i2i_plan;

/* One buffer of a liveness-planned arena: `size` floats alive from step `first` to step `last`
 * (inclusive). plan_place_buffers sets `offset` (floats, 16-aligned) and `placed`. */
typedef struct {
  size_t size;
  int first, last;
  size_t offset;
  bool placed;
} plan_buffer;

/* Places the nb buffers greedily, largest first, each at the lowest offset free of every placed
 * buffer whose lifetime overlaps; returns the arena size in floats, or SIZE_MAX on overflow. */
size_t plan_place_buffers(plan_buffer *b, int nb);
struct i2i_run_state;

/* A backend executes a plan. The CPU backend is built in; the CUDA backend lives in a module
 * loaded at run time that fills this table (engine/src/cuda/). */
typedef struct i2i_backend_ops {
  const char *name;
  /* Runs the steps of `plan` on the images in `st` (normalised NCHW input, NCHW output). */
  i2i_status (*execute)(void *self, i2i_ctx *ctx, const i2i_model *model,
                        const struct i2i_plan *plan, struct i2i_run_state *st);
  void (*destroy)(void *self);
} i2i_backend_ops;

/* ---- context ----------------------------------------------------------------------------- */

struct i2i_ctx {
  i2i_ctx_params p;
  char err[I2I_ERRLEN];
  i2i_backend forced;          /* the backend asked for after the environment override */
  int threads;                 /* resolved thread count */
  /* CUDA module state: probed once per context */
  int cuda_probed;
  int train_on_cpu;            /* set while a trainer is made again on the CPU (train/trainer.c) */
  const i2i_backend_ops *cuda_ops;
  void *cuda_self;
  char cuda_why[512];          /* why CUDA is not used, when it is not */
  void *cuda_module;           /* GModule* */
  const void *cuda_ext;        /* the module's i2i_cuda_ext table (cuda/cuda_api.h), or NULL */
  /* manifest, parsed on first use */
  struct i2i_manifest *manifest;
  /* one cached execution plan */
  struct i2i_plan *plan_cache;
  const i2i_model *plan_model;
  uint64_t plan_model_serial;
  /* the last CPU run's working memory (i2i_alloc_aligned), kept for the next run (run.c) */
  void *kept[2];
  size_t kept_bytes[2];
};

void *i2i_alloc(i2i_ctx *ctx, size_t size);
void *i2i_calloc(i2i_ctx *ctx, size_t n, size_t size);  /* zeroed, overflow-checked */
void i2i_dealloc(i2i_ctx *ctx, void *ptr);
char *i2i_strdup(i2i_ctx *ctx, const char *s);
/* Allocations aligned to 64 bytes (large float buffers); freed with i2i_free_aligned. */
void *i2i_alloc_aligned(i2i_ctx *ctx, size_t size);
void i2i_free_aligned(i2i_ctx *ctx, void *ptr);

/* Sets the context message and returns `st`. */
i2i_status i2i_fail(i2i_ctx *ctx, i2i_status st, const char *fmt, ...) I2I_PRINTF(3, 4);
/* Prepends "prefix: " to the current message. */
void i2i_prefix_err(i2i_ctx *ctx, const char *fmt, ...) I2I_PRINTF(2, 3);
void i2i_log(i2i_ctx *ctx, i2i_log_level lvl, const char *fmt, ...) I2I_PRINTF(3, 4);
void i2i_clear_err(i2i_ctx *ctx);

/* ---- graph ------------------------------------------------------------------------------- */

/* ONNX TensorProto data types used here. */
enum {
  DT_FLOAT = 1, DT_UINT8 = 2, DT_INT8 = 3, DT_UINT16 = 4, DT_INT16 = 5, DT_INT32 = 6,
  DT_INT64 = 7, DT_BOOL = 9, DT_FLOAT16 = 10, DT_DOUBLE = 11, DT_UINT32 = 12, DT_UINT64 = 13,
  DT_BFLOAT16 = 16
};

/* A constant tensor. Storage is float32 for floating types and int64 for integer and boolean
 * types; `dtype` keeps the declared ONNX type (for writing back and for Cast). */
typedef struct i2i_tensor {
  int dtype;
  int rank;
  int64_t dims[I2I_MAX_RANK];
  size_t numel;
  void *data;       /* float* or int64_t*; owned unless `borrowed` */
  bool borrowed;    /* data points into the model's flat weight buffer */
} i2i_tensor;

static inline bool tensor_is_float(const i2i_tensor *t) {
  return t->dtype == DT_FLOAT || t->dtype == DT_FLOAT16 || t->dtype == DT_DOUBLE || t->dtype == DT_BFLOAT16;
}

typedef enum {
  /* compute ops */
  OP_CONV = 1, OP_CONVT, OP_INSTNORM, OP_BATCHNORM, OP_PAD, OP_RELU, OP_LRELU, OP_TANH, OP_ADD,
  OP_CONCAT, OP_DROPOUT, OP_IDENTITY,
  /* folded at load only */
  OP_CONSTANT, OP_CONSTOFSHAPE, OP_RESHAPE, OP_SLICE, OP_TRANSPOSE, OP_CAST, OP_SHAPE, OP_GATHER,
  OP_MUL, OP_SUB, OP_DIV, OP_UNSQUEEZE, OP_SQUEEZE,
  OP_COUNT_
} i2i_op;

enum { ATTR_NONE = 0, ATTR_INT = I2I_ATTR_INT, ATTR_FLOAT = I2I_ATTR_FLOAT, ATTR_INTS = I2I_ATTR_INTS,
       ATTR_STRING = I2I_ATTR_STRING, ATTR_TENSOR, ATTR_FLOATS };

typedef struct {
  char *name;
  int type;
  int64_t i;
  float f;
  int64_t *ints;    /* ATTR_INTS */
  float *floats;    /* ATTR_FLOATS */
  int n;            /* element count of ints / floats */
  char *s;
  i2i_tensor *t;    /* ATTR_TENSOR */
} i2i_attr_v;

enum { PAD_CONSTANT = 0, PAD_REFLECT, PAD_EDGE };
enum { ACT_NONE = 0, ACT_RELU, ACT_LRELU };

typedef struct {
  int kernel[2], stride[2], dilation[2];
  int pads[4];            /* top, left, bottom, right */
  int out_pad[2];
  int group;
} conv_params;

typedef struct i2i_node {
  char *op_type;
  char *name;
  char *domain;
  i2i_op op;
  int n_in, n_out;
  int *in;                /* value index, -1 for an absent optional input */
  int *out;
  int n_attr;
  i2i_attr_v *attr;
  /* parsed when the graph is finalised */
  conv_params conv;
  float eps, alpha, momentum, ratio;
  int pad_mode;
  int axis;
  bool bn_training;       /* BatchNormalization in training form, or an InstanceNormalization
                           * that stands for a BatchNorm (metadata i2i.batchnorm) */
  bool bn_from_in;        /* InstanceNormalization listed in i2i.batchnorm */
  int bn_mean, bn_var;    /* value indices of running statistics for eval mode, or -1 */
  int ordinal;            /* Dropout: index among Dropout nodes in execution order */
  int64_t pads8[8];       /* Pad: the constant pads (N,C,H,W begins then ends) */
  float pad_value;
} i2i_node;

typedef struct {
  char *name;
  i2i_tensor *c;          /* constant, or NULL for a runtime value */
  int producer;           /* node index, or -1 (graph input or constant) */
  int alias;              /* Identity folding: the value this one stands for, or -1 */
  int channels;           /* static channel count of a runtime value when known, else -1 */
} i2i_value;

typedef struct {
  char *key, *value;
} i2i_meta_kv;

/* The graph as read from ONNX or made by the builder, and after finalisation. */
typedef struct i2i_graph {
  i2i_value *values;
  int n_values, cap_values;
  i2i_node *nodes;
  int n_nodes, cap_nodes;
  int input, output;       /* value indices; -1 until declared */
  int in_channels, out_channels;
  i2i_meta_kv *meta;
  int n_meta, cap_meta;
  int64_t ir_version;
  int opset;
  char *producer_name, *producer_version, *graph_name, *doc;
  /* after finalisation */
  int *hash;               /* value-name index (open addressing), hash_cap entries */
  int hash_cap;
  int *order;              /* compute nodes in execution order */
  int n_order;
  int n_folded;
  /* memory whose contents are dead (a model file's bytes once decoded, i2i_alloc_aligned), for
   * pack_weights to take instead of fresh pages; freed by it or by graph_clear */
  void *spare;
  size_t spare_bytes;
} i2i_graph;

struct i2i_model {
  i2i_ctx *ctx;
  i2i_graph g;
  float *weights;          /* one flat buffer holding every float constant */
  size_t n_weights;
  uint64_t serial;         /* unique per loaded model (plan cache key) */
  i2i_model_info info;
  const char **io_names;   /* per compute node: input names then output names */
  size_t *io_off;          /* node k's names start at io_names[io_off[k]] */
};

/* graph.c */
void graph_init(i2i_graph *g);
void graph_clear(i2i_ctx *ctx, i2i_graph *g);
int graph_find_value(const i2i_graph *g, const char *name);
/* Returns the index of value `name`, creating it when absent; -1 on allocation failure. */
int graph_value(i2i_ctx *ctx, i2i_graph *g, const char *name);
i2i_status graph_add_node(i2i_ctx *ctx, i2i_graph *g, const char *op_type, const char *name,
                          const char *domain, int n_in, const char *const *in, int n_out,
                          const char *const *out, i2i_node **node_out);
i2i_status graph_set_meta(i2i_ctx *ctx, i2i_graph *g, const char *key, const char *value);
const char *graph_meta(const i2i_graph *g, const char *key);
i2i_tensor *tensor_new(i2i_ctx *ctx, int dtype, int rank, const int64_t *dims);
/* A tensor around `data`, which it then owns: numel elements of the dtype's storage size, from
 * i2i_alloc_aligned or a block laid out as its are (onnx_read.c's protobuf allocator); NULL (data
 * not taken) when out of memory or the dims are bad. */
i2i_tensor *tensor_adopt(i2i_ctx *ctx, int dtype, int rank, const int64_t *dims, void *data);
void tensor_free(i2i_ctx *ctx, i2i_tensor *t);
i2i_tensor *tensor_clone(i2i_ctx *ctx, const i2i_tensor *t);
const i2i_attr_v *node_attr(const i2i_node *n, const char *name);
/* Checks, folds, orders and packs a raw graph into a model (takes ownership of *g). */
i2i_status model_from_graph(i2i_ctx *ctx, i2i_graph *g, i2i_model **out);

/* fold.c: evaluates node `n` whose inputs are all constant. */
i2i_status fold_node(i2i_ctx *ctx, i2i_graph *g, int n);

/* onnx_read.c / onnx_write.c */
i2i_status onnx_read(i2i_ctx *ctx, const uint8_t *data, size_t size, i2i_graph *g);
i2i_status onnx_read_meta(i2i_ctx *ctx, const uint8_t *data, size_t size, i2i_graph *g);
/* The *size bytes of a regular file of at most `max` bytes, in *data from i2i_alloc_aligned (free
 * with i2i_free_aligned), which holds *cap bytes: 1/64 and 64 KiB more, room for the weights
 * packed over them (each tensor padded to 64 bytes), pages untouched until then. */
i2i_status read_file(i2i_ctx *ctx, const char *path, uint64_t max, uint8_t **data, size_t *size, size_t *cap);

/* ---- execution ---------------------------------------------------------------------------- */

typedef struct { int64_t n, c, h, w; } shape4;

static inline size_t shape_numel(shape4 s) { return (size_t)(s.n * s.c * s.h * s.w); }

/* One execution step: a compute node, possibly with a fused Pad before it (convolutions read
 * their input through the padding) and a fused activation after it. */
typedef struct {
  int node;
  i2i_op op;
  int pad_node;          /* Pad folded into a Conv's input, or -1 */
  int pads[4];           /* effective padding of the input (top, left, bottom, right) */
  int pad_mode;
  int act;               /* ACT_* applied after the op (norms, Add, Concat) */
  float act_alpha;
  int in[8];             /* runtime input values (after skipping a fused Pad) */
  int n_in;
  int out;               /* runtime output value */
  double flops;          /* for progress */
} i2i_step;

typedef struct i2i_plan {
  int n, h, w;             /* the padded run size */
  uint64_t budget;         /* the memory budget the plan was made for */
  shape4 *shape;           /* per value */
  size_t *offset;          /* per value: float offset in the arena, SIZE_MAX if not materialised */
  i2i_step *steps;
  int n_steps;
  size_t arena_floats;     /* activation workspace */
  size_t scratch_floats;   /* per-thread convolution scratch, each */
  int peak_live;           /* whole-image intermediates alive at once at the peak */
  double total_flops;
} i2i_plan;

/* State of one run, handed to a backend. */
typedef struct i2i_run_state {
  float *arena;            /* plan->arena_floats */
  float *scratch;          /* threads * plan->scratch_floats */
  int threads;
  i2i_pix2pix_mode mode;
  uint64_t seed;
  uint64_t step;           /* training step for dropout masks (0 at inference) */
  i2i_progress_fn progress;
  void *progress_user;
  double progress_base, progress_span;
  int tiles;               /* out: chunks of the most-tiled layer */
  uint64_t device_budget;  /* GPU: bytes of device memory the run may hold; 0 = automatic */
  /* Layer-wise GPU runs (large images): when set, the CPU executor hands every convolution
   * step to this hook (all images of the step; `done` is the FLOPs before it) instead of running
   * it itself. The hook reads the step's input from and writes its output to the arena. */
  i2i_status (*conv_hook)(void *user, i2i_ctx *ctx, const i2i_model *m, const struct i2i_plan *plan,
                          struct i2i_run_state *st, int step, double done);
  void *conv_user;
} i2i_run_state;

/* shape.c / plan.c */
i2i_status infer_shapes(i2i_ctx *ctx, const i2i_model *m, int n, int h, int w, shape4 *shape);
i2i_status plan_build(i2i_ctx *ctx, const i2i_model *m, int n, int h, int w, i2i_plan **out);
void plan_free(i2i_ctx *ctx, i2i_plan *p);
i2i_status model_derive_info(i2i_ctx *ctx, i2i_model *m);

/* run.c / scale.c. run_native runs at width x height; full_w x full_h is the picture's own size
 * (larger when run_scaled reduced it), for the advice when memory is short. */
i2i_status run_native(i2i_ctx *ctx, const i2i_model *m, const i2i_run_params *rp, int nimg, int width, int height,
                      const float *const *inputs, float *const *outputs, i2i_run_report *rep, double pbase,
                      double pspan, int full_w, int full_h);
/* The size a width x height picture runs at with its short side reduced to `scale`. */
void scaled_size(int width, int height, int scale, int *w2, int *h2);
/* Bytes run_scaled holds beside the run of nimg pictures `height` tall reduced to w2 x h2:
 * per_image 1 counts what it has written when the run starts, 2 the results too. */
double scaled_hold_bytes(int nimg, int ch, int height, int w2, int h2, int per_image);
i2i_status run_scaled(i2i_ctx *ctx, const i2i_model *m, const i2i_run_params *rp, int nimg, int width, int height,
                      const float *const *inputs, float *const *outputs, i2i_run_report *rep);

/* cuda_loader.c: the CUDA backend of this context, or NULL with ctx->cuda_why saying why. */
const i2i_backend_ops *cuda_backend(i2i_ctx *ctx, void **self);
/* Marks the CUDA backend unusable for this context (after a sticky error). */
void cuda_backend_disable(i2i_ctx *ctx, const char *why);
void i2i_cuda_unload(i2i_ctx *ctx);

/* cpu/ */
extern const i2i_backend_ops i2i_cpu_backend;
/* Reports progress through the run state; returns I2I_E_CANCELLED when asked to stop. */
i2i_status run_progress(i2i_ctx *ctx, i2i_run_state *st, double done, double total);

/* rng.c: Philox4x32-10 and the dropout mask contract of design.md. */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* True when the element at (x, y, channel, batch_index) of Dropout `ordinal` is kept. */
bool dropout_keep(uint64_t seed, uint32_t x, uint32_t y, uint32_t channel, uint32_t batch_index,
                  uint32_t ordinal, uint64_t step, uint32_t threshold);
/* A dropout ratio's mask threshold for dropout_keep and the scale of the kept values (inline:
 * the CUDA module uses it too). */
static inline void dropout_consts(float ratio, uint32_t *threshold, float *scale) {
  double th = floor((double)ratio * 4294967296.0);
  *threshold = th >= 4294967295.0 ? 0xffffffffu : (uint32_t)th;
  *scale = 1.0f / (1.0f - ratio);
}

/* manifest.c */
void manifest_free(i2i_ctx *ctx);

/* ---- training (engine/src/train/; kernels in cpu/) ------------------------------------------ */

enum { LOSS_MSE = 0, LOSS_BCE, LOSS_L1 };

/* One step of a training plan: a compute node, with a Pad fused into a Conv's input and a
 * ReLU / LeakyReLU fused after a norm (as the inference plan does), the parameters it reads as
 * offsets into its network's flat buffer, and how its backward writes its inputs' gradients. */
typedef struct {
  int node;
  i2i_op op;
  int pad_node;          /* fused Pad, or -1 */
  int pads[4];           /* effective input padding (top, left, bottom, right) */
  int pad_mode;
  int act;               /* ACT_* fused after a norm */
  float act_alpha;
  int in[8];             /* runtime input values */
  int n_in;
  int out;               /* runtime output value (after a fused activation) */
  size_t w_off, b_off;   /* Conv W / B, norm scale / bias (floats into the buffer; SIZE_MAX: none) */
  bool w_train, b_train; /* those are trained */
  size_t rm_off, rv_off; /* BatchNorm running mean / variance, or SIZE_MAX */
  bool batch_stats;      /* a BatchNorm: statistics over (N, H, W); else per image */
  float momentum;        /* running-statistics momentum, PyTorch's convention (0.1) */
  size_t stat_off;       /* a norm's mean and rstd in the slot arena (2 x groups floats) */
  bool acc_dx[8];        /* the backward adds into input i's gradient (a later reader wrote it) */
} i2i_tstep;

/* A norm step's statistics groups for input shape xs: per channel (batch statistics) or per
 * image and channel; its mean and rstd are 2 x groups floats at stat_off. */
static inline size_t tstep_norm_groups(const i2i_tstep *s, shape4 xs) {
  return (size_t)(s->batch_stats ? xs.c : xs.n * xs.c);
}

/* A network's training plan for N x H x W: every value's place in a forward slot (activations
 * the backward needs stay until the end; others share memory by lifetime) and in the gradient
 * arena (lifetimes in reverse order), and the convolution scratch. */
typedef struct {
  int n, h, w;
  shape4 *shape;           /* per value */
  i2i_tstep *steps;
  int n_steps;
  size_t *act_off;         /* per value: float offset in a slot arena, SIZE_MAX if none */
  size_t act_floats;       /* one slot's arena, statistics included */
  size_t *grad_off;        /* per value: float offset in the gradient arena, SIZE_MAX if none */
  size_t grad_floats;
  size_t scratch_floats;   /* convolution scratch (forward and backward) */
  int input, output;
} i2i_tplan;

typedef struct {
  size_t off, n;
} i2i_trange;

/* One network being trained: its own model copy, whose flat weight buffer is the parameter
 * buffer, and the buffers the optimiser keeps, in the backend's memory. */
typedef struct {
  i2i_model *m;            /* owned; m->weights holds parameters and running statistics (host) */
  i2i_tplan plan;
  size_t n_floats;         /* m->n_weights */
  float *param;            /* backend memory (m->weights itself on the CPU) */
  float *grad, *adam_m, *adam_v;
  i2i_trange *train;       /* trained ranges of the buffer */
  int n_train;
  i2i_trange *stats;       /* running-statistics ranges */
  int n_stats;
  uint64_t adam_t;         /* Adam steps taken */
} i2i_tnet;

/* A training backend: memory and the passes the step logic (train/trainer.c) is written in.
 * Pointers given to these functions are the backend's memory; every call takes its context for
 * threads and messages. The CPU backend is train/cpu_backend.c. */
typedef struct i2i_train_backend_ops {
  const char *name;
  float *(*alloc)(void *self, i2i_ctx *ctx, size_t floats);       /* zeroed; NULL when out of memory */
  void (*free)(void *self, i2i_ctx *ctx, float *p);
  i2i_status (*upload)(void *self, i2i_ctx *ctx, float *dst, const float *host, size_t n);
  i2i_status (*download)(void *self, i2i_ctx *ctx, float *host, const float *src, size_t n);
  i2i_status (*copy)(void *self, i2i_ctx *ctx, float *dst, const float *src, size_t n);
  i2i_status (*fill)(void *self, i2i_ctx *ctx, float *dst, float v, size_t n);
  /* dst[i][dst_c0 + k] (+)= src[i][src_c0 + k] for k < nc, images i < n of hw pixels */
  i2i_status (*copy_channels)(void *self, i2i_ctx *ctx, float *dst, int dst_c, int dst_c0, const float *src,
                              int src_c, int src_c0, int nc, int n, size_t hw, bool accumulate);
  /* Runs net's plan on the input in `arena` (a slot), keeping what the backward needs there;
   * updates BatchNorm running statistics; dropout masks from (seed, step). */
  i2i_status (*forward)(void *self, i2i_ctx *ctx, const i2i_tnet *net, float *arena, float *scratch, uint64_t seed,
                        uint64_t step);
  /* From the output's gradient in `grads` back through the slot: parameter gradients added to
   * net->grad when param_grads, the input's gradient written when want_dx. */
  i2i_status (*backward)(void *self, i2i_ctx *ctx, const i2i_tnet *net, float *arena, float *grads, float *scratch,
                         bool want_dx, bool param_grads, uint64_t seed, uint64_t step);
  i2i_status (*loss)(void *self, i2i_ctx *ctx, int kind, const float *x, const float *target, float label, size_t n,
                     float weight, float *grad, bool accumulate, double *value);
  i2i_status (*adam)(void *self, i2i_ctx *ctx, i2i_tnet *net, float lr, float beta1, float beta2, float eps);
  i2i_status (*all_finite)(void *self, i2i_ctx *ctx, const float *x, size_t n, bool *ok);
  void (*destroy)(void *self);
  /* The convolutions' arithmetic: "float32" or "TF32" (static storage). */
  const char *(*math)(void *self);
} i2i_train_backend_ops;

/* train/tplan.c */
i2i_status tplan_build(i2i_ctx *ctx, const i2i_model *m, int n, int h, int w, i2i_tplan *plan);
void tplan_free(i2i_ctx *ctx, i2i_tplan *plan);
/* train/cpu_backend.c */
extern const i2i_train_backend_ops i2i_cpu_train_backend;
/* Logs the per-op time table when I2I_PROFILE is set. */
void cpu_train_profile_report(i2i_ctx *ctx);

#endif
