/* i2i.h: the one public header of libi2i, the i2i engine.
 *
 * The engine loads CycleGAN / Pix2Pix generators from ONNX files, runs them on images (CPU, or an
 * NVIDIA GPU through a run-time loaded CUDA module), builds and writes ONNX files, and knows the
 * published model manifest. The plug-in, the `i2i` tool, tests and benchmarks are all clients of
 * this header and of nothing else in the engine. It is not a general ONNX runtime: only the ops of
 * these generators (and the int64 shape chains PyTorch's exporter puts around them) are accepted.
 *
 * Conventions: every call that can fail returns an i2i_status; the context then holds a readable
 * message (i2i_ctx_errmsg). Objects returned through `**out` belong to the caller and are freed
 * with their own *_free call. Strings returned as `char **` are freed with i2i_free(). Nothing in
 * the engine exits or aborts on anything a user can cause.
 */
#ifndef I2I_H
#define I2I_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define I2I_VERSION_MAJOR 0
#define I2I_VERSION_MINOR 1
#define I2I_VERSION_PATCH 0

typedef struct i2i_ctx i2i_ctx;
typedef struct i2i_model i2i_model;
typedef struct i2i_builder i2i_builder;

typedef enum {
  I2I_OK = 0,
  I2I_E_ARG,           /* the caller passed something invalid (NULL, out of range) */
  I2I_E_IO,            /* a file could not be opened, read, written or renamed */
  I2I_E_FORMAT,        /* the file is malformed, truncated or inconsistent */
  I2I_E_UNSUPPORTED,   /* well formed, but an op, attribute or model kind i2i does not run */
  I2I_E_LIMIT,         /* a documented limit was exceeded (file size, depth, image size...) */
  I2I_E_NOMEM,         /* a host allocation failed */
  I2I_E_DEVICE_NOMEM,  /* the GPU ran out of memory */
  I2I_E_DEVICE,        /* the CUDA backend is unavailable or failed */
  I2I_E_CANCELLED,     /* the progress callback asked to stop */
  I2I_E_NOT_FOUND,     /* a model name or metadata key does not exist */
  I2I_E_INTERNAL       /* a bug in i2i; the message says where */
} i2i_status;

/* A short constant name for a status ("I2I_E_FORMAT"). Never NULL. */
const char *i2i_status_name(i2i_status s);

/* "0.1.0". Static storage. */
const char *i2i_version(void);

/* For a program's main(), before anything else, with main's argv. The CPU backend's threads
 * (OpenMP) wait for work by spinning, by libgomp's default for 300,000 rounds before they sleep:
 * with another program keeping a core busy, runs took 2-2.5x as long as with a short spin, which
 * costs nothing on an idle machine. libgomp reads the setting once, before main() runs, so this
 * sets GOMP_SPINCOUNT and executes the program again (/proc/self/exe: the same process id,
 * arguments, environment otherwise and open files). Does nothing when OMP_WAIT_POLICY or
 * GOMP_SPINCOUNT is set already (the user's choice, or the second start); returns when the program
 * cannot be executed again, which then runs as before. */
void i2i_openmp_reexec(char *argv[]);

/* Bytes of host memory this process can still take without being killed for it: the least of
 * the system's MemAvailable (plus SwapFree when `with_swap` is nonzero) and what each cgroup memory limit on
 * the process (v1 or v2, a container's or a systemd unit's) leaves, not counting reclaimable file
 * cache; UINT64_MAX when the system does not say. Reads /proc and /sys on each call. The engine
 * checks a CPU run's working memory against it (without swap); callers check their own large
 * buffers (decoded images) the same way. */
uint64_t i2i_host_memory_available(int with_swap);

/* ---------------------------------------------------------------------------------------------
 * Context
 * ------------------------------------------------------------------------------------------- */

typedef enum {
  I2I_BACKEND_AUTO = 0, /* CUDA when the module, driver and a device are usable, else the CPU */
  I2I_BACKEND_CPU,
  I2I_BACKEND_CUDA
} i2i_backend;

typedef enum { I2I_LOG_ERROR = 0, I2I_LOG_WARNING, I2I_LOG_INFO, I2I_LOG_DEBUG } i2i_log_level;

/* Arithmetic on the GPU (the CPU always computes in float32). */
typedef enum {
  I2I_PRECISION_AUTO = 0, /* fp16 on tensor cores with float32 accumulation and statistics */
  I2I_PRECISION_FP32,     /* float32 without TF32: matches the CPU to ~1e-5 */
  I2I_PRECISION_FP16
} i2i_precision;

/* Called for log lines; `msg` is valid only during the call. May be called from the thread that
 * called into the engine only. */
