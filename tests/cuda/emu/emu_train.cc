/* tests/cuda/emu/emu_train.cc: engine/src/cuda/train.cu compiled as host C++ for the emulated
 * module (emu.h): the real training backend's source, unchanged, linked against the host
 * emulations of the CUDA runtime and cuDNN instead of libcudart and libcudnn. */
#include "train.cu"
