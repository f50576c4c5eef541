/* fuzz_pth_zip.c: libFuzzer target for the zip central-directory reader on raw bytes.
 * Checks that every entry handed out lies inside the input and reads its bytes. Seeds: the
 * shared tiny_zip.pth and torch-written zips. Not built by default (meson -Dfuzz=true, clang).
 */
#include <stddef.h>
#include <stdint.h>

#include "pth.h"

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pth_options opt;
  pth_default_options(&opt);
  opt.verify_crc = size & 1;
  char err[256];
  pth_zip *z = NULL;
  if (pth_zip_parse(data, size, &opt, &z, err, sizeof err) == PTH_OK) {
    unsigned sum = 0;
    for (size_t i = 0; i < pth_zip_count(z); i++) {
      const pth_zip_entry *e = pth_zip_entry_at(z, i);
      if (e->data_offset > size || e->size > size - e->data_offset) __builtin_trap();
      if (e->size) sum += data[e->data_offset] + data[e->data_offset + e->size - 1];
      if (pth_zip_find(z, e->name) != e) __builtin_trap();
    }
    sum += (unsigned)pth_zip_prefix(z)[0];
    sink = sum;
  }
  pth_zip_free(z);
  return 0;
}
