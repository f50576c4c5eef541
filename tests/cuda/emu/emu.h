/* tests/cuda/emu/emu.h: state shared by the emulated CUDA runtime, cuDNN and kernels. The
 * emulated module is the real module's host code and kernel bodies linked against host
 * emulations of libcudart and libcudnn: plan layouts, halos, fusions, in-place reuse, cuDNN
 * geometry, fp16 rounding and fault paths are checked without a GPU (not a performance model). */
#ifndef I2I_EMU_H
#define I2I_EMU_H

#include <cuda_runtime.h>

/* Returns the sticky error once a fault happened (every later call fails with it), else
 * cudaSuccess; counts launches for EMU_STICKY_AT=N (the Nth launch faults). */
cudaError_t emu_launch_check(void);
cudaError_t emu_sticky(void);
void emu_set_sticky(cudaError_t e);
void emu_set_last(cudaError_t e);

/* A kernel launch as a host loop: honours the sticky state, then runs `body` for i < total. */
#define LOOP(total, body)                                                                              \
  do {                                                                                                \
    cudaError_t e_ = emu_launch_check();                                                              \
    if (e_) return e_;                                                                                \
    int64_t t_ = (total);                                                                             \
    _Pragma("omp parallel for schedule(static)") for (int64_t i = 0; i < t_; i++) { body; }           \
    return cudaSuccess;                                                                               \
  } while (0)

#endif
