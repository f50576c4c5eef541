/* fuzz_pth_load.c: libFuzzer target for the whole .pth load (zip and legacy) on raw bytes.
 * Every input must either load or fail with a message; the result is walked so that tensor
 * pointers are read. Seeds: the shared tiny_zip.pth / tiny_legacy.pth and the torch fixtures.
 * Not a unit test and not built by default (meson -Dfuzz=true, clang).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pth.h"

static volatile double sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pth_options opt;
  pth_default_options(&opt);
  opt.verify_crc = size & 1;
  opt.limits.max_objects = 1u << 16;
  opt.limits.max_ops = 1u << 20;
  char err[256];
  pth_file *f = NULL;
  pth_status st = pth_load_memory(data, size, &opt, &f, err, sizeof err);
  if (st == PTH_OK) {
    const pth_info *in = pth_file_info(f);
    double sum = 0;
    for (size_t i = 0; i < in->n_tensors; i++) {
      const pth_tensor *t = &in->tensors[i];
      for (uint64_t k = 0; k < t->numel && k < 4096; k++)
        sum += t->dtype == PTH_F32 ? (double)((const float *)t->data)[k] : (double)((const int64_t *)t->data)[k];
      (void)pth_file_find(f, t->key);
    }
    for (size_t i = 0; i < in->n_keys; i++) sum += (double)strlen(in->keys[i]);
    for (size_t i = 0; i < in->n_opaque; i++) sum += (double)strlen(in->opaque[i]);
    sink = sum;
    pth_file_free(f);
  } else if (!err[0]) {
    __builtin_trap();
  }
  return 0;
}