typedef void (*i2i_log_fn)(void *user, i2i_log_level level, const char *msg);

/* Every host allocation of the engine goes through this hook, protobuf-c's included: models,
 * the builder, runs, training, ONNX reading and writing, model lookup and listing. `alloc`
 * returns NULL on failure and memory aligned at least as malloc's; `free` accepts NULL.
 * Outside the hook, so not covered by failure injection (GLib's g_malloc aborts when out of
 * memory):
 *  - the published-model manifest, parsed once per context on the first i2i_manifest_* call (or
 *    a failed i2i_model_find) with GLib's key-file reader: a few KiB for the built-in text, the
 *    whole file for $I2I_MANIFEST;
 *  - the CUDA backend: g_module_open (dlopen) of the module, the module's host-side plans and
 *    cuDNN algorithm cache (malloc), and the CUDA runtime and cuDNN libraries;
 *  - GLib's one per-process copy of the user's data folder name (model lookup);
 *  - the OpenMP and OpenBLAS runtimes' thread pools and buffers. */
typedef struct {
  void *(*alloc)(void *user, size_t size);
  void (*free)(void *user, void *ptr);
  void *user;
} i2i_allocator;

/* Limits enforced on everything read from outside; exceeding one is I2I_E_LIMIT with a message
 * that gives the figure. The defaults are documented in the README. */
typedef struct {
  uint64_t max_model_bytes;   /* size of an ONNX file or buffer (default 1 GiB) */
  uint32_t max_tensors;       /* initializers plus constant tensors (default 100000) */
  uint32_t max_nodes;         /* graph nodes before folding (default 100000) */
  uint32_t max_depth;         /* protobuf message nesting (default 16) */
  uint32_t max_image_side;    /* width or height of a run (default 65536) */
  uint64_t max_image_pixels;  /* width * height of a run (default 2^30) */
} i2i_limits;

typedef struct {
  i2i_backend backend;     /* I2I_BACKEND_AUTO by default; the environment variable I2I_BACKEND
                            * (cpu|cuda|auto) overrides AUTO only */
  int threads;             /* CPU threads; 0 = every online CPU; at most 4 per online CPU */
  int device;              /* CUDA device index (default 0) */
  uint64_t memory_budget;  /* bytes of engine working memory on the device that runs (the
                            * caller's image buffers are not part of it); 0 = automatic.
                            * GPU: weights, activations and workspace; an image whose whole
                            * run needs more goes layer by layer (whole-image intermediates in
                            * host memory, each convolution in bands of rows on the GPU, same
                            * result); automatic: the whole image when the GPU has the memory,
                            * else layer by layer in 90% of the free device memory. CPU: bounds
                            * the convolution scratch (automatic: 64 MiB); the whole-image
                            * intermediates are counted apart and checked against free RAM. */
  i2i_log_fn log;          /* NULL: no logging */
  void *log_user;
  i2i_log_level log_level; /* lines above this level are dropped (default I2I_LOG_WARNING) */
  i2i_allocator allocator; /* all NULL: malloc and free */
  i2i_limits limits;
  i2i_precision precision; /* I2I_PRECISION_AUTO by default; the environment variable
                            * I2I_PRECISION (fp32|fp16) overrides AUTO only */
} i2i_ctx_params;

/* Fills `p` with the defaults. Always succeeds. */
void i2i_ctx_default_params(i2i_ctx_params *p);

/* Creates a context. `p` may be NULL for the defaults; it is copied. The backend is chosen lazily
 * at the first run (so creating a context never touches a GPU). On failure *out is NULL; a
 * message for I2I_E_NOMEM / I2I_E_ARG cannot be stored and is implied by the status. */
i2i_status i2i_ctx_create(const i2i_ctx_params *p, i2i_ctx **out);

/* Frees the context. Every model created with it must be freed first. NULL is accepted. */
void i2i_ctx_free(i2i_ctx *ctx);

/* The message of the last failed call on this context ("" if none). Valid until the next call. */
const char *i2i_ctx_errmsg(const i2i_ctx *ctx);

/* Changes the memory budget (bytes, 0 = automatic) for later runs. NULL is ignored. */
void i2i_ctx_set_memory_budget(i2i_ctx *ctx, uint64_t bytes);

/* Changes the backend choice for later runs (the environment override applies as at creation).
 * NULL is ignored. */
void i2i_ctx_set_backend(i2i_ctx *ctx, i2i_backend backend);

/* Frees memory the engine handed to the caller (strings, arrays). NULL is accepted. */
void i2i_free(i2i_ctx *ctx, void *ptr);

/* ---------------------------------------------------------------------------------------------
 * Models
 * ------------------------------------------------------------------------------------------- */

