/* pth.h: the converter's reader of PyTorch checkpoints (.pth): zip (torch >= 1.6) and legacy.
 *
 * Three layers, each callable on raw bytes (the fuzz targets use them): a central-directory zip
 * reader (stored entries only), a restricted pickle VM that executes nothing from the file, and the
 * whole load that validates every tensor and converts it to contiguous float32 (int64 for integers).
 * Internal to the converter, not the engine's public header; not a general zip or pickle library.
 */
#ifndef I2I_PTH_H
#define I2I_PTH_H

#include <stddef.h>
#include <stdint.h>

#include "i2i.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  PTH_OK = 0,
  PTH_E_ARG,         /* the caller passed something invalid (NULL, bad allocator) */
  PTH_E_IO,          /* the file could not be opened, mapped or read */
  PTH_E_FORMAT,      /* malformed, truncated or inconsistent input */
  PTH_E_UNSUPPORTED, /* well formed but not handled (compression, an opcode, a dtype) */
  PTH_E_UNSAFE,      /* a global outside the allowlist is called or built in a strict region */
  PTH_E_LIMIT,       /* a limit of pth_limits was exceeded; the message gives the figure */
  PTH_E_NOMEM,       /* an allocation through the hook failed */
  PTH_E_NOT_FOUND    /* a record the format requires is missing (data.pkl, a storage) */
} pth_status;

/* A constant name for a status ("PTH_E_FORMAT"). Never NULL. */
const char *pth_status_name(pth_status s);

/* The same failure as an engine status (PTH_E_UNSAFE maps to I2I_E_FORMAT). */
i2i_status pth_status_to_i2i(pth_status s);

/* Limits on everything read from the file. A field left at 0 takes its default (listed). */
typedef struct {
  uint64_t max_file_bytes;  /* whole input (default 16 GiB) */
  uint32_t max_zip_entries; /* central-directory records (default 1,000,000) */
  uint32_t max_name_len;    /* zip entry name bytes (default 4096) */
  uint64_t max_ops;         /* pickle opcodes executed per pickle (default 2^27) */
  uint64_t max_objects;     /* pickle objects created per pickle (default 2^22) */
  uint32_t max_memo;        /* memo slots; a BINPUT index must be below it (default 2^20) */
  uint32_t max_stack;       /* pickle stack depth (default 2^20) */
  uint32_t max_marks;       /* open MARKs at once (default 1000) */
  uint32_t max_depth;       /* container nesting depth (default 100) */
  uint32_t max_globals;     /* distinct globals in one pickle (default 4096) */
  uint32_t max_tensors;     /* tensors in the state dict (default 1,000,000) */
} pth_limits;

typedef struct {
  i2i_allocator allocator; /* every allocation goes through it; all NULL: malloc/free. alloc and
                            * free must be both set or both NULL */
  int strict_everywhere;   /* 1: a REDUCE/NEWOBJ/BUILD on a global outside the allowlist is an
                            * error anywhere in the file, not only under state_dict */
  int verify_crc;          /* 1: check every zip entry's CRC-32 (zlib); torch itself does not */
  int copy_tensors;        /* 1: never return tensor pointers into the input buffer */
  pth_limits limits;
} pth_options;

/* Fills `o` with the defaults: malloc/free, lenient meta, no CRC check, zero-copy allowed, default
 * limits (also written out, not left 0). Always succeeds. */
void pth_default_options(pth_options *o);

/* Shared by the reader's files: copies `in` (NULL: defaults) into `out` with every 0 limit set to
 * its default. PTH_E_ARG when exactly one of allocator.alloc / allocator.free is set. */
pth_status pth_options_resolve(const pth_options *in, pth_options *out);

/* Shared by the reader's files: printf into err[0..errlen) (always NUL-terminated when errlen > 0;
 * err may be NULL when errlen is 0) and return `s`. */
