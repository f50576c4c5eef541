/* pickle.c: the restricted pickle VM of the .pth reader.
 *
 * Executes the binary opcodes torch.save writes (protocol 2, plus the cheap protocol-4 forms) into
 * an arena of inert values: GLOBAL pushes a (module, name) symbol that is matched exactly against a
 * short allowlist and never resolved; REDUCE/NEWOBJ record a call that is never made. It is not a
 * Python unpickler: no protocol-0 text opcodes, no INST/OBJ/EXT, no NEWOBJ_EX, no protocol-5
 * buffers, no big integers (LONG1 up to 8 bytes), and nothing from the file is ever executed.
 */
#include <stdarg.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pth.h"

typedef struct arena_chunk {
  struct arena_chunk *next;
  size_t size, used;
  alignas(16) unsigned char data[];
} arena_chunk;

struct pth_pickle {
  i2i_allocator alloc;
  pth_limits limits;
  arena_chunk *chunks;
  pth_value *root;
  pth_value **globals;  /* distinct symbols, first-seen order */
  size_t n_globals, cap_globals;
  uint32_t *gtab;       /* open-addressing hash of globals: index + 1, 0 = empty */
  size_t gtab_cap;
  pth_value **opaque;
  size_t n_opaque, cap_opaque;
  pth_value **persids;
  size_t n_persids, cap_persids;
  uint64_t n_objects;
  uint32_t epoch;
};

typedef struct {
  size_t sp;      /* stack length when the MARK ran */
  size_t offset;  /* byte offset of the MARK */
} mark_rec;

typedef struct {
  pth_pickle *pk;
  const uint8_t *d;
  size_t size, pos, op_pos;
  uint8_t op;
  int strict;
  pth_value **stack;
  size_t sp, stack_cap;
  mark_rec *marks;
  size_t n_marks, marks_cap;
  pth_value **memo;
  size_t memo_cap, memo_count;
  pth_value *none, *vtrue, *vfalse, *empty_tuple;
  char *err;
  size_t errlen;
} vm;

/* ------------------------------------------------------------------------------------------- */

static const char *const op_names[256] = {
    ['('] = "MARK", ['.'] = "STOP", ['0'] = "POP", ['1'] = "POP_MARK", ['2'] = "DUP",
    ['F'] = "FLOAT", ['I'] = "INT", ['J'] = "BININT", ['K'] = "BININT1", ['L'] = "LONG",
    ['M'] = "BININT2", ['N'] = "NONE", ['P'] = "PERSID", ['Q'] = "BINPERSID", ['R'] = "REDUCE",
    ['S'] = "STRING", ['T'] = "BINSTRING", ['U'] = "SHORT_BINSTRING", ['V'] = "UNICODE",
    ['X'] = "BINUNICODE", ['a'] = "APPEND", ['b'] = "BUILD", ['c'] = "GLOBAL", ['d'] = "DICT",
    ['}'] = "EMPTY_DICT", ['e'] = "APPENDS", ['g'] = "GET", ['h'] = "BINGET", ['i'] = "INST",
    ['j'] = "LONG_BINGET", ['l'] = "LIST", [']'] = "EMPTY_LIST", ['o'] = "OBJ", ['p'] = "PUT",
    ['q'] = "BINPUT", ['r'] = "LONG_BINPUT", ['s'] = "SETITEM", ['t'] = "TUPLE",
    [')'] = "EMPTY_TUPLE", ['u'] = "SETITEMS", ['G'] = "BINFLOAT", ['B'] = "BINBYTES",
    ['C'] = "SHORT_BINBYTES", [0x80] = "PROTO", [0x81] = "NEWOBJ", [0x82] = "EXT1",
    [0x83] = "EXT2", [0x84] = "EXT4", [0x85] = "TUPLE1", [0x86] = "TUPLE2", [0x87] = "TUPLE3",
    [0x88] = "NEWTRUE", [0x89] = "NEWFALSE", [0x8a] = "LONG1", [0x8b] = "LONG4",
    [0x8c] = "SHORT_BINUNICODE", [0x8d] = "BINUNICODE8", [0x8e] = "BINBYTES8",
    [0x8f] = "EMPTY_SET", [0x90] = "ADDITEMS", [0x91] = "FROZENSET", [0x92] = "NEWOBJ_EX",
    [0x93] = "STACK_GLOBAL", [0x94] = "MEMOIZE", [0x95] = "FRAME", [0x96] = "BYTEARRAY8",
    [0x97] = "NEXT_BUFFER", [0x98] = "READONLY_BUFFER",
};

static const char *op_name(uint8_t op) { return op_names[op] ? op_names[op] : "unknown"; }

static const struct {
  const char *module, *name;
  pth_sym sym;
  pth_dtype dtype;
} allowlist[] = {
    {"collections", "OrderedDict", PTH_SYM_ORDERED_DICT, PTH_F32},
    {"torch._utils", "_rebuild_tensor_v2", PTH_SYM_REBUILD_TENSOR_V2, PTH_F32},
    {"torch._utils", "_rebuild_tensor", PTH_SYM_REBUILD_TENSOR, PTH_F32},
    {"torch._utils", "_rebuild_parameter", PTH_SYM_REBUILD_PARAMETER, PTH_F32},
    {"_codecs", "encode", PTH_SYM_CODECS_ENCODE, PTH_F32},
    {"torch", "FloatStorage", PTH_SYM_STORAGE, PTH_F32},
    {"torch", "DoubleStorage", PTH_SYM_STORAGE, PTH_F64},
    {"torch", "HalfStorage", PTH_SYM_STORAGE, PTH_F16},
    {"torch", "BFloat16Storage", PTH_SYM_STORAGE, PTH_BF16},
    {"torch", "LongStorage", PTH_SYM_STORAGE, PTH_I64},
    {"torch", "IntStorage", PTH_SYM_STORAGE, PTH_I32},
    {"torch", "ShortStorage", PTH_SYM_STORAGE, PTH_I16},
    {"torch", "CharStorage", PTH_SYM_STORAGE, PTH_I8},
    {"torch", "ByteStorage", PTH_SYM_STORAGE, PTH_U8},
    {"torch", "BoolStorage", PTH_SYM_STORAGE, PTH_BOOL},
    {"torch", "ComplexFloatStorage", PTH_SYM_STORAGE, PTH_C64},
    {"torch", "ComplexDoubleStorage", PTH_SYM_STORAGE, PTH_C128},
};

