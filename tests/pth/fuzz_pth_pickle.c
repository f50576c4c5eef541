/* fuzz_pth_pickle.c: libFuzzer target for the restricted pickle VM on raw data.pkl bytes, followed
 * by the strict walk over the result (cycles, shared references, depth). Seeds: data.pkl of the
 * shared samples and torch fixtures; a dictionary of opcodes and allowlisted globals helps
 * (pickle.dict). Not built by default (meson -Dfuzz=true, clang).
 */
#include <stddef.h>
#include <stdint.h>

#include "pth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pth_options opt;
  pth_default_options(&opt);
  opt.strict_everywhere = size & 1;
  opt.limits.max_objects = 1u << 16;
  opt.limits.max_ops = 1u << 20;
  char err[256];
  pth_pickle *pk = NULL;
  size_t used = 0;
  if (pth_pickle_run(data, size, &opt, &pk, &used, err, sizeof err) == PTH_OK) {
    if (used > size) __builtin_trap();
    (void)pth_pickle_check_strict(pk, pth_pickle_root(pk), "state_dict", err, sizeof err);
    (void)pth_value_dict_get(pth_pickle_root(pk), "state_dict");
  } else if (!err[0]) {
    __builtin_trap();
  }
  pth_pickle_free(pk);
  return 0;
}