pth_status pth_errf(pth_status s, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The display form of a string taken from a file (a state-dict key, a zip entry or storage name,
 * a global) for messages and listings, so that nothing in the file can drive the terminal: valid
 * UTF-8 text is copied unchanged; control characters (C0, DEL, C1, the Unicode line and paragraph
 * separators and the bidirectional controls) and bytes that are not valid UTF-8 are written as
 * \xNN, one per byte. `s` (NULL shows as "") is only read; the result goes into buf[0..buflen),
 * always NUL-terminated when buflen > 0; a string that does not fit is cut between characters and
 * ends in "...". Returns buf (a constant "" when buflen is 0). A buffer of 4 * len + 1 bytes always
 * holds the whole string. */
const char *pth_shown(const char *s, size_t len, char *buf, size_t buflen);

/* Shared by the reader's files: allocation through the hook (NULL on failure; size 0 allowed). */
void *pth_alloc(const i2i_allocator *a, size_t size);
void pth_free(const i2i_allocator *a, void *ptr);

/* ---------------------------------------------------------------------------------------------
 * Zip directory
 * ------------------------------------------------------------------------------------------- */

typedef struct {
  const char *name;     /* NUL-terminated copy of the central-directory name */
  size_t name_len;
  uint64_t header_offset; /* local header */
  uint64_t data_offset;   /* first data byte: local header + 30 + name len + local extra len */
  uint64_t size;          /* stored size == uncompressed size */
  uint32_t crc32;         /* from the central directory */
} pth_zip_entry;

typedef struct pth_zip pth_zip;

/* Parses the central directory of a zip held in `data[0..size)` and checks it: EOCD or zip64 EOCD,
 * single disk, method 0 (stored) only, no encryption, every local header present with the same
 * name, every entry (header + data) inside the file, before the central directory and not
 * overlapping another, unique names without NUL bytes, and, with opt->verify_crc, each CRC-32.
 * `opt` may be NULL (defaults). `data` is only read during the call: the result keeps no pointer
 * into it. On success *out owns the entries (free with pth_zip_free); on failure *out is NULL and
 * `err` (may be NULL when errlen is 0) holds a message starting "zip: ". */
pth_status pth_zip_parse(const void *data, size_t size, const pth_options *opt, pth_zip **out,
                         char *err, size_t errlen);

/* Entries in central-directory order; `i` < pth_zip_count. Valid until pth_zip_free. */
size_t pth_zip_count(const pth_zip *z);
const pth_zip_entry *pth_zip_entry_at(const pth_zip *z, size_t i);

/* The entry with exactly this name, or NULL. */
const pth_zip_entry *pth_zip_find(const pth_zip *z, const char *name);

/* The first entry's name up to its first '/' ("archive", or the saved file's stem); "" when the
 * first name has no '/'. Valid until pth_zip_free. */
const char *pth_zip_prefix(const pth_zip *z);

/* Frees a directory from pth_zip_parse. NULL is accepted. */
void pth_zip_free(pth_zip *z);

/* ---------------------------------------------------------------------------------------------
 * Restricted pickle VM
 * ------------------------------------------------------------------------------------------- */

typedef enum {
  PTH_V_NONE,
  PTH_V_BOOL,   /* u.i is 0 or 1 */
  PTH_V_INT,    /* u.i; LONG1 of at most 8 bytes */
  PTH_V_FLOAT,  /* u.f */
  PTH_V_STR,    /* u.str: UTF-8 as stored (BINUNICODE) or py2 bytes (BINSTRING) */
  PTH_V_BYTES,  /* u.str: BINBYTES, or the result of _codecs.encode(str, 'latin1') */
  PTH_V_TUPLE,  /* u.seq */
  PTH_V_LIST,   /* u.seq */
  PTH_V_SET,    /* u.seq (items as added, not deduplicated) */
  PTH_V_DICT,   /* u.dict; OrderedDict() too (u.dict.ordered = 1) */
  PTH_V_GLOBAL, /* u.global: an inert (module, name) symbol */
  PTH_V_CALL,   /* u.call: REDUCE/NEWOBJ of a symbol, recorded and never called */
  PTH_V_PERSID  /* u.persid: BINPERSID of a persistent id (a storage reference) */
} pth_value_kind;

/* Symbols the reader interprets (the exact-match allowlist), PTH_SYM_OTHER for every other one. */
typedef enum {
  PTH_SYM_OTHER = 0,
  PTH_SYM_ORDERED_DICT,      /* collections.OrderedDict */
  PTH_SYM_REBUILD_TENSOR_V2, /* torch._utils._rebuild_tensor_v2 */
  PTH_SYM_REBUILD_TENSOR,    /* torch._utils._rebuild_tensor */
  PTH_SYM_REBUILD_PARAMETER, /* torch._utils._rebuild_parameter */
  PTH_SYM_CODECS_ENCODE,     /* _codecs.encode */
  PTH_SYM_STORAGE            /* torch.<X>Storage; u.global.dtype says which */
} pth_sym;

/* Element types of torch storages. */
typedef enum {
  PTH_F32 = 0, PTH_F64, PTH_F16, PTH_BF16, PTH_I64, PTH_I32, PTH_I16, PTH_I8, PTH_U8, PTH_BOOL,
  PTH_C64, PTH_C128, PTH_DTYPE_COUNT
} pth_dtype;

/* "float32", "int64", ... Never NULL. */
const char *pth_dtype_name(pth_dtype d);
/* Bytes per element (1..16). */
size_t pth_dtype_size(pth_dtype d);

typedef struct pth_value pth_value;

/* A pickle object. Read-only for clients; lives in the pickle's arena and is valid until the
 * pickle (or the pth_file holding it) is freed. Containers may share items and form cycles: any
 * walk needs visited marks and a depth cap. */
struct pth_value {
  pth_value_kind kind;
  uint32_t depth;  /* nesting depth when built (1 for scalars) */
  uint32_t visit;  /* scratch mark for walkers of the owning module */
  union {
    int64_t i;
    double f;
    struct { const char *ptr; size_t len; } str; /* NUL-terminated; may contain NUL bytes */
    struct { pth_value **items; size_t len, cap; } seq;
    struct {
      pth_value **kv;     /* kv[2k] key, kv[2k+1] value, in insertion order */
      size_t len, cap;    /* len counts pairs; duplicates kept (a lookup takes the last) */
      int ordered;        /* built by OrderedDict() */
      pth_value *state;   /* from BUILD (OrderedDict's {'_metadata': ...}), or NULL */
    } dict;
    struct {
      const char *module, *name;
      const char *qualname; /* "module.name" */
      pth_sym sym;
      pth_dtype dtype;      /* for PTH_SYM_STORAGE */
      uint8_t opcode;       /* 0x63 GLOBAL or 0x93 STACK_GLOBAL */
      size_t offset;        /* byte offset of the opcode */
    } global;
    struct {
      pth_value *callee;    /* a GLOBAL, or a CALL (lenient chains) */
      pth_value *args;      /* a TUPLE */
      pth_value *state;     /* from BUILD, or NULL */
      const pth_value *root;/* the GLOBAL at the bottom of the callee chain */
      uint8_t opcode;       /* 0x52 REDUCE or 0x81 NEWOBJ */
      size_t offset;
    } call;
    struct { pth_value *pid; size_t offset; } persid;
  } u;
};

typedef struct pth_pickle pth_pickle;

/* Runs the restricted VM over one pickle in `data[0..size)`, stopping at its STOP opcode. Accepts
 * protocol 2 (and the cheap protocol-4 forms: FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL,
 * binary strings/bytes, sets, POP/POP_MARK/DUP, NEWOBJ); any other opcode fails with a message
 * naming it and its byte offset. REDUCE/NEWOBJ on a symbol outside the allowlist gives a CALL
 * value (never called); with opt->strict_everywhere it is an error instead. `consumed` (may be
 * NULL) receives the offset after STOP. `data` is only read during the call (strings are copied).
 * On success *out owns the arena with every object (free with pth_pickle_free); on failure *out is
 * NULL and `err` holds a message starting "pickle: ". */
pth_status pth_pickle_run(const void *data, size_t size, const pth_options *opt, pth_pickle **out,
                          size_t *consumed, char *err, size_t errlen);

/* The object STOP returned. */
const pth_value *pth_pickle_root(const pth_pickle *p);

/* Every distinct global the pickle referenced (GLOBAL or STACK_GLOBAL), in first-seen order; each
 * is a PTH_V_GLOBAL value. */
size_t pth_pickle_global_count(const pth_pickle *p);
const pth_value *pth_pickle_global(const pth_pickle *p, size_t i);

/* Every CALL value created on a symbol outside the allowlist, in creation order. */
size_t pth_pickle_opaque_count(const pth_pickle *p);
const pth_value *pth_pickle_opaque(const pth_pickle *p, size_t i);

/* Every PERSID value, in creation order. */
size_t pth_pickle_persid_count(const pth_pickle *p);
const pth_value *pth_pickle_persid(const pth_pickle *p, size_t i);

/* Checks everything reachable from `v` (items, dict keys/values, BUILD states, call arguments):
 * a CALL or bare GLOBAL outside the allowlist is PTH_E_UNSAFE, with a message naming the global,
 * its opcode and byte offset, and `region` ("state_dict"); nesting deeper than limits.max_depth
 * is PTH_E_LIMIT. Uses the values' visit marks; allocates a work stack through the pickle's
 * allocator. */
pth_status pth_pickle_check_strict(pth_pickle *p, const pth_value *v, const char *region,
                                   char *err, size_t errlen);

/* Frees the pickle and every value in it. NULL is accepted. */
void pth_pickle_free(pth_pickle *p);

/* The value for string key `key` in a DICT (the last one when repeated), or NULL. */
const pth_value *pth_value_dict_get(const pth_value *dict, const char *key);

/* A short name for a kind ("dict", "list", "opaque call", ...). Never NULL. */
const char *pth_value_kind_name(pth_value_kind k);

/* The kind as a phrase with its article, for messages: "a dict", "an int", "an opaque call",
 * "None". Never NULL. */
const char *pth_value_kind_phrase(pth_value_kind k);

/* ---------------------------------------------------------------------------------------------
 * Whole checkpoint
 * ------------------------------------------------------------------------------------------- */

#define PTH_MAX_RANK 8

typedef struct {
  const char *key;        /* state-dict key, a leading "module." removed */
  pth_dtype dtype;        /* of `data`: PTH_F32 for floating storages, PTH_I64 for integer/bool */
  pth_dtype stored_dtype; /* the storage's type in the file */
  int rank;               /* 0..PTH_MAX_RANK */
  int64_t dims[PTH_MAX_RANK];
  uint64_t numel;
  const void *data;       /* numel contiguous row-major elements, aligned for dtype; never NULL
                           * (a 0-element tensor points at a static dummy). May point into the
                           * input (mapped file or caller's buffer) when no conversion was needed */
  const char *storage_key;
  uint64_t storage_offset; /* elements */
  int is_parameter;        /* wrapped by _rebuild_parameter */
  int requires_grad;
} pth_tensor;

typedef struct {
  const char *name; /* "module.name" */
  int allowlisted;
} pth_global_ref;

typedef struct {
  const char *container;   /* "zip" or "legacy" */
  const char *zip_prefix;  /* "archive", the file stem, ...; "" for legacy */
  int has_state_dict_key;  /* tensors came from top['state_dict'] (else the top-level dict) */
  int stripped_module_prefix; /* at least one key lost a leading "module." */
  size_t n_keys;           /* top-level keys (strings; others shown as "<int 5>" etc.) */
  const char *const *keys;
  size_t n_globals;        /* every distinct global referenced by the main pickle */
  const pth_global_ref *globals;
  size_t n_opaque;         /* distinct globals of opaque values kept in lenient regions */
  const char *const *opaque;
  size_t n_tensors;        /* in file order (order of the state dict's items) */
  const pth_tensor *tensors;
  uint64_t file_size;
} pth_info;

typedef struct pth_file pth_file;

/* Loads a checkpoint held in `data[0..size)`: container by the first bytes, zip or legacy layout,
 * the restricted pickle, the state dict (top['state_dict'] when present, else the top-level dict;
 * nested dicts inside it are flattened with '.'; plain leaves such as numbers, strings, lists or
 * None are skipped, any other object is an error; everything reachable from it is checked
 * strictly against the allowlist, the rest of the file leniently), every tensor
 * validated against its storage record and converted to contiguous float32 (int64 for integer
 * storages). `opt` may be NULL. Unless opt->copy_tensors, tensor data may point into `data`, which
 * must then stay valid and unchanged until pth_file_free. On success *out is the caller's (free
 * with pth_file_free); on failure *out is NULL, nothing is leaked, and `err` (errlen bytes, may be
 * NULL when errlen is 0) holds a precise message. */
pth_status pth_load_memory(const void *data, size_t size, const pth_options *opt, pth_file **out,
                           char *err, size_t errlen);

/* As pth_load_memory on the file at `path`. A zip is mapped privately (tensors point into the
 * mapping; a misaligned stored entry is moved within it); a legacy file, or one that cannot be
 * mapped, is read once into a buffer from the allocator. Mapping and buffer belong to the result.
 * A directory, a non-regular (a FIFO, a device: refused without waiting for a writer) or empty
 * file is PTH_E_IO. Every message names the path: a failure in the file's contents reads
 * "<path>: <what>" (pth_load_memory's message without its "pth: "). */
pth_status pth_load_file(const char *path, const pth_options *opt, pth_file **out, char *err,
                         size_t errlen);

/* Everything found; valid until pth_file_free. */
const pth_info *pth_file_info(const pth_file *f);

/* The tensor with this key (after the "module." strip), or NULL. O(log n). */
const pth_tensor *pth_file_find(const pth_file *f, const char *key);

/* The main pickle's top-level object (for reading meta). Valid until pth_file_free. */
const pth_value *pth_file_root(const pth_file *f);

/* Lets the kernel drop the pages of a mapped zip checkpoint read so far; they come back from the
 * page cache when a tensor is read again, so every pointer stays valid. Lowers the resident
 * memory of a caller that copies the tensors out network by network. Does nothing for a file read
 * into memory (legacy format) or one whose mapping had to be written to. */
void pth_file_release_pages(pth_file *f);

/* Frees the result, its converted tensors and its mapping. NULL is accepted. */
void pth_file_free(pth_file *f);

#ifdef __cplusplus
}
#endif

#endif