const char *pth_value_kind_name(pth_value_kind k) {
  static const char *const names[] = {"None", "bool", "int", "float", "str", "bytes", "tuple",
                                      "list", "set", "dict", "global", "opaque call", "persistent id"};
  return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

const char *pth_value_kind_phrase(pth_value_kind k) {
  static const char *const names[] = {"None", "a bool", "an int", "a float", "a str", "a bytes object", "a tuple",
                                      "a list", "a set", "a dict", "a global", "an opaque call", "a persistent id"};
  return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "an unknown value";
}

/* ------------------------------------------------------------------------------------------- */
/* Arena */

static void *arena_alloc(pth_pickle *pk, size_t size) {
  size = (size + 15) & ~(size_t)15;
  arena_chunk *c = pk->chunks;
  if (!c || c->size - c->used < size) {
    size_t want = c ? c->size * 2 : 16384;
    if (want > ((size_t)1 << 22)) want = (size_t)1 << 22;
    if (want < size) want = size;
    size_t total;
    if (__builtin_add_overflow(want, sizeof(arena_chunk), &total)) return NULL;
    arena_chunk *n = pth_alloc(&pk->alloc, total);
    if (!n) return NULL;
    n->next = pk->chunks;
    n->size = want;
    n->used = 0;
    pk->chunks = n;
    c = n;
  }
  void *p = c->data + c->used;
  c->used += size;
  return p;
}

/* Grows an array living in the arena to hold `need` elements (doubling); extends in place when it
 * is the last allocation of the current chunk. 0 on failure (the old array stays valid). */
static int arena_grow(pth_pickle *pk, void **arr, size_t *cap, size_t elem, size_t need) {
  if (need <= *cap) return 1;
  size_t ncap = *cap ? *cap : 4;
  while (ncap < need) {
    if (__builtin_mul_overflow(ncap, (size_t)2, &ncap)) return 0;
  }
  size_t oldb = *cap * elem, newb;
  if (__builtin_mul_overflow(ncap, elem, &newb)) return 0;
  arena_chunk *c = pk->chunks;
  size_t olda = (oldb + 15) & ~(size_t)15, newa = (newb + 15) & ~(size_t)15;
  if (*arr && c && (unsigned char *)*arr + olda == c->data + c->used && c->size - c->used >= newa - olda) {
    c->used += newa - olda;
    *cap = ncap;
    return 1;
  }
  void *n = arena_alloc(pk, newb);
  if (!n) return 0;
  if (oldb) memcpy(n, *arr, oldb);
  *arr = n;
  *cap = ncap;
  return 1;
}

/* ------------------------------------------------------------------------------------------- */
/* Errors */

static pth_status fail(vm *m, pth_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static pth_status fail(vm *m, pth_status s, const char *fmt, ...) {
  if (!m->err || !m->errlen) return s;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return pth_errf(s, m->err, m->errlen, "pickle: %s", buf);
}

static pth_status fail_op(vm *m, pth_status s, const char *what) {
  return fail(m, s, "opcode 0x%02x %s at byte %zu: %s", m->op, op_name(m->op), m->op_pos, what);
}

static pth_status nomem(vm *m) { return fail(m, PTH_E_NOMEM, "out of memory"); }

/* ------------------------------------------------------------------------------------------- */
/* Values */

static pth_value *new_value(vm *m, pth_value_kind k, pth_status *st) {
  pth_pickle *pk = m->pk;
  if (pk->n_objects >= pk->limits.max_objects) {
    *st = fail(m, PTH_E_LIMIT, "more than %llu objects (limit) at byte %zu",
               (unsigned long long)pk->limits.max_objects, m->op_pos);
    return NULL;
  }
  pth_value *v = arena_alloc(pk, sizeof *v);
  if (!v) {
    *st = nomem(m);
    return NULL;
  }
  memset(v, 0, sizeof *v);
  v->kind = k;
  v->depth = 1;
  pk->n_objects++;
  return v;
}

static pth_status adopt(vm *m, pth_value *parent, const pth_value *child) {
  if (child->depth + 1 > parent->depth) {
    parent->depth = child->depth + 1;
    if (parent->depth > m->pk->limits.max_depth)
      return fail(m, PTH_E_LIMIT, "opcode 0x%02x %s at byte %zu: nesting deeper than %u (limit)", m->op,
                  op_name(m->op), m->op_pos, m->pk->limits.max_depth);
  }
  return PTH_OK;
}

static pth_status record(vm *m, pth_value ***arr, size_t *n, size_t *cap, pth_value *v) {
  if (!arena_grow(m->pk, (void **)arr, cap, sizeof **arr, *n + 1)) return nomem(m);
  (*arr)[(*n)++] = v;
  return PTH_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* Stack */

static size_t frame_base(const vm *m) { return m->n_marks ? m->marks[m->n_marks - 1].sp : 0; }

static pth_status push(vm *m, pth_value *v) {
  if (m->sp >= m->pk->limits.max_stack)
    return fail(m, PTH_E_LIMIT, "opcode 0x%02x %s at byte %zu: stack deeper than %u (limit)", m->op,
                op_name(m->op), m->op_pos, m->pk->limits.max_stack);
  if (m->sp == m->stack_cap) {
    size_t ncap = m->stack_cap ? m->stack_cap * 2 : 64, bytes;
    if (__builtin_mul_overflow(ncap, sizeof *m->stack, &bytes)) return nomem(m);
    pth_value **n = pth_alloc(&m->pk->alloc, bytes);
    if (!n) return nomem(m);
    if (m->sp) memcpy(n, m->stack, m->sp * sizeof *m->stack);
    pth_free(&m->pk->alloc, m->stack);
    m->stack = n;
    m->stack_cap = ncap;
  }
  m->stack[m->sp++] = v;
  return PTH_OK;
}

/* Requires `n` items above the last MARK. */
static pth_status need_items(vm *m, size_t n) {
  size_t have = m->sp - frame_base(m);
  if (have < n)
    return fail(m, PTH_E_FORMAT, "stack underflow: opcode 0x%02x %s at byte %zu needs %zu item%s, the stack holds %zu above the last MARK",
                m->op, op_name(m->op), m->op_pos, n, n == 1 ? "" : "s", have);
  return PTH_OK;
}

static pth_value *pop1(vm *m) { return m->stack[--m->sp]; }

/* Pops the last MARK; the items above it are m->stack[*first .. m->sp). */
static pth_status pop_mark(vm *m, size_t *first) {
  if (!m->n_marks) return fail_op(m, PTH_E_FORMAT, "needs a MARK but none is open");
  *first = m->marks[--m->n_marks].sp;
  return PTH_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* Input */

static pth_status need_bytes(vm *m, size_t n) {
  if (m->size - m->pos < n)
    return fail(m, PTH_E_FORMAT, "truncated: opcode 0x%02x %s at byte %zu needs %zu byte%s, %zu left", m->op,
                op_name(m->op), m->op_pos, n, n == 1 ? "" : "s", m->size - m->pos);
  return PTH_OK;
}

static pth_status str_value(vm *m, pth_value_kind k, const uint8_t *src, size_t len, pth_value **out) {
  pth_status st;
  pth_value *v = new_value(m, k, &st);
  if (!v) return st;
  if (len == SIZE_MAX) return nomem(m);
  char *s = arena_alloc(m->pk, len + 1);
  if (!s) return nomem(m);
  if (len) memcpy(s, src, len);
  s[len] = 0;
  v->u.str.ptr = s;
  v->u.str.len = len;
  *out = v;
  return PTH_OK;
}

/* Reads a string whose length field has `lbytes` bytes (1 or 4), then pushes it. */
static pth_status op_string(vm *m, pth_value_kind k, size_t lbytes) {
  pth_status st = need_bytes(m, lbytes);
  if (st) return st;
  const uint8_t *p = m->d + m->pos;
  uint64_t len = lbytes == 1 ? p[0] : (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24);
  if (m->op == 'T' && (len & 0x80000000u))
    return fail_op(m, PTH_E_FORMAT, "negative string length");
  m->pos += lbytes;
  if (len > m->size - m->pos)
    return fail(m, PTH_E_FORMAT, "opcode 0x%02x %s at byte %zu: length %llu exceeds the %zu bytes left", m->op,
                op_name(m->op), m->op_pos, (unsigned long long)len, m->size - m->pos);
  pth_value *v = NULL;
  st = str_value(m, k, m->d + m->pos, (size_t)len, &v);
  if (st) return st;
  m->pos += (size_t)len;
  return push(m, v);
}

static int valid_ident(const uint8_t *s, size_t n) {
  if (!n) return 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
      return 0;
  }
  return 1;
}

static uint32_t hash_bytes(const char *a, const char *b) {
  uint32_t h = 2166136261u;
  for (; *a; a++) h = (h ^ (uint8_t)*a) * 16777619u;
  h = (h ^ 0xff) * 16777619u;
  for (; *b; b++) h = (h ^ (uint8_t)*b) * 16777619u;
  return h;
}

/* Records a symbol in the distinct-globals table unless an equal one is there. */
static pth_status note_global(vm *m, pth_value *g) {
  pth_pickle *pk = m->pk;
  if ((pk->n_globals + 1) * 2 > pk->gtab_cap) {
    size_t ncap = pk->gtab_cap ? pk->gtab_cap * 2 : 64;
    uint32_t *t = arena_alloc(pk, ncap * sizeof *t);
    if (!t) return nomem(m);
    memset(t, 0, ncap * sizeof *t);
    for (size_t i = 0; i < pk->n_globals; i++) {
      size_t h = hash_bytes(pk->globals[i]->u.global.module, pk->globals[i]->u.global.name) & (ncap - 1);
      while (t[h]) h = (h + 1) & (ncap - 1);
      t[h] = (uint32_t)(i + 1);
    }
    pk->gtab = t;
    pk->gtab_cap = ncap;
  }
  size_t h = hash_bytes(g->u.global.module, g->u.global.name) & (pk->gtab_cap - 1);
  while (pk->gtab[h]) {
    const pth_value *o = pk->globals[pk->gtab[h] - 1];
    if (!strcmp(o->u.global.module, g->u.global.module) && !strcmp(o->u.global.name, g->u.global.name))
      return PTH_OK;
    h = (h + 1) & (pk->gtab_cap - 1);
  }
  if (pk->n_globals >= pk->limits.max_globals)
    return fail_op(m, PTH_E_LIMIT, "too many distinct globals (limit)");
  pth_status st = record(m, &pk->globals, &pk->n_globals, &pk->cap_globals, g);
  if (st) return st;
  pk->gtab[h] = (uint32_t)pk->n_globals;
  return PTH_OK;
}

static pth_status make_global(vm *m, const uint8_t *mod, size_t mlen, const uint8_t *name, size_t nlen) {
  if (!valid_ident(mod, mlen) || !valid_ident(name, nlen) || mlen > 256 || nlen > 256)
    return fail_op(m, PTH_E_FORMAT, "module or name is empty, longer than 256 bytes or has a byte outside [A-Za-z0-9_.]");
  pth_status st;
  pth_value *g = new_value(m, PTH_V_GLOBAL, &st);
  if (!g) return st;
  char *s = arena_alloc(m->pk, 2 * (mlen + nlen + 2));
  if (!s) return nomem(m);
  char *ms = s, *ns = s + mlen + 1, *qs = ns + nlen + 1;
  memcpy(ms, mod, mlen);
  ms[mlen] = 0;
  memcpy(ns, name, nlen);
  ns[nlen] = 0;
  memcpy(qs, mod, mlen);
  qs[mlen] = '.';
  memcpy(qs + mlen + 1, name, nlen);
  qs[mlen + 1 + nlen] = 0;
  g->u.global.module = ms;
  g->u.global.name = ns;
  g->u.global.qualname = qs;
  g->u.global.sym = PTH_SYM_OTHER;
  g->u.global.dtype = PTH_F32;
  g->u.global.opcode = m->op;
  g->u.global.offset = m->op_pos;
  for (size_t i = 0; i < sizeof allowlist / sizeof allowlist[0]; i++) {
    if (!strcmp(allowlist[i].module, ms) && !strcmp(allowlist[i].name, ns)) {
      g->u.global.sym = allowlist[i].sym;
      g->u.global.dtype = allowlist[i].dtype;
      break;
    }
  }
  st = note_global(m, g);
  if (st) return st;
  return push(m, g);
}

static pth_status op_global(vm *m) {
  const uint8_t *p = m->d + m->pos, *end = m->d + m->size;
  const uint8_t *nl1 = memchr(p, '\n', (size_t)(end - p) < 258 ? (size_t)(end - p) : 258);
  if (!nl1) return fail_op(m, PTH_E_FORMAT, "module name is not a line of at most 256 bytes");
  const uint8_t *q = nl1 + 1;
  const uint8_t *nl2 = memchr(q, '\n', (size_t)(end - q) < 258 ? (size_t)(end - q) : 258);
  if (!nl2) return fail_op(m, PTH_E_FORMAT, "global name is not a line of at most 256 bytes");
  m->pos = (size_t)(nl2 + 1 - m->d);
  return make_global(m, p, (size_t)(nl1 - p), q, (size_t)(nl2 - q));
}

static pth_status unsafe_call(vm *m, const pth_value *g, const char *what) {
  return fail(m, PTH_E_UNSAFE, "opcode 0x%02x %s '%s %s' at byte %zu: %s on a global outside the allowlist (strict everywhere; %s at byte %zu)",
              g->u.global.opcode, op_name(g->u.global.opcode), g->u.global.module, g->u.global.name,
              g->u.global.offset, what, what, m->op_pos);
}

/* REDUCE and NEWOBJ: `callee` applied to the tuple `args`. */
static pth_status do_call(vm *m, pth_value *callee, pth_value *args) {
  const char *what = m->op == 'R' ? "REDUCE" : "NEWOBJ";
  if (args->kind != PTH_V_TUPLE) {
    char buf[96];
    snprintf(buf, sizeof buf, "%s arguments are %s, not a tuple", what, pth_value_kind_phrase(args->kind));
    return fail_op(m, PTH_E_FORMAT, buf);
  }
  const pth_value *root;
  if (callee->kind == PTH_V_GLOBAL) {
    root = callee;
  } else if (callee->kind == PTH_V_CALL && callee->u.call.root->u.global.sym == PTH_SYM_OTHER) {
    root = callee->u.call.root;
  } else {
    char buf[96];
    snprintf(buf, sizeof buf, "%s on %s, not a global", what, pth_value_kind_phrase(callee->kind));
    return fail_op(m, PTH_E_FORMAT, buf);
  }
  pth_status st;
  pth_sym sym = callee->kind == PTH_V_GLOBAL ? root->u.global.sym : PTH_SYM_OTHER;
  if (sym == PTH_SYM_ORDERED_DICT) {
    if (m->op == 'R' && args->u.seq.len != 0)
      return fail_op(m, PTH_E_UNSUPPORTED, "OrderedDict called with arguments");
    pth_value *d = new_value(m, PTH_V_DICT, &st);
    if (!d) return st;
    d->u.dict.ordered = 1;
    return push(m, d);
  }
  if (sym == PTH_SYM_CODECS_ENCODE && m->op == 'R') {
    /* _codecs.encode(str, 'latin1'): how protocol 2 pickles bytes. */
    if (args->u.seq.len != 2 || args->u.seq.items[0]->kind != PTH_V_STR || args->u.seq.items[1]->kind != PTH_V_STR)
      return fail_op(m, PTH_E_FORMAT, "_codecs.encode needs (str, str) arguments");
    const char *enc = args->u.seq.items[1]->u.str.ptr;
    if (strcmp(enc, "latin1") && strcmp(enc, "latin-1") && strcmp(enc, "latin_1") && strcmp(enc, "iso-8859-1"))
      return fail_op(m, PTH_E_UNSUPPORTED, "_codecs.encode with an encoding other than latin1");
    const uint8_t *s = (const uint8_t *)args->u.seq.items[0]->u.str.ptr;
    size_t n = args->u.seq.items[0]->u.str.len, o = 0;
    pth_value *b = NULL;
    st = str_value(m, PTH_V_BYTES, s, n, &b);
    if (st) return st;
    uint8_t *dst = (uint8_t *)b->u.str.ptr;
    for (size_t i = 0; i < n; o++) {
      if (s[i] < 0x80) {
        dst[o] = s[i++];
      } else if ((s[i] == 0xc2 || s[i] == 0xc3) && i + 1 < n && (s[i + 1] & 0xc0) == 0x80) {
        dst[o] = (uint8_t)(((s[i] & 0x03) << 6) | (s[i + 1] & 0x3f));
        i += 2;
      } else {
        return fail_op(m, PTH_E_FORMAT, "_codecs.encode of a string that is not latin1");
      }
    }
    dst[o] = 0;
    b->u.str.len = o;
    return push(m, b);
  }
  if (root->u.global.sym == PTH_SYM_OTHER && m->strict) return unsafe_call(m, root, what);
  pth_value *c = new_value(m, PTH_V_CALL, &st);
  if (!c) return st;
  c->u.call.callee = callee;
  c->u.call.args = args;
  c->u.call.root = root;
  c->u.call.opcode = m->op;
  c->u.call.offset = m->op_pos;
  if ((st = adopt(m, c, callee)) || (st = adopt(m, c, args))) return st;
  if (root->u.global.sym == PTH_SYM_OTHER) {
    st = record(m, &m->pk->opaque, &m->pk->n_opaque, &m->pk->cap_opaque, c);
    if (st) return st;
  }
  return push(m, c);
}

static pth_status memo_put(vm *m, uint64_t idx) {
  pth_status st = need_items(m, 1);
  if (st) return st;
  if (idx >= m->pk->limits.max_memo)
    return fail(m, PTH_E_LIMIT, "opcode 0x%02x %s at byte %zu: memo index %llu exceeds the limit of %u slots", m->op,
                op_name(m->op), m->op_pos, (unsigned long long)idx, m->pk->limits.max_memo);
  if (idx >= m->memo_cap) {
    size_t ncap = m->memo_cap ? m->memo_cap : 64;
    while (ncap <= idx) ncap *= 2;
    if (ncap > m->pk->limits.max_memo) ncap = m->pk->limits.max_memo;
    pth_value **n = pth_alloc(&m->pk->alloc, ncap * sizeof *n);
    if (!n) return nomem(m);
    if (m->memo_cap) memcpy(n, m->memo, m->memo_cap * sizeof *n);
    memset(n + m->memo_cap, 0, (ncap - m->memo_cap) * sizeof *n);
    pth_free(&m->pk->alloc, m->memo);
    m->memo = n;
    m->memo_cap = ncap;
  }
  if (!m->memo[idx]) m->memo_count++;
  m->memo[idx] = m->stack[m->sp - 1];
  return PTH_OK;
}

static pth_status memo_get(vm *m, uint64_t idx) {
  if (idx >= m->memo_cap || !m->memo[idx])
    return fail(m, PTH_E_FORMAT, "opcode 0x%02x %s at byte %zu: memo index %llu out of range (never stored)", m->op,
                op_name(m->op), m->op_pos, (unsigned long long)idx);
  return push(m, m->memo[idx]);
}

static uint64_t rd_le(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* Makes a tuple of stack items [first, sp) and replaces them with it. */
static pth_status tuple_from(vm *m, size_t first) {
  size_t n = m->sp - first;
  pth_status st;
  pth_value *t;
  if (n == 0) {
    t = m->empty_tuple;
  } else {
    t = new_value(m, PTH_V_TUPLE, &st);
    if (!t) return st;
    t->u.seq.items = arena_alloc(m->pk, n * sizeof *t->u.seq.items);
    if (!t->u.seq.items) return nomem(m);
    memcpy(t->u.seq.items, m->stack + first, n * sizeof *t->u.seq.items);
    t->u.seq.len = t->u.seq.cap = n;
    for (size_t i = 0; i < n; i++)
      if ((st = adopt(m, t, t->u.seq.items[i]))) return st;
  }
  m->sp = first;
  return push(m, t);
}

/* Appends stack items [first, sp) to a list or set; pairs of them to a dict. */
static pth_status fill(vm *m, pth_value *target, size_t first) {
  pth_status st;
  size_t n = m->sp - first;
  if (n == 0) return PTH_OK;
  if (target->kind == PTH_V_DICT) {
    if (n % 2) return fail_op(m, PTH_E_FORMAT, "odd number of items for a dict");
    if (!arena_grow(m->pk, (void **)&target->u.dict.kv, &target->u.dict.cap, 2 * sizeof(pth_value *), target->u.dict.len + n / 2))
      return nomem(m);
    memcpy(target->u.dict.kv + 2 * target->u.dict.len, m->stack + first, n * sizeof(pth_value *));
    target->u.dict.len += n / 2;
  } else {
    if (!arena_grow(m->pk, (void **)&target->u.seq.items, &target->u.seq.cap, sizeof(pth_value *), target->u.seq.len + n))
      return nomem(m);
    memcpy(target->u.seq.items + target->u.seq.len, m->stack + first, n * sizeof(pth_value *));
    target->u.seq.len += n;
  }
  for (size_t i = first; i < m->sp; i++)
    if ((st = adopt(m, target, m->stack[i]))) return st;
  m->sp = first;
  return PTH_OK;
}

/* `want` is a phrase with its article ("a list"). */
static pth_status wrong_target(vm *m, const pth_value *t, const char *want) {
  char buf[96];
  snprintf(buf, sizeof buf, "target is %s, not %s", pth_value_kind_phrase(t->kind), want);
  return fail_op(m, PTH_E_FORMAT, buf);
}

static pth_status step(vm *m, int *done) {
  pth_status st = PTH_OK;
  pth_value *v = NULL;
  size_t first = 0;
  m->op_pos = m->pos;
  m->op = m->d[m->pos++];
  switch (m->op) {
  case 0x80: /* PROTO */
    if ((st = need_bytes(m, 1))) return st;
    if (m->d[m->pos] > 5) return fail_op(m, PTH_E_UNSUPPORTED, "protocol above 5");
    m->pos++;
    return PTH_OK;
  case 0x95: /* FRAME */
    if ((st = need_bytes(m, 8))) return st;
    if (rd_le(m->d + m->pos, 8) > m->size - m->pos - 8) return fail_op(m, PTH_E_FORMAT, "frame longer than the input");
    m->pos += 8;
    return PTH_OK;
  case '.': /* STOP */
    if ((st = need_items(m, 1))) return st;
    if (m->n_marks)
      return fail(m, PTH_E_FORMAT, "MARK at byte %zu never closed (STOP at byte %zu)", m->marks[m->n_marks - 1].offset, m->op_pos);
    m->pk->root = pop1(m);
    if (m->sp)
      return fail(m, PTH_E_FORMAT, "STOP at byte %zu leaves %zu item%s on the stack", m->op_pos, m->sp, m->sp == 1 ? "" : "s");
    *done = 1;
    return PTH_OK;
  case '(': /* MARK */
    if (m->n_marks >= m->pk->limits.max_marks)
      return fail(m, PTH_E_LIMIT, "MARK at byte %zu: more than %u open MARKs (limit)", m->op_pos, m->pk->limits.max_marks);
    if (m->n_marks == m->marks_cap) {
      size_t ncap = m->marks_cap ? m->marks_cap * 2 : 16;
      mark_rec *n = pth_alloc(&m->pk->alloc, ncap * sizeof *n);
      if (!n) return nomem(m);
      if (m->n_marks) memcpy(n, m->marks, m->n_marks * sizeof *n);
      pth_free(&m->pk->alloc, m->marks);
      m->marks = n;
      m->marks_cap = ncap;
    }
    m->marks[m->n_marks].sp = m->sp;
    m->marks[m->n_marks].offset = m->op_pos;
    m->n_marks++;
    return PTH_OK;
  case '0': /* POP */
    if (m->sp > frame_base(m)) {
      m->sp--;
      return PTH_OK;
    }
    if (!m->n_marks) return need_items(m, 1);
    if ((st = pop_mark(m, &first))) return st;
    m->sp = first;
    return PTH_OK;
  case '1': /* POP_MARK */
    if ((st = pop_mark(m, &first))) return st;
    m->sp = first;
    return PTH_OK;
  case '2': /* DUP */
    if ((st = need_items(m, 1))) return st;
    return push(m, m->stack[m->sp - 1]);
  case 'N':
    return push(m, m->none);
  case 0x88:
    return push(m, m->vtrue);
  case 0x89:
    return push(m, m->vfalse);
  case 'K': case 'M': case 'J': { /* BININT1, BININT2, BININT */
    size_t n = m->op == 'K' ? 1 : m->op == 'M' ? 2 : 4;
    if ((st = need_bytes(m, n))) return st;
    if (!(v = new_value(m, PTH_V_INT, &st))) return st;
    uint64_t u = rd_le(m->d + m->pos, n);
    v->u.i = n == 4 ? (int64_t)(int32_t)(uint32_t)u : (int64_t)u;
    m->pos += n;
    return push(m, v);
  }
  case 0x8a: { /* LONG1 */
    if ((st = need_bytes(m, 1))) return st;
    size_t n = m->d[m->pos];
    if (n > 8)
      return fail(m, PTH_E_LIMIT, "opcode 0x8a LONG1 at byte %zu: %zu bytes exceed the 8-byte limit", m->op_pos, n);
    m->pos++;
    if ((st = need_bytes(m, n))) return st;
    uint64_t u = rd_le(m->d + m->pos, n);
    if (n && n < 8 && (m->d[m->pos + n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n);
    m->pos += n;
    if (!(v = new_value(m, PTH_V_INT, &st))) return st;
    v->u.i = (int64_t)u;
    return push(m, v);
  }
  case 'G': { /* BINFLOAT: big-endian double */
    if ((st = need_bytes(m, 8))) return st;
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u = (u << 8) | m->d[m->pos + (size_t)i];
    m->pos += 8;
    if (!(v = new_value(m, PTH_V_FLOAT, &st))) return st;
    memcpy(&v->u.f, &u, 8);
    return push(m, v);
  }
  case 'X':
    return op_string(m, PTH_V_STR, 4);
  case 0x8c:
    return op_string(m, PTH_V_STR, 1);
  case 'T':
    return op_string(m, PTH_V_STR, 4);
  case 'U':
    return op_string(m, PTH_V_STR, 1);
  case 'B':
    return op_string(m, PTH_V_BYTES, 4);
  case 'C':
    return op_string(m, PTH_V_BYTES, 1);
  case ')':
    return push(m, m->empty_tuple);
  case ']':
  case '}':
  case 0x8f:
    if (!(v = new_value(m, m->op == ']' ? PTH_V_LIST : m->op == '}' ? PTH_V_DICT : PTH_V_SET, &st))) return st;
    return push(m, v);
  case 't': /* TUPLE */
    if ((st = pop_mark(m, &first))) return st;
    return tuple_from(m, first);
  case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
    size_t n = (size_t)(m->op - 0x84);
    if ((st = need_items(m, n))) return st;
    return tuple_from(m, m->sp - n);
  }
  case 'a': /* APPEND */
    if ((st = need_items(m, 2))) return st;
    if (m->stack[m->sp - 2]->kind != PTH_V_LIST) return wrong_target(m, m->stack[m->sp - 2], "a list");
    return fill(m, m->stack[m->sp - 2], m->sp - 1);
  case 'e': case 0x90: /* APPENDS, ADDITEMS */
    if ((st = pop_mark(m, &first))) return st;
    if (first == 0 || (m->n_marks && first <= m->marks[m->n_marks - 1].sp))
      return fail_op(m, PTH_E_FORMAT, "stack underflow: no target below the MARK");
    v = m->stack[first - 1];
    if (v->kind != (m->op == 'e' ? PTH_V_LIST : PTH_V_SET)) return wrong_target(m, v, m->op == 'e' ? "a list" : "a set");
    return fill(m, v, first);
  case 's': /* SETITEM */
    if ((st = need_items(m, 3))) return st;
    if (m->stack[m->sp - 3]->kind != PTH_V_DICT) return wrong_target(m, m->stack[m->sp - 3], "a dict");
    return fill(m, m->stack[m->sp - 3], m->sp - 2);
  case 'u': /* SETITEMS */
    if ((st = pop_mark(m, &first))) return st;
    if (first == 0 || (m->n_marks && first <= m->marks[m->n_marks - 1].sp))
      return fail_op(m, PTH_E_FORMAT, "stack underflow: no target below the MARK");
    v = m->stack[first - 1];
    if (v->kind != PTH_V_DICT) return wrong_target(m, v, "a dict");
    return fill(m, v, first);
  case 'q': case 'r': { /* BINPUT, LONG_BINPUT */
    size_t n = m->op == 'q' ? 1 : 4;
    if ((st = need_bytes(m, n))) return st;
    uint64_t idx = rd_le(m->d + m->pos, n);
    m->pos += n;
    return memo_put(m, idx);
  }
  case 0x94: /* MEMOIZE */
    return memo_put(m, m->memo_count);
  case 'h': case 'j': { /* BINGET, LONG_BINGET */
    size_t n = m->op == 'h' ? 1 : 4;
    if ((st = need_bytes(m, n))) return st;
    uint64_t idx = rd_le(m->d + m->pos, n);
    m->pos += n;
    return memo_get(m, idx);
  }
  case 'c':
    return op_global(m);
  case 0x93: { /* STACK_GLOBAL */
    if ((st = need_items(m, 2))) return st;
    pth_value *name = pop1(m), *mod = pop1(m);
    if (mod->kind != PTH_V_STR || name->kind != PTH_V_STR) return fail_op(m, PTH_E_FORMAT, "module and name must be str");
    return make_global(m, (const uint8_t *)mod->u.str.ptr, mod->u.str.len, (const uint8_t *)name->u.str.ptr, name->u.str.len);
  }
  case 'R': case 0x81: { /* REDUCE, NEWOBJ */
    if ((st = need_items(m, 2))) return st;
    pth_value *args = pop1(m), *callee = pop1(m);
    return do_call(m, callee, args);
  }
  case 'b': { /* BUILD */
    if ((st = need_items(m, 2))) return st;
    pth_value *state = pop1(m), *inst = m->stack[m->sp - 1];
    if (inst->kind == PTH_V_CALL) {
      if (m->strict && inst->u.call.root->u.global.sym == PTH_SYM_OTHER) return unsafe_call(m, inst->u.call.root, "BUILD");
      inst->u.call.state = state;
    } else if (inst->kind == PTH_V_DICT && inst->u.dict.ordered) {
      if (state->kind != PTH_V_DICT) return fail_op(m, PTH_E_FORMAT, "BUILD state for an OrderedDict is not a dict");
      inst->u.dict.state = state;
    } else {
      return wrong_target(m, inst, "an object (an opaque call or an OrderedDict)");
    }
    return adopt(m, inst, state);
  }
  case 'Q': { /* BINPERSID */
    if ((st = need_items(m, 1))) return st;
    pth_value *pid = pop1(m);
    if (!(v = new_value(m, PTH_V_PERSID, &st))) return st;
    v->u.persid.pid = pid;
    v->u.persid.offset = m->op_pos;
    if ((st = adopt(m, v, pid))) return st;
    if ((st = record(m, &m->pk->persids, &m->pk->n_persids, &m->pk->cap_persids, v))) return st;
    return push(m, v);
  }
  default:
    if (!op_names[m->op]) return fail(m, PTH_E_FORMAT, "unknown opcode 0x%02x at byte %zu", m->op, m->op_pos);
    return fail_op(m, PTH_E_UNSUPPORTED, "opcode not supported by this reader");
  }
}

pth_status pth_pickle_run(const void *data, size_t size, const pth_options *opt_in, pth_pickle **out,
                          size_t *consumed, char *err, size_t errlen) {
  if (out) *out = NULL;
  if (err && errlen) err[0] = 0;
  if (!out || (!data && size)) return pth_errf(PTH_E_ARG, err, errlen, "pickle: NULL argument");
  pth_options opt;
  if (pth_options_resolve(opt_in, &opt))
    return pth_errf(PTH_E_ARG, err, errlen, "pickle: invalid options (allocator alloc/free must be both set or both NULL)");
  pth_pickle *pk = pth_alloc(&opt.allocator, sizeof *pk);
  if (!pk) return pth_errf(PTH_E_NOMEM, err, errlen, "pickle: out of memory");
  memset(pk, 0, sizeof *pk);
  pk->alloc = opt.allocator;
  pk->limits = opt.limits;
  vm m;
  memset(&m, 0, sizeof m);
  m.pk = pk;
  m.d = data;
  m.size = size;
  m.strict = opt.strict_everywhere;
  m.err = err;
  m.errlen = errlen;
  pth_status st = PTH_OK;
  if (!(m.none = new_value(&m, PTH_V_NONE, &st)) || !(m.vtrue = new_value(&m, PTH_V_BOOL, &st)) ||
      !(m.vfalse = new_value(&m, PTH_V_BOOL, &st)) || !(m.empty_tuple = new_value(&m, PTH_V_TUPLE, &st)))
    goto done;
  m.vtrue->u.i = 1;
  int stopped = 0;
  uint64_t ops = 0;
  while (!stopped) {
    if (m.pos >= m.size) {
      st = fail(&m, PTH_E_FORMAT, "truncated: input ends at byte %zu before STOP", m.pos);
      break;
    }
    if (++ops > pk->limits.max_ops) {
      st = fail(&m, PTH_E_LIMIT, "more than %llu opcodes (limit) at byte %zu", (unsigned long long)pk->limits.max_ops, m.pos);
      break;
    }
    if ((st = step(&m, &stopped))) break;
  }
done:
  pth_free(&pk->alloc, m.stack);
  pth_free(&pk->alloc, m.marks);
  pth_free(&pk->alloc, m.memo);
  if (st) {
    pth_pickle_free(pk);
    return st;
  }
  if (consumed) *consumed = m.pos;
  *out = pk;
  return PTH_OK;
}

const pth_value *pth_pickle_root(const pth_pickle *p) { return p ? p->root : NULL; }
size_t pth_pickle_global_count(const pth_pickle *p) { return p ? p->n_globals : 0; }
const pth_value *pth_pickle_global(const pth_pickle *p, size_t i) { return p && i < p->n_globals ? p->globals[i] : NULL; }
size_t pth_pickle_opaque_count(const pth_pickle *p) { return p ? p->n_opaque : 0; }
const pth_value *pth_pickle_opaque(const pth_pickle *p, size_t i) { return p && i < p->n_opaque ? p->opaque[i] : NULL; }
size_t pth_pickle_persid_count(const pth_pickle *p) { return p ? p->n_persids : 0; }
const pth_value *pth_pickle_persid(const pth_pickle *p, size_t i) { return p && i < p->n_persids ? p->persids[i] : NULL; }

void pth_pickle_free(pth_pickle *p) {
  if (!p) return;
  i2i_allocator a = p->alloc;
  arena_chunk *c = p->chunks;
  while (c) {
    arena_chunk *n = c->next;
    pth_free(&a, c);
    c = n;
  }
  pth_free(&a, p);
}

const pth_value *pth_value_dict_get(const pth_value *dict, const char *key) {
  if (!dict || dict->kind != PTH_V_DICT || !key) return NULL;
  size_t klen = strlen(key);
  for (size_t i = dict->u.dict.len; i-- > 0;) {
    const pth_value *k = dict->u.dict.kv[2 * i];
    if (k->kind == PTH_V_STR && k->u.str.len == klen && !memcmp(k->u.str.ptr, key, klen)) return dict->u.dict.kv[2 * i + 1];
  }
  return NULL;
}

typedef struct {
  const pth_value *v;
  uint32_t depth;
} walk_item;

pth_status pth_pickle_check_strict(pth_pickle *p, const pth_value *root, const char *region, char *err, size_t errlen) {
  if (!p || !root) return pth_errf(PTH_E_ARG, err, errlen, "pickle: NULL argument");
  if (!region) region = "the strict region";
  uint32_t epoch = ++p->epoch;
  if (epoch == 0) epoch = p->epoch = 1;
  size_t cap = 256, n = 0;
  walk_item *stk = pth_alloc(&p->alloc, cap * sizeof *stk);
  if (!stk) return pth_errf(PTH_E_NOMEM, err, errlen, "pickle: out of memory");
  pth_status st = PTH_OK;
  stk[n++] = (walk_item){root, 1};
  while (n && !st) {
    walk_item it = stk[--n];
    const pth_value *v = it.v;
    if (v->visit == epoch) continue;
    ((pth_value *)v)->visit = epoch;
    if (it.depth > p->limits.max_depth) {
      st = pth_errf(PTH_E_LIMIT, err, errlen, "pickle: nesting deeper than %u (limit) inside %s", p->limits.max_depth, region);
      break;
    }
    const pth_value *kids[3] = {NULL, NULL, NULL};
    pth_value *const *arr = NULL;
    size_t narr = 0;
    const pth_value *g = NULL;
    switch (v->kind) {
    case PTH_V_GLOBAL:
      if (v->u.global.sym == PTH_SYM_OTHER) {
        g = v;
        st = pth_errf(PTH_E_UNSAFE, err, errlen, "pickle: opcode 0x%02x %s '%s %s' at byte %zu: a global outside the allowlist inside %s",
                      g->u.global.opcode, op_name(g->u.global.opcode), g->u.global.module, g->u.global.name, g->u.global.offset, region);
      }
      break;
    case PTH_V_CALL:
      g = v->u.call.root;
      if (g->u.global.sym == PTH_SYM_OTHER) {
        const char *what = v->u.call.opcode == 'R' ? "REDUCE" : "NEWOBJ";
        st = pth_errf(PTH_E_UNSAFE, err, errlen, "pickle: opcode 0x%02x %s '%s %s' at byte %zu: %s on a global outside the allowlist inside %s (%s at byte %zu)",
                      g->u.global.opcode, op_name(g->u.global.opcode), g->u.global.module, g->u.global.name, g->u.global.offset,
                      what, region, what, v->u.call.offset);
      }
      kids[0] = v->u.call.callee;
      kids[1] = v->u.call.args;
      kids[2] = v->u.call.state;
      break;
    case PTH_V_TUPLE: case PTH_V_LIST: case PTH_V_SET:
      arr = v->u.seq.items;
      narr = v->u.seq.len;
      break;
    case PTH_V_DICT:
      arr = v->u.dict.kv;
      narr = 2 * v->u.dict.len;
      kids[0] = v->u.dict.state;
      break;
    case PTH_V_PERSID:
      kids[0] = v->u.persid.pid;
      break;
    default:
      break;
    }
    if (st) break;
    size_t add = narr + 3;
    if (cap - n < add) {
      size_t ncap = cap, bytes;
      while (ncap - n < add) {
        if (__builtin_mul_overflow(ncap, (size_t)2, &ncap)) break;
      }
      if (ncap - n < add || __builtin_mul_overflow(ncap, sizeof *stk, &bytes)) {
        st = pth_errf(PTH_E_NOMEM, err, errlen, "pickle: out of memory");
        break;
      }
      walk_item *ns = pth_alloc(&p->alloc, bytes);
      if (!ns) {
        st = pth_errf(PTH_E_NOMEM, err, errlen, "pickle: out of memory");
        break;
      }
      memcpy(ns, stk, n * sizeof *stk);
      pth_free(&p->alloc, stk);
      stk = ns;
      cap = ncap;
    }
    for (int k = 2; k >= 0; k--)
      if (kids[k] && kids[k]->visit != epoch) stk[n++] = (walk_item){kids[k], it.depth + 1};
    for (size_t k = narr; k-- > 0;)
      if (arr[k]->visit != epoch) stk[n++] = (walk_item){arr[k], it.depth + 1};
  }
  pth_free(&p->alloc, stk);
  return st;
}