typedef enum {
  I2I_FAMILY_UNKNOWN = 0,
  I2I_FAMILY_RESNET,   /* CycleGAN ResnetGenerator */
  I2I_FAMILY_UNET,     /* Pix2Pix UnetGenerator */
  I2I_FAMILY_PATCHGAN  /* PatchGAN discriminator (not an image-to-image model) */
} i2i_family;

typedef struct {
  i2i_family family;
  int in_channels, out_channels;
  int size_multiple;   /* run sizes are padded up to a multiple of this (4 ResNet, 256 U-Net) */
  int min_side;        /* smallest padded side every internal pad and stride accepts */
  uint64_t n_params;   /* float parameters (initializers used by compute nodes) */
  int n_nodes;         /* compute nodes after constant folding */
  int n_folded;        /* nodes removed by constant folding */
  int n_dropout;       /* Dropout nodes (Pix2Pix faithful mode uses them) */
  int n_batchnorm;     /* normalisation nodes that are BatchNorm (batch statistics or eval) */
  int opset;
  int64_t ir_version;
} i2i_model_info;

/* Loads an ONNX model from a file. The file is read whole (size checked against
 * limits.max_model_bytes first), checked, folded and sorted; the model is then independent of the
 * file. Errors: I2I_E_IO (missing, a directory, unreadable), I2I_E_FORMAT, I2I_E_UNSUPPORTED,
 * I2I_E_LIMIT, I2I_E_NOMEM; the message names the node or field at fault. */
i2i_status i2i_model_load_file(i2i_ctx *ctx, const char *path, i2i_model **out);

/* As i2i_model_load_file, from memory. `data` is only read during the call. */
i2i_status i2i_model_load_memory(i2i_ctx *ctx, const void *data, size_t size, i2i_model **out);

/* Writes the model as ONNX (opset 17, ir_version 8 for models built here; loaded models keep
 * their opset) to `path` through a temporary file in the same folder and a rename, so `path`
 * is either the old file or the complete new one. */
i2i_status i2i_model_save(i2i_ctx *ctx, const i2i_model *model, const char *path);

/* As i2i_model_save, into a buffer the caller frees with i2i_free(). */
i2i_status i2i_model_save_memory(i2i_ctx *ctx, const i2i_model *model, void **data, size_t *size);

/* Frees a model. NULL is accepted. The context that made it must still exist. */
void i2i_model_free(i2i_model *model);

/* Fills `info`. Always succeeds for a valid model; with a NULL model or info it does nothing. */
void i2i_model_get_info(const i2i_model *model, i2i_model_info *info);

/* Metadata (ONNX metadata_props). Returns NULL when the key is absent. The strings live as long
 * as the model. Keys used by i2i: see the README ("Model metadata"). */
const char *i2i_model_meta(const i2i_model *model, const char *key);
/* The number of metadata entries, in file order; 0 for a NULL model. */
size_t i2i_model_meta_count(const i2i_model *model);
/* The i-th key and value (owned by the model); NULL when i is out of range or model is NULL. */
const char *i2i_model_meta_key(const i2i_model *model, size_t i);
const char *i2i_model_meta_value(const i2i_model *model, size_t i);

/* One compute node of the folded graph, for inspection. Pointers live as long as the model. */
typedef struct {
  const char *op_type;
  const char *name;                /* "" when the file gave none */
  int n_inputs;
  const char *const *inputs;       /* "" for an absent optional input */
  int n_outputs;
  const char *const *outputs;
} i2i_node_desc;

/* The number of compute nodes of the folded graph (info.n_nodes), indexed in run order by
 * i2i_model_node and i2i_model_shapes; 0 for a NULL model. */
int i2i_model_node_count(const i2i_model *model);
/* Fills `d` for node i (0 <= i < count); the strings are owned by the model. I2I_E_ARG for a
 * NULL model or `d` or an index out of range; no message is set (there is no context). */
i2i_status i2i_model_node(const i2i_model *model, int i, i2i_node_desc *d);

/* Infers the shape of output 0 of every compute node for a batch of `n` images of `height` x
 * `width` (already padded to the size multiple). `shapes` has room for node_count entries of
 * 4 values (N, C, H, W). Errors: I2I_E_ARG with the node that rejects the size. */
i2i_status i2i_model_shapes(i2i_ctx *ctx, const i2i_model *model, int n, int height, int width,
                            int64_t (*shapes)[4]);

/* A tensor of the model (initializer or folded constant), read-only. */
typedef struct {
  const char *name;
  int rank;
  int64_t dims[8];
  int dtype;           /* ONNX TensorProto.DataType: 1 float, 7 int64 ... */
  const void *data;
  size_t nbytes;
} i2i_tensor_desc;

