/* zip.c: a central-directory zip reader for torch checkpoints, on bytes already in memory.
 *
 * Reads the EOCD (and the zip64 EOCD torch always writes), walks the central directory, checks each
 * local header and hands out where every stored entry's data lies, so the caller can use it in
 * place. It is not a general zip library: no compression, no encryption, no multi-disk archives,
 * no streaming over local headers (torch's local headers carry zero sizes), no writing.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "pth.h"

struct pth_zip {
  i2i_allocator alloc;
  pth_zip_entry *entries;  /* central-directory order */
  size_t count;
  const pth_zip_entry **by_name; /* sorted by name, for pth_zip_find */
  char *names;             /* one block: every name NUL-terminated, then the prefix */
  const char *prefix;
};

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOCATOR64 0x07064b50u

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* The display form of a (possibly hostile) entry name for messages, bounded by the buffer
 * (pth_shown: control characters and invalid UTF-8 as \xNN). */
static const char *show_name(const uint8_t *name, size_t len, char *buf, size_t buflen) {
  return pth_shown((const char *)name, len, buf, buflen);
}

static int cmp_by_offset(const void *a, const void *b) {
  const pth_zip_entry *x = *(const pth_zip_entry *const *)a, *y = *(const pth_zip_entry *const *)b;
  return x->header_offset < y->header_offset ? -1 : x->header_offset > y->header_offset;
}

static int cmp_names(const char *a, size_t alen, const char *b, size_t blen) {
  int c = memcmp(a, b, alen < blen ? alen : blen);
  if (c) return c;
  return alen < blen ? -1 : alen > blen;
}

static int cmp_by_name(const void *a, const void *b) {
  const pth_zip_entry *x = *(const pth_zip_entry *const *)a, *y = *(const pth_zip_entry *const *)b;
  return cmp_names(x->name, x->name_len, y->name, y->name_len);
}

/* Locates the end records; fills the directory's offset, size and entry count. */
static pth_status find_directory(const uint8_t *d, size_t size, uint64_t *cd_off, uint64_t *cd_size,
                                 uint64_t *count, uint64_t *cd_limit, char *err, size_t errlen) {
  if (size < 22) return pth_errf(PTH_E_FORMAT, err, errlen, "zip: file of %zu bytes is too short for an end-of-central-directory record", size);
  size_t lowest = size - 22 > 65535 ? size - 22 - 65535 : 0;
  size_t eocd = SIZE_MAX;
  for (size_t pos = size - 22 + 1; pos-- > lowest;) {
    if (rd32(d + pos) == SIG_EOCD && (size_t)rd16(d + pos + 20) == size - pos - 22) {
      eocd = pos;
      break;
    }
  }
  if (eocd == SIZE_MAX) return pth_errf(PTH_E_FORMAT, err, errlen, "zip: no end-of-central-directory record (truncated or not a zip)");
  const uint8_t *e = d + eocd;
  uint32_t disk = rd16(e + 4), cd_disk = rd16(e + 6);
  uint64_t n_disk = rd16(e + 8), n_total = rd16(e + 10);
  uint64_t csz = rd32(e + 12), coff = rd32(e + 16);
  uint64_t limit = eocd;
  if (eocd >= 20 && rd32(d + eocd - 20) == SIG_LOCATOR64) {
    const uint8_t *l = d + eocd - 20;
    uint64_t z64 = rd64(l + 8);
    if (rd32(l + 4) != 0 || rd32(l + 16) > 1)
      return pth_errf(PTH_E_UNSUPPORTED, err, errlen, "zip: multi-disk archives are not supported");
    if (z64 > eocd - 20 || eocd - 20 - z64 < 56)
      return pth_errf(PTH_E_FORMAT, err, errlen, "zip: zip64 end record offset %llu is outside the file (locator at %zu)", (unsigned long long)z64, eocd - 20);
    const uint8_t *z = d + z64;
    if (rd32(z) != SIG_EOCD64)
      return pth_errf(PTH_E_FORMAT, err, errlen, "zip: no zip64 end record at offset %llu", (unsigned long long)z64);
    uint64_t rec = rd64(z + 4);
    if (rec < 44 || rec > eocd - 20 - z64 - 12)
      return pth_errf(PTH_E_FORMAT, err, errlen, "zip: zip64 end record size %llu is inconsistent", (unsigned long long)rec);
    disk = rd32(z + 16);
    cd_disk = rd32(z + 20);
    n_disk = rd64(z + 24);
    n_total = rd64(z + 32);
    csz = rd64(z + 40);
    coff = rd64(z + 48);
    limit = z64;
  } else if (n_total == 0xffff || csz == 0xffffffffu || coff == 0xffffffffu) {
    return pth_errf(PTH_E_FORMAT, err, errlen, "zip: end record needs zip64 values but has no zip64 locator");
  }
  if (disk != 0 || cd_disk != 0 || n_disk != n_total)
    return pth_errf(PTH_E_UNSUPPORTED, err, errlen, "zip: multi-disk archives are not supported");
  uint64_t cd_end;
  if (__builtin_add_overflow(coff, csz, &cd_end) || cd_end > limit)
    return pth_errf(PTH_E_FORMAT, err, errlen, "zip: central directory (offset %llu + %llu) extends past its end record at %llu",
                    (unsigned long long)coff, (unsigned long long)csz, (unsigned long long)limit);
  *cd_off = coff;
  *cd_size = csz;
  *count = n_total;
  *cd_limit = limit;
  return PTH_OK;
}

