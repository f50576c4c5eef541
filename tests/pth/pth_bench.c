/* pth_bench.c: loads one checkpoint with the .pth reader and prints what it found, the load time
 * and the peak resident memory; with -v it lists every tensor, with -c it verifies CRCs, with -t
 * it also reads every tensor element (so mapped pages are really touched). A tool for measuring
 * and inspecting by hand; not a test (nothing is asserted).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "pth.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  int verbose = 0, touch = 0;
  const char *path = NULL;
  pth_options opt;
  pth_default_options(&opt);
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-v")) verbose = 1;
    else if (!strcmp(argv[i], "-c")) opt.verify_crc = 1;
    else if (!strcmp(argv[i], "-t")) touch = 1;
    else if (!strcmp(argv[i], "-s")) opt.strict_everywhere = 1;
    else path = argv[i];
  }
  if (!path) {
    fprintf(stderr, "usage: pth_bench [-v] [-c] [-t] [-s] FILE.pth\n");
    return 2;
  }
  char err[512];
  pth_file *f = NULL;
  double t0 = now();
  pth_status st = pth_load_file(path, &opt, &f, err, sizeof err);
  double t1 = now();
  if (st) {
    fprintf(stderr, "%s: %s\n", pth_status_name(st), err);
    return 1;
  }
  const pth_info *in = pth_file_info(f);
  double sum = 0;
  if (touch) {
    for (size_t i = 0; i < in->n_tensors; i++) {
      const pth_tensor *t = &in->tensors[i];
      for (uint64_t k = 0; k < t->numel; k++)
        sum += t->dtype == PTH_F32 ? (double)((const float *)t->data)[k] : (double)((const int64_t *)t->data)[k];
    }
  }
  double t2 = now();
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("container %s, prefix '%s', %llu bytes, state_dict key: %s, module. stripped: %s\n", in->container, in->zip_prefix,
         (unsigned long long)in->file_size, in->has_state_dict_key ? "yes" : "no", in->stripped_module_prefix ? "yes" : "no");
  printf("top-level keys:");
  for (size_t i = 0; i < in->n_keys; i++) printf(" %s", in->keys[i]);
  printf("\nglobals:");
  for (size_t i = 0; i < in->n_globals; i++) printf(" %s%s", in->globals[i].name, in->globals[i].allowlisted ? "" : "(opaque)");
  printf("\nopaque values in lenient regions:");
  for (size_t i = 0; i < in->n_opaque; i++) printf(" %s", in->opaque[i]);
  uint64_t total = 0;
  for (size_t i = 0; i < in->n_tensors; i++) total += in->tensors[i].numel;
  printf("\n%zu tensors, %llu elements\n", in->n_tensors, (unsigned long long)total);
  if (verbose) {
    for (size_t i = 0; i < in->n_tensors; i++) {
      const pth_tensor *t = &in->tensors[i];
      printf("  %s %s<-%s [", t->key, pth_dtype_name(t->dtype), pth_dtype_name(t->stored_dtype));
      for (int d = 0; d < t->rank; d++) printf("%s%lld", d ? "," : "", (long long)t->dims[d]);
      printf("] storage %s+%llu%s\n", t->storage_key, (unsigned long long)t->storage_offset, t->is_parameter ? " parameter" : "");
    }
  }
  printf("load %.1f ms%s, peak RSS %.1f MB (file %.1f MB)\n", 1e3 * (t1 - t0), opt.verify_crc ? " with CRC" : "",
         (double)ru.ru_maxrss / 1024.0, (double)in->file_size / 1e6);
  if (touch) printf("reading every element %.1f ms (sum %g)\n", 1e3 * (t2 - t1), sum);
  pth_file_free(f);
  return 0;
}