/* The number of tensors (initializers and constants left after folding, used or not); 0 for a
 * NULL model. */
size_t i2i_model_tensor_count(const i2i_model *model);
/* Fills `d` for tensor i (0 <= i < count, a stable order while the model lives); `name` and
 * `data` are owned by the model and read-only; dtype is 1 (float32, whatever the file's float
 * type) or 7 (int64, for every integer or boolean type). I2I_E_ARG for a NULL model or `d` or an
 * index out of range, with no message (there is no context). Each call scans the model's values. */
i2i_status i2i_model_tensor(const i2i_model *model, size_t i, i2i_tensor_desc *d);
/* Looks a tensor up by name, filling `d` as i2i_model_tensor does; I2I_E_NOT_FOUND when absent,
 * I2I_E_ARG for a NULL argument (no message either way). */
i2i_status i2i_model_tensor_by_name(const i2i_model *model, const char *name, i2i_tensor_desc *d);

/* ---------------------------------------------------------------------------------------------
 * Graph builder: how the converter and the trainer write models. Nobody else touches ONNX.
 * ------------------------------------------------------------------------------------------- */

typedef enum { I2I_ATTR_INT = 1, I2I_ATTR_FLOAT, I2I_ATTR_INTS, I2I_ATTR_STRING } i2i_attr_type;

typedef struct {
  const char *name;
  i2i_attr_type type;
  int64_t i;            /* I2I_ATTR_INT */
  float f;              /* I2I_ATTR_FLOAT */
  const int64_t *ints;  /* I2I_ATTR_INTS */
  int n_ints;
  const char *s;        /* I2I_ATTR_STRING */
} i2i_attr;

/* Starts an empty graph (opset 17) on `ctx`, which must outlive the builder. *out is consumed
 * by i2i_builder_finish or freed with i2i_builder_free. Errors: I2I_E_ARG, I2I_E_NOMEM.
 * The add and set calls below return I2I_E_ARG for a bad argument, with the builder unchanged;
 * I2I_E_NOMEM, I2I_E_LIMIT or an error in a node's attributes spoils the builder: every later
 * call, i2i_builder_finish included, returns that first error. Messages go to the context. */
i2i_status i2i_builder_new(i2i_ctx *ctx, i2i_builder **out);
/* Frees a builder that was not finished. NULL is accepted. */
void i2i_builder_free(i2i_builder *b);

/* Declares the graph input / output: float, N x channels x H x W with dynamic N, H and W. */
i2i_status i2i_builder_add_input(i2i_builder *b, const char *name, int channels);
i2i_status i2i_builder_add_output(i2i_builder *b, const char *name, int channels);

/* Adds a constant tensor; `data` (dims product x element size bytes) is copied.
 * dtype: 1 float32 or 7 int64. */
i2i_status i2i_builder_add_initializer(i2i_builder *b, const char *name, int dtype, int rank,
                                       const int64_t *dims, const void *data);

/* Adds a node. Names are copied. An input "" means an absent optional input. */
i2i_status i2i_builder_add_node(i2i_builder *b, const char *op_type, const char *name,
                                int n_inputs, const char *const *inputs,
                                int n_outputs, const char *const *outputs,
                                int n_attrs, const i2i_attr *attrs);

/* Sets (or replaces) one metadata entry; key and value are copied. I2I_E_ARG, without a
 * message, for a NULL builder, an empty key or a NULL value. */
i2i_status i2i_builder_set_meta(i2i_builder *b, const char *key, const char *value);

/* Checks the graph exactly as a loaded file is checked and turns it into a model. The builder is
 * freed whether or not this succeeds. */
i2i_status i2i_builder_finish(i2i_builder *b, i2i_model **out);

/* ---------------------------------------------------------------------------------------------
 * Running a model on images
 * ------------------------------------------------------------------------------------------- */

typedef enum {
  I2I_PIX2PIX_FAITHFUL = 0,  /* batch statistics + dropout with the seed (as mmagic tests) */
  I2I_PIX2PIX_DETERMINISTIC, /* batch statistics, no dropout */
  I2I_PIX2PIX_EVAL           /* running statistics, no dropout */
} i2i_pix2pix_mode;

typedef enum {
  I2I_PIXELS_RGBA = 0,   /* interleaved float R,G,B,A in [0,1]; alpha passes through untouched */
  I2I_PIXELS_RGB_SIGNED  /* interleaved float R,G,B in [-1,1], the model's own range (.npy) */
} i2i_pixel_layout;

/* Progress: fraction in [0,1]. Return nonzero to cancel: the run then stops at the next layer or
 * tile and returns I2I_E_CANCELLED with the outputs unspecified. */
