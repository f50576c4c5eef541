/* internal.h: libi2i's private declarations, shared by the engine's source files.
 *
 * Holds the context, the allocator and error helpers, the graph model every part works on
 * (constant tensors, values, nodes with parsed attributes), the execution plan and the backend
 * table. Nothing here is visible to clients: they see engine/include/i2i.h only.
 */
#ifndef I2I_INTERNAL_H
#define I2I_INTERNAL_H

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
  const i2i_backend_ops *cuda_ops;
  void *cuda_self;
  char cuda_why[512];          /* why CUDA is not used, when it is not */
  void *cuda_module;           /* GModule* */
  /* manifest, parsed on first use */
  struct i2i_manifest *manifest;
  /* one cached execution plan */
  struct i2i_plan *plan_cache;
  const i2i_model *plan_model;
  uint64_t plan_model_serial;
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
i2i_status onnx_write(i2i_ctx *ctx, const i2i_model *m, uint8_t **data, size_t *size);
i2i_status read_file(i2i_ctx *ctx, const char *path, uint64_t max, uint8_t **data, size_t *size);
i2i_status write_file_atomic(i2i_ctx *ctx, const char *path, const void *data, size_t size);

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
  int act;               /* ACT_* applied after the op (norms, add) */
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
} i2i_run_state;

/* shape.c / plan.c */
i2i_status infer_shapes(i2i_ctx *ctx, const i2i_model *m, int n, int h, int w, shape4 *shape);
i2i_status plan_build(i2i_ctx *ctx, const i2i_model *m, int n, int h, int w, i2i_plan **out);
void plan_free(i2i_ctx *ctx, i2i_plan *p);
i2i_status model_derive_info(i2i_ctx *ctx, i2i_model *m);

/* run.c / scale.c */
i2i_status run_native(i2i_ctx *ctx, const i2i_model *m, const i2i_run_params *rp, int nimg, int width, int height,
                      const float *const *inputs, float *const *outputs, i2i_run_report *rep, double pbase,
                      double pspan);
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

/* manifest.c */
void manifest_free(i2i_ctx *ctx);

#endif
