/* tests/cuda/emu/emu.h: state shared by the emulated CUDA runtime, cuDNN and kernels. The
 * emulated module is the real module's host code and kernel bodies linked against host
 * emulations of libcudart and libcudnn: plan layouts, halos, fusions, in-place reuse, cuDNN
 * geometry, fp16 rounding and fault paths are checked without a GPU (not a performance model). */
#ifndef I2I_EMU_H
#define I2I_EMU_H

#include <cuda_runtime.h>

#include <functional>

/* Returns the sticky error once a fault happened (every later call fails with it), else
 * cudaSuccess; counts launches for EMU_STICKY_AT=N (the Nth launch faults). */
cudaError_t emu_launch_check(void);
cudaError_t emu_sticky(void);
void emu_set_sticky(cudaError_t e);
void emu_set_last(cudaError_t e);

/* Stream capture: while a capture is open (cudaStreamBeginCapture), work is recorded instead of
 * run, with its arguments as they were at the call (pointers, scalars and structs by value), and
 * runs in order each time the graph is launched, as CUDA does; the first call that a capture
 * forbids (a synchronisation, cudaMalloc, cudaFree) invalidates it. EMU_NO_CAPTURE refuses
 * captures, as a driver that cannot capture. */
bool emu_capturing(void);
cudaError_t emu_record(std::function<cudaError_t()> op);
/* A capture-forbidden call: invalidates an open capture; returns the error that call gets. */
cudaError_t emu_capture_forbidden(void);

/* The first line of a launcher whose work is not a single LOOP: during a capture `call` (the
 * launcher called again with the same arguments) is recorded for the graph's launch. */
#define EMU_DEFER(call)                                                                                 \
  do {                                                                                                \
    if (emu_capturing()) return emu_record([=]() { return call; });                                   \
  } while (0)

/* A kernel launch as a host loop: honours the sticky state, then runs `body` for i < total
 * (recorded instead during a capture). */
#define LOOP(total, body)                                                                              \
  do {                                                                                                \
    int64_t t_ = (total);                                                                             \
    auto run_ = [=]() -> cudaError_t {                                                                \
      cudaError_t e_ = emu_launch_check();                                                            \
      if (e_) return e_;                                                                              \
      _Pragma("omp parallel for schedule(static)") for (int64_t i = 0; i < t_; i++) { body; }         \
      return cudaSuccess;                                                                             \
    };                                                                                                \
    return emu_capturing() ? emu_record(run_) : run_();                                               \
  } while (0)

#endif