pth_status pth_zip_parse(const void *data, size_t size, const pth_options *opt_in, pth_zip **out,
                         char *err, size_t errlen) {
  if (out) *out = NULL;
  if (errlen && err) err[0] = 0;
  if (!out || (!data && size)) return pth_errf(PTH_E_ARG, err, errlen, "zip: NULL argument");
  pth_options opt;
  pth_status st = pth_options_resolve(opt_in, &opt);
  if (st) return pth_errf(st, err, errlen, "zip: invalid options (allocator alloc/free must be both set or both NULL)");
  if (size > opt.limits.max_file_bytes)
    return pth_errf(PTH_E_LIMIT, err, errlen, "zip: input of %zu bytes exceeds the limit of %llu", size, (unsigned long long)opt.limits.max_file_bytes);
  const uint8_t *d = data;
  uint64_t cd_off = 0, cd_size = 0, count = 0, cd_limit = 0;
  st = find_directory(d, size, &cd_off, &cd_size, &count, &cd_limit, err, errlen);
  if (st) return st;
  if (count > opt.limits.max_zip_entries)
    return pth_errf(PTH_E_LIMIT, err, errlen, "zip: %llu entries exceed the limit of %u", (unsigned long long)count, opt.limits.max_zip_entries);
  if (count > cd_size / 46)
    return pth_errf(PTH_E_FORMAT, err, errlen, "zip: %llu entries cannot fit in a central directory of %llu bytes", (unsigned long long)count, (unsigned long long)cd_size);

  /* Pass 1: sizes of the name block. */
  size_t names_bytes = 0;
  const uint8_t *cd = d + cd_off, *cd_end = d + cd_off + cd_size;
  const uint8_t *p = cd;
  char nb[256];
  for (uint64_t i = 0; i < count; i++) {
    if ((size_t)(cd_end - p) < 46 || rd32(p) != SIG_CENTRAL)
      return pth_errf(PTH_E_FORMAT, err, errlen, "zip: central-directory record %llu at offset %llu is missing or truncated",
                      (unsigned long long)i, (unsigned long long)(p - d));
    size_t n = rd16(p + 28), e = rd16(p + 30), c = rd16(p + 32);
    if ((size_t)(cd_end - p) - 46 < n + e + c)
      return pth_errf(PTH_E_FORMAT, err, errlen, "zip: central-directory record %llu extends past the directory", (unsigned long long)i);
    if (n > opt.limits.max_name_len)
      return pth_errf(PTH_E_LIMIT, err, errlen, "zip: entry name of %zu bytes exceeds the limit of %u", n, opt.limits.max_name_len);
    names_bytes += n + 1;
    p += 46 + n + e + c;
  }
  if (p != cd_end)
    return pth_errf(PTH_E_FORMAT, err, errlen, "zip: central directory holds %llu bytes after its %llu records",
                    (unsigned long long)(cd_end - p), (unsigned long long)count);
  const uint8_t *first = cd + 46;
  size_t first_len = count ? rd16(cd + 28) : 0;
  size_t prefix_len = 0;
  while (prefix_len < first_len && first[prefix_len] != '/') prefix_len++;
  if (prefix_len == first_len) prefix_len = 0;
  names_bytes += prefix_len + 1;

  pth_zip *z = pth_alloc(&opt.allocator, sizeof *z);
  if (!z) return pth_errf(PTH_E_NOMEM, err, errlen, "zip: out of memory");
  memset(z, 0, sizeof *z);
  z->alloc = opt.allocator;
  size_t ebytes = 0, pbytes = 0;
  if (__builtin_mul_overflow((size_t)count, sizeof *z->entries, &ebytes) ||
      __builtin_mul_overflow((size_t)count, sizeof *z->by_name, &pbytes)) {
    pth_zip_free(z);
    return pth_errf(PTH_E_LIMIT, err, errlen, "zip: too many entries");
  }
  z->entries = pth_alloc(&z->alloc, ebytes);
  z->by_name = pth_alloc(&z->alloc, pbytes);
  z->names = pth_alloc(&z->alloc, names_bytes);
  const pth_zip_entry **by_off = pth_alloc(&z->alloc, pbytes);
  if (!z->entries || !z->by_name || !z->names || !by_off) {
    pth_free(&z->alloc, by_off);
    pth_zip_free(z);
    return pth_errf(PTH_E_NOMEM, err, errlen, "zip: out of memory");
  }
  z->count = (size_t)count;

  /* Pass 2: records and local headers. */
  char *np = z->names;
  p = cd;
  for (size_t i = 0; i < z->count; i++) {
    pth_zip_entry *en = &z->entries[i];
    uint16_t flags = rd16(p + 8), method = rd16(p + 10);
    uint32_t crc = rd32(p + 16);
    uint64_t csize = rd32(p + 20), usize = rd32(p + 24);
    size_t n = rd16(p + 28), e = rd16(p + 30), c = rd16(p + 32);
    uint32_t disk = rd16(p + 34);
    uint64_t loff = rd32(p + 42);
    const uint8_t *name = p + 46;
    show_name(name, n, nb, sizeof nb);
    if (memchr(name, 0, n)) {
      st = pth_errf(PTH_E_FORMAT, err, errlen, "zip: entry name '%s' contains a NUL byte", nb);
      goto fail;
    }
    /* zip64 extra field: the values saturated in the fixed fields, in this order. */
    const uint8_t *x = name + n, *xend = name + n + e;
    while (xend - x >= 4) {
      uint16_t id = rd16(x), len = rd16(x + 2);
      if ((size_t)(xend - x - 4) < len) break;
      if (id == 0x0001) {
        const uint8_t *q = x + 4, *qe = x + 4 + len;
        if (usize == 0xffffffffu) { if (qe - q < 8) goto bad64; usize = rd64(q); q += 8; }
        if (csize == 0xffffffffu) { if (qe - q < 8) goto bad64; csize = rd64(q); q += 8; }
        if (loff == 0xffffffffu) { if (qe - q < 8) goto bad64; loff = rd64(q); q += 8; }
        if (disk == 0xffff) { if (qe - q < 4) goto bad64; disk = rd32(q); }
      }
      x += 4 + len;
    }
    if (flags & 0x41) {
      st = pth_errf(PTH_E_UNSUPPORTED, err, errlen, "zip: entry '%s' is encrypted", nb);
      goto fail;
    }
    if (method != 0) {
      st = pth_errf(PTH_E_UNSUPPORTED, err, errlen, "zip: entry '%s' is compressed (method %u); only stored entries are supported", nb, method);
      goto fail;
    }
    if (disk != 0) {
      st = pth_errf(PTH_E_UNSUPPORTED, err, errlen, "zip: entry '%s' is on disk %u; multi-disk archives are not supported", nb, disk);
      goto fail;
    }
    if (csize != usize) {
      st = pth_errf(PTH_E_FORMAT, err, errlen, "zip: stored entry '%s' has compressed size %llu != size %llu", nb,
                    (unsigned long long)csize, (unsigned long long)usize);
      goto fail;
    }
    if (loff > cd_off || cd_off - loff < 30) {
      st = pth_errf(PTH_E_FORMAT, err, errlen, "zip: local header of entry '%s' at offset %llu is not before the central directory at %llu",
                    nb, (unsigned long long)loff, (unsigned long long)cd_off);
      goto fail;
    }
    const uint8_t *lh = d + loff;
    if (rd32(lh) != SIG_LOCAL) {
      st = pth_errf(PTH_E_FORMAT, err, errlen, "zip: no local header for entry '%s' at offset %llu", nb, (unsigned long long)loff);
      goto fail;
    }
    size_t ln = rd16(lh + 26), le = rd16(lh + 28);
    if (rd16(lh + 8) != 0) {
      st = pth_errf(PTH_E_UNSUPPORTED, err, errlen, "zip: local header of entry '%s' says method %u; only stored entries are supported", nb, rd16(lh + 8));
      goto fail;
    }
    uint64_t doff = loff + 30 + ln + le, dend;
    if (doff > cd_off || ln != n || memcmp(lh + 30, name, n) != 0) {
      if (doff <= cd_off) {
        char lb[256];
        st = pth_errf(PTH_E_FORMAT, err, errlen, "zip: local header name '%s' differs from central name '%s'",
                      show_name(lh + 30, ln, lb, sizeof lb), nb);
      } else {
        st = pth_errf(PTH_E_FORMAT, err, errlen, "zip: local header of entry '%s' extends into the central directory", nb);
      }
      goto fail;
    }
    if (__builtin_add_overflow(doff, usize, &dend) || dend > size) {
      st = pth_errf(PTH_E_FORMAT, err, errlen, "zip: entry '%s' extends past the end of the file (offset %llu + %llu > %zu)",
                    nb, (unsigned long long)doff, (unsigned long long)usize, size);
      goto fail;
    }
    if (dend > cd_off) {
      st = pth_errf(PTH_E_FORMAT, err, errlen, "zip: entry '%s' (offset %llu + %llu) overlaps the central directory at %llu",
                    nb, (unsigned long long)doff, (unsigned long long)usize, (unsigned long long)cd_off);
      goto fail;
    }
    memcpy(np, name, n);
    np[n] = 0;
    en->name = np;
    en->name_len = n;
    np += n + 1;
    en->header_offset = loff;
    en->data_offset = doff;
    en->size = usize;
    en->crc32 = crc;
    z->by_name[i] = en;
    by_off[i] = en;
    p += 46 + n + e + c;
    continue;
  bad64:
    st = pth_errf(PTH_E_FORMAT, err, errlen, "zip: entry '%s' has a truncated zip64 extra field", nb);
    goto fail;
  }
  memcpy(np, first, prefix_len);
  np[prefix_len] = 0;
  z->prefix = np;

  /* Entries must not overlap one another. */
  qsort(by_off, z->count, sizeof *by_off, cmp_by_offset);
  for (size_t i = 1; i < z->count; i++) {
    const pth_zip_entry *a = by_off[i - 1], *b = by_off[i];
    if (a->data_offset + a->size > b->header_offset) {
      char nb2[256];
      st = pth_errf(PTH_E_FORMAT, err, errlen, "zip: entries '%s' (bytes %llu..%llu) and '%s' (from byte %llu) overlap",
                    show_name((const uint8_t *)a->name, a->name_len, nb, sizeof nb), (unsigned long long)a->header_offset,
                    (unsigned long long)(a->data_offset + a->size), show_name((const uint8_t *)b->name, b->name_len, nb2, sizeof nb2),
                    (unsigned long long)b->header_offset);
      goto fail;
    }
  }
  qsort(z->by_name, z->count, sizeof *z->by_name, cmp_by_name);
  for (size_t i = 1; i < z->count; i++) {
    if (cmp_by_name(&z->by_name[i - 1], &z->by_name[i]) == 0) {
      st = pth_errf(PTH_E_FORMAT, err, errlen, "zip: entry name '%s' occurs twice",
                    show_name((const uint8_t *)z->by_name[i]->name, z->by_name[i]->name_len, nb, sizeof nb));
      goto fail;
    }
  }
  if (opt.verify_crc) {
    for (size_t i = 0; i < z->count; i++) {
      const pth_zip_entry *en = &z->entries[i];
      uLong crc = crc32(0L, Z_NULL, 0);
      const uint8_t *q = d + en->data_offset;
      uint64_t left = en->size;
      while (left) {
        uInt chunk = left > (1u << 30) ? (1u << 30) : (uInt)left;
        crc = crc32(crc, q, chunk);
        q += chunk;
        left -= chunk;
      }
      if ((uint32_t)crc != en->crc32) {
        st = pth_errf(PTH_E_FORMAT, err, errlen, "zip: CRC-32 mismatch in entry '%s' (computed %08x, directory says %08x)",
                      show_name((const uint8_t *)en->name, en->name_len, nb, sizeof nb), (unsigned)crc, (unsigned)en->crc32);
        goto fail;
      }
    }
  }
  pth_free(&z->alloc, by_off);
  *out = z;
  return PTH_OK;
fail:
  pth_free(&z->alloc, by_off);
  pth_zip_free(z);
  return st;
}

size_t pth_zip_count(const pth_zip *z) { return z ? z->count : 0; }

const pth_zip_entry *pth_zip_entry_at(const pth_zip *z, size_t i) {
  return z && i < z->count ? &z->entries[i] : NULL;
}

const pth_zip_entry *pth_zip_find(const pth_zip *z, const char *name) {
  if (!z || !name) return NULL;
  size_t len = strlen(name), lo = 0, hi = z->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = cmp_names(z->by_name[mid]->name, z->by_name[mid]->name_len, name, len);
    if (c == 0) return z->by_name[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

const char *pth_zip_prefix(const pth_zip *z) { return z && z->prefix ? z->prefix : ""; }

void pth_zip_free(pth_zip *z) {
  if (!z) return;
  i2i_allocator a = z->alloc;
  pth_free(&a, z->entries);
  pth_free(&a, (void *)z->by_name);
  pth_free(&a, z->names);
  pth_free(&a, z);
}