typedef int (*i2i_progress_fn)(void *user, double fraction);

typedef struct {
  i2i_pixel_layout layout;
  i2i_pix2pix_mode pix2pix_mode;
  uint64_t seed;            /* dropout masks in faithful mode */
  float strength;           /* 0..1: output = input + strength * (result - input); default 1 */
  int scale;                /* working short side in pixels; 0 = native. See README. */
  i2i_progress_fn progress;
  void *progress_user;
} i2i_run_params;

typedef struct {
  i2i_backend backend;       /* the backend that produced the result */
  char message[512];         /* why that backend (a fallback reason), or "" */
  int tiles;                 /* tiles (GPU layer by layer: bands) of the largest layer; 1 = whole image */
  int whole_intermediates;   /* whole-image intermediates alive at once at the peak */
  uint64_t intermediate_bytes; /* bytes of those whole-image intermediates */
  uint64_t workspace_bytes;  /* engine working memory besides them (tile buffers, scratch) */
  uint64_t peak_device_bytes; /* CUDA only: the most device memory held during this run (cached
                              * weights and plans included) */
  int run_width, run_height; /* the size the model ran at (after scale and padding) */
  double seconds;
} i2i_run_report;

/* Fills `p` with the defaults (RGBA, faithful, seed 0, strength 1, scale 0). */
void i2i_run_default_params(i2i_run_params *p);

/* Translates `n_images` images of `width` x `height` pixels. inputs[i] and outputs[i] hold
 * width*height*4 (RGBA) or *3 (RGB_SIGNED) floats, row-major, no padding between rows; an output
 * may be the same buffer as its input. Each image is normalised on its own. Any size from 1x1 up
 * to the limits: the engine pads at the bottom and right to the model's size multiple, runs and
 * crops back. Not-a-number inputs are read as 0. `report` may be NULL. A CPU run's host working
 * memory stays with the context, and the next run reuses it when it needs between half and all
 * of it (i2i_ctx_free releases it): a batch, the tiles of a large picture and a preview's runs
 * skip faulting fresh pages in.
 * Errors: I2I_E_ARG, I2I_E_LIMIT (also when the model's output is not finite: inf or NaN, from
 * weights that overflow), I2I_E_NOMEM (with the figure that did not fit), I2I_E_DEVICE /
 * I2I_E_DEVICE_NOMEM (only when CUDA was forced), I2I_E_CANCELLED. */
i2i_status i2i_run(i2i_ctx *ctx, const i2i_model *model, const i2i_run_params *params,
                   int n_images, int width, int height,
                   const float *const *inputs, float *const *outputs, i2i_run_report *report);

/* ---------------------------------------------------------------------------------------------
 * Model lookup and the published-model manifest
 * ------------------------------------------------------------------------------------------- */

/* Resolves a model name for the tool, the plug-in and fetch. A name that ends in ".onnx" or
 * contains '/' is a path and is returned as given if it exists. A task name means exactly
 * "<task>.onnx" in each folder of $I2I_MODEL_PATH (colon-separated), then
 * $XDG_DATA_HOME/i2i/models (~/.local/share/i2i/models), then the installed data folder.
 * *path is freed with i2i_free(). I2I_E_NOT_FOUND: the message names the folders searched and,
 * for a published task, the command that installs it (`i2i fetch <task>`). */
i2i_status i2i_model_find(i2i_ctx *ctx, const char *name, char **path);

/* The folder `i2i convert` and `i2i fetch` install into: $XDG_DATA_HOME/i2i/models. */
i2i_status i2i_model_user_dir(i2i_ctx *ctx, char **path);

typedef struct {
  char *task;    /* file name without ".onnx" */
  char *path;
  char *label;   /* metadata i2i.menu_label, else the task name */
  i2i_family family;
} i2i_model_entry;

/* Lists the installed image-to-image models (generators; discriminators, "*.D.onnx" and files
 * that are not ONNX are skipped) in lookup order, a task found twice listed once (the first).
 * Only each file's metadata is read. Free with i2i_model_list_free. */
i2i_status i2i_model_list(i2i_ctx *ctx, i2i_model_entry **entries, size_t *n);
/* Frees the `n` entries i2i_model_list returned and their strings; `ctx` must be the context
 * that listed them. NULL entries are accepted (nothing to free). */
void i2i_model_list_free(i2i_ctx *ctx, i2i_model_entry *entries, size_t n);

/* One direction of a published checkpoint (weights/manifest, compiled into the library;
 * $I2I_MANIFEST=FILE replaces it). Strings are never NULL ("" when empty). */
typedef struct {
  const char *task;           /* "winter2summer", "winter2summer-id0" ... unique, file-safe */
  const char *base_task;      /* the direction without the variant ("winter2summer") */
  int variant;                /* 0 standard, 1 id0 (identity loss weight 0) */
  const char *label;          /* menu label, unique: "Winter to Summer" */
  const char *family;         /* "resnet" or "unet" */
  const char *checkpoint;     /* published file name */
  const char *url;
  const char *sha256_prefix;  /* 8 hex digits, as in the file name */
  const char *config;         /* mmagic config path */
  const char *channel_order;  /* "bgr" or "rgb" */
  const char *source_domain, *target_domain;
  const char *generator_key;  /* "generators.summer" */
  const char *discriminator_key; /* "discriminators.summer" */
  const char *source_side;    /* Pix2Pix paired images: "left" or "right"; "" for CycleGAN */
  double fid, is;             /* mmagic's reported scores; negative when none */
  int provisional;            /* domain labels uncertain upstream */
} i2i_manifest_entry;

/* The number of directions in the manifest; 0 with a message if it cannot be parsed (a bad
 * sha256 prefix or score, a repeated task or label, or no direction at all). */
size_t i2i_manifest_count(i2i_ctx *ctx);
/* The i-th direction, NULL out of range. Valid while the context lives. */
const i2i_manifest_entry *i2i_manifest_get(i2i_ctx *ctx, size_t i);
/* The direction with this task name, NULL if none. */
const i2i_manifest_entry *i2i_manifest_find(i2i_ctx *ctx, const char *task);

/* ---------------------------------------------------------------------------------------------
 * Training: fine-tuning CycleGAN and Pix2Pix models as mmagic trains them (design.md, Training;
 * spec/mmagic.md section 7). A trainer owns copies of its networks, their gradients, Adam state,
 * the image pools and one workspace planned at creation; a step allocates nothing.
 * ------------------------------------------------------------------------------------------- */

typedef struct i2i_trainer i2i_trainer;

typedef enum {
  I2I_TRAIN_CYCLEGAN = 1, /* two generators, two discriminators (LSGAN, cycle, identity, pool) */
  I2I_TRAIN_PIX2PIX       /* one generator, one conditional discriminator (vanilla GAN + L1) */
} i2i_train_kind;

/* The networks of a trainer, as indices for i2i_trainer_model / _read / _param_info. */
enum {
  I2I_NET_G = 0,     /* the A -> B generator (Pix2Pix: source -> target) */
  I2I_NET_G_REV = 1, /* CycleGAN: the B -> A generator */
  I2I_NET_D = 2,     /* judges domain B, the output of I2I_NET_G (Pix2Pix: [source, target] pairs) */
  I2I_NET_D_REV = 3  /* CycleGAN: judges domain A */
};

typedef struct {
  i2i_train_kind kind;
  int batch;              /* images per step (default 1) */
  int size;               /* training crop side in pixels (default 256); a multiple of the
                           * generators' size multiple */
  int load_size;          /* images are resized (bicubic) to load_size x load_size before the
                           * random crop; 0 = size * 286 / 256 (286 for 256); equal to size:
                           * resize only, no crop */
  int flip;               /* random horizontal flips, p = 0.5 (default 1): CycleGAN flips A and B
                           * independently, Pix2Pix flips a pair together */
  int augment;            /* 0: images must come at size x size and are used as they are
                           * (tests); default 1 */
  int64_t iters;          /* total iterations, for the schedule (default 1000) */
  float lr;               /* Adam learning rate (default 2e-4) */
  float beta1, beta2, eps; /* default 0.5, 0.999, 1e-8 */
  int lr_decay;           /* CycleGAN: lr constant to iters/2, then linear to 0 in 100 stages
                           * (mmagic's LinearLrInterval scaled to iters; default 1 for CycleGAN,
                           * 0 for Pix2Pix: constant) */
  float lambda_cycle;     /* CycleGAN cycle L1 weight (default 10) */
  float lambda_identity;  /* CycleGAN identity L1 weight (default 0.5; 0 skips the term) */
  float lambda_l1;        /* Pix2Pix L1 weight (default 100) */
  int pool_size;          /* CycleGAN image pool per domain (default 50; 0: no pool) */
  uint64_t seed;          /* dropout masks, pool choices, augmentation, new discriminators */
  int d_channels;         /* base channels of a discriminator built here; 0 = the generator's */
  int d_layers;           /* its stride-2 layers (default 3) */
} i2i_train_params;

/* Fills `p` with mmagic's settings for `kind`. */
void i2i_train_default_params(i2i_train_params *p, i2i_train_kind kind);

/* The networks to train. Models are only read during i2i_trainer_create (the trainer copies
 * them). g: required (A -> B; Pix2Pix source -> target). g_rev: CycleGAN's B -> A generator,
 * required for CycleGAN. d / d_rev: the discriminators judging B / A; NULL builds a PatchGAN
 * (d_layers, d_channels; InstanceNorm for CycleGAN, BatchNorm with 6 input channels for
 * Pix2Pix) with mmagic's N(0, 0.02) initialisation from the seed. */
typedef struct {
  const i2i_model *g, *g_rev, *d, *d_rev;
} i2i_train_models;

/* Creates a trainer on the context's backend: with AUTO or CUDA, the GPU (float32 throughout,
 * cuDNN without TF32) when the CUDA module can train there, else the CPU with the reason logged
 * (with AUTO also when the GPU fails to set the trainer up, out of GPU memory for one);
 * I2I_E_DEVICE when CUDA is forced and cannot be used; I2I_E_UNSUPPORTED for a network that is not a
 * generator / PatchGAN of the kind, or that shares a trained tensor between nodes).
 * Allocates everything the steps need (I2I_E_NOMEM with the figure when it does not fit). */
i2i_status i2i_trainer_create(i2i_ctx *ctx, const i2i_train_params *p, const i2i_train_models *models,
                              i2i_trainer **out);
/* Frees a trainer. NULL is accepted. */
void i2i_trainer_free(i2i_trainer *tr);

/* Where the trainer runs: I2I_BACKEND_CUDA or I2I_BACKEND_CPU (NULL: CPU). */
i2i_backend i2i_trainer_backend(const i2i_trainer *tr);

/* The arithmetic of the trainer's convolutions, as a static string: "TF32" (float32 data whose
 * products take TF32 operands, 10 mantissa bits, on tensor cores: a GPU of compute capability
 * 8.0 or newer, PyTorch's default there; the environment variable I2I_CUDA_TF32=0 turns it off)
 * or "float32" (the CPU, older GPUs, I2I_CUDA_TF32=0). Either way runs are deterministic. NULL:
 * "float32". */
const char *i2i_trainer_math(const i2i_trainer *tr);

/* The parameters in use (after defaults were resolved). */
void i2i_trainer_params(const i2i_trainer *tr, i2i_train_params *p);

/* Sets image `index` (0 .. batch-1) of the next step: `a` from domain A (Pix2Pix: the source),
 * `b` from domain B (Pix2Pix: its target), interleaved float RGBA in [0,1] (alpha ignored), any
 * size of at least 8x8 pixels. Augmentation follows the parameters with random choices drawn
 * from (seed, iteration, index), so a resumed run repeats them. The buffers are only read
 * during the call. Every index must be set before each step. */
i2i_status i2i_trainer_set_images(i2i_trainer *tr, int index, const float *a, int a_width, int a_height,
                                  const float *b, int b_width, int b_height);

typedef struct {
  int64_t iteration;      /* the iteration this step was (0-based) */
  double lr;              /* the learning rate it used */
  double loss_d;          /* the discriminators' total loss */
  double loss_g;          /* the generators' total loss */
  /* CycleGAN: per domain (a = images of A, b = images of B) */
  double loss_d_a, loss_d_b;         /* 0.5 (fake + real) MSE of D_A, D_B */
  double loss_gan_a, loss_gan_b;     /* generator LSGAN terms (D_A on fake A, D_B on fake B) */
  double loss_cycle_a, loss_cycle_b; /* weighted cycle L1 (reconstructed A, reconstructed B) */
  double loss_id_a, loss_id_b;       /* weighted identity L1 (G_rev(A) vs A, G(B) vs B) */
  /* Pix2Pix */
  double loss_d_fake, loss_d_real;   /* BCE terms before the 0.5 */
  double loss_gan, loss_l1;          /* generator BCE term and the weighted L1 */
  double seconds;
} i2i_train_report;

/* One training iteration in mmagic's order: generators forward, the discriminators' update,
 * then the generators' update against the just-updated (frozen) discriminators. `report` may
 * be NULL. I2I_E_LIMIT: a loss or gradient was not finite; the trainer is left exactly as it
 * was before the step (parameters, Adam state, running statistics, pools, iteration). */
i2i_status i2i_trainer_step(i2i_trainer *tr, i2i_train_report *report);

/* Iterations done so far (the next step's iteration). */
int64_t i2i_trainer_iteration(const i2i_trainer *tr);
/* The learning rate of iteration `it` under the trainer's schedule. */
double i2i_trainer_lr(const i2i_trainer *tr, int64_t it);

/* The current network `net` (I2I_NET_*) as a model: its weights are the trained ones at the
 * time of the call. Owned by the trainer, valid until the next step or the trainer's end; can
 * be run with i2i_run (samples) or written with i2i_model_save. NULL when absent. */
const i2i_model *i2i_trainer_model(i2i_trainer *tr, int net);

/* Writes network `net` as ONNX (atomically) with its metadata. `meta` is NULL or a NULL-ended
 * list of key, value pairs that replace or add entries (e.g. "i2i.task", "i2i.menu_label");
 * i2i.finetuned_from (the original task) and i2i.finetune_iterations are added. The trainer's
 * own copy keeps its metadata. */
i2i_status i2i_trainer_export(i2i_trainer *tr, int net, const char *const *meta, const char *path);

/* The training-state file: every network (as ONNX, with running statistics), Adam's moments
 * and step, the pools, the iteration, the parameters (seed included: every random choice is a
 * function of the seed and the iteration) and the caller's key/values. Written through a
 * temporary file and a rename, so `path` is either the old state or the complete new one. */
i2i_status i2i_trainer_save_state(i2i_trainer *tr, const char *path);
/* Recreates a trainer from a state file; the next step continues bit for bit as the original
 * run would have (same thread count). I2I_E_FORMAT for a damaged file (checksum). */
i2i_status i2i_trainer_load_state(i2i_ctx *ctx, const char *path, i2i_trainer **out);

/* Caller key/values kept in the state file (data folders, output name ...). `value` NULL
 * removes the key; i2i_trainer_get_meta returns NULL when absent (valid until the next set). */
i2i_status i2i_trainer_set_meta(i2i_trainer *tr, const char *key, const char *value);
const char *i2i_trainer_get_meta(const i2i_trainer *tr, const char *key);
/* Changes the total iterations (the schedule follows). */
i2i_status i2i_trainer_set_iters(i2i_trainer *tr, int64_t iters);

/* Test hook for the pool: called once the pool of `domain` (0: fake A images, 1: fake B) is full,
 * for each image of the batch; returns -1 to use the current image, or 0 .. pool_size-1 to
 * return that stored image and store the current one in its place. NULL restores the seeded
 * random choice (probability 0.5, then a uniform slot). */
typedef int (*i2i_pool_choice_fn)(void *user, int domain, int64_t iteration, int image);
/* Installs `fn` (with `user`) for later steps; NULL tr is ignored. */
void i2i_trainer_set_pool_hook(i2i_trainer *tr, i2i_pool_choice_fn fn, void *user);

/* Inspection (tests): the tensors of network `net` that training changes: trained parameters
 * (trainable = 1) and running statistics (0), by index. */
typedef enum { I2I_TENSOR_VALUE = 0, I2I_TENSOR_GRAD, I2I_TENSOR_ADAM_M, I2I_TENSOR_ADAM_V } i2i_train_tensor;
/* The number of such tensors of network `net` (I2I_NET_*); 0 for a NULL trainer or a network
 * the trainer does not have. */
size_t i2i_trainer_tensor_count(const i2i_trainer *tr, int net);
/* The name (valid while the trainer lives), element count and whether it is trained, for tensor
 * i (0 <= i < count); each output pointer may be NULL. I2I_E_ARG (with a message) for a network
 * or index out of range. */
i2i_status i2i_trainer_tensor_info(const i2i_trainer *tr, int net, size_t i, const char **name, size_t *numel,
                                   int *trainable);
/* Copies `what` of tensor `name` into dst (numel floats). The gradients are those of the last
 * step (the discriminators' from their update, the generators' from theirs). */
i2i_status i2i_trainer_read(i2i_trainer *tr, int net, const char *name, i2i_train_tensor what, float *dst,
                            size_t numel);

/* Bicubic resize (OpenCV's INTER_CUBIC: a = -0.75, pixel centres, replicated border) of
 * interleaved `channels`-channel float images. Returns I2I_E_ARG for sizes below 1. */
i2i_status i2i_train_resize(const float *src, int src_width, int src_height, int channels, float *dst,
                            int dst_width, int dst_height);

/* A PatchGAN discriminator as mmagic builds it (3 stride-2 layers for n_layers 3, then a
 * stride-1 layer and the 1-channel output; LeakyReLU 0.2; InstanceNorm, or BatchNorm written as
 * i2i.batchnorm InstanceNormalization nodes) with N(0, 0.02) weights, zero biases and BatchNorm
 * weights N(1, 0.02) from `seed`. */
i2i_status i2i_patchgan_new(i2i_ctx *ctx, int in_channels, int base_channels, int n_layers, int batchnorm,
                            uint64_t seed, i2i_model **out);

#ifdef __cplusplus
}
#endif
#endif
