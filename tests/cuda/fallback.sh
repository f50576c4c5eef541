#!/usr/bin/env bash
# tests/cuda/fallback.sh: the CUDA fallbacks end to end through `i2i translate`, and ldd of the
# tool and the plug-in (no CUDA library). Module missing / refusing to open / out of memory /
# sticky (fake module) / real module with a broken libcudnn or libcudart first on the library
# path: AUTO ends on the CPU with the reason and the CPU's output, forced CUDA exits 1 with it.
# Usage: fallback.sh I2I_TOOL TEST_FALLBACK FAKE_MODULE REAL_MODULE|- PLUGIN|- WORKDIR
set -u
tool=$1 tf=$2 fake=$3 real=$4 plugin=$5 work=$6
pass=0 fail=0
rm -rf "$work" && mkdir -p "$work" || exit 1
export I2I_CUDA_ALGO_CACHE=off
unset I2I_BACKEND I2I_CUDA_MODULE I2I_FAKE_CUDA I2I_DEBUG

ok() { pass=$((pass + 1)); echo "PASS: $1"; }
ko() { fail=$((fail + 1)); echo "FAIL: $1"; [ -n "${2:-}" ] && echo "$2" | sed 's/^/    /'; }

"$tf" fixtures "$work" || { echo "cannot write fixtures"; echo "0 passed, 1 failed"; exit 1; }
I2I_BACKEND=cpu "$tool" translate "$work/tiny.onnx" "$work/in.npy" "$work/cpu.npy" 2>"$work/err" \
  && ok "CPU reference run" || ko "CPU reference run" "$(cat "$work/err")"

# auto_case LABEL WHY ENV...: AUTO falls back with WHY in its message and equals the CPU result.
auto_case() {
  local label=$1 why=$2; shift 2
  rm -f "$work/out.npy"
  if env "$@" "$tool" translate -v "$work/tiny.onnx" "$work/in.npy" "$work/out.npy" 2>"$work/err" >/dev/null \
      && grep -q "on the CPU" "$work/err" && grep -qF -- "$why" "$work/err" \
      && "$tf" compare "$work/out.npy" "$work/cpu.npy" 0 >/dev/null; then
    ok "$label: AUTO falls back to the CPU with its reason and the CPU's result"
  else
    ko "$label: AUTO falls back to the CPU with its reason and the CPU's result" "$(cat "$work/err")"
  fi
}

# forced_case LABEL WHY ENV...: --backend cuda exits 1 with WHY in its message, no crash.
forced_case() {
  local label=$1 why=$2; shift 2
  env "$@" "$tool" translate --backend cuda "$work/tiny.onnx" "$work/in.npy" "$work/out2.npy" 2>"$work/err" >/dev/null
  local rc=$?
  if [ $rc = 1 ] && grep -qF -- "$why" "$work/err"; then
    ok "$label: forced CUDA fails with its reason (exit 1)"
  else
    ko "$label: forced CUDA fails with its reason (exit $rc)" "$(cat "$work/err")"
  fi
}

auto_case "module missing" "not installed" I2I_CUDA_MODULE=/nonexistent/libi2i-cuda.so
forced_case "module missing" "not installed" I2I_CUDA_MODULE=/nonexistent/libi2i-cuda.so
auto_case "module refuses to open" "fake: no CUDA device" I2I_CUDA_MODULE="$fake" I2I_FAKE_CUDA=open-fail
forced_case "module refuses to open" "fake: no CUDA device" I2I_CUDA_MODULE="$fake" I2I_FAKE_CUDA=open-fail
auto_case "device out of memory" "out of GPU memory" I2I_CUDA_MODULE="$fake" I2I_FAKE_CUDA=oom
forced_case "device out of memory" "out of GPU memory" I2I_CUDA_MODULE="$fake" I2I_FAKE_CUDA=oom
auto_case "sticky error" "illegal memory access" I2I_CUDA_MODULE="$fake" I2I_FAKE_CUDA=sticky
forced_case "sticky error" "illegal memory access" I2I_CUDA_MODULE="$fake" I2I_FAKE_CUDA=sticky

if [ "$real" != "-" ] && [ -f "$real" ]; then
  # The real module with a broken library first on the search path: g_module_open must fail
  # (the module binds every symbol at load), the run must not crash.
  mkdir -p "$work/mod" "$work/nocudnn" "$work/nocudart"
  cp "$real" "$work/mod/libi2i-cuda.so"
  echo "not a library" >"$work/nocudnn/libcudnn.so.9"
  echo "not a library" >"$work/nocudart/libcudart.so.13"
  for lib in nocudnn nocudart; do
    name=$([ $lib = nocudnn ] && echo libcudnn || echo libcudart)
    auto_case "$name unusable" "$name" I2I_CUDA_MODULE="$work/mod/libi2i-cuda.so" LD_LIBRARY_PATH="$work/$lib"
    forced_case "$name unusable" "$name" I2I_CUDA_MODULE="$work/mod/libi2i-cuda.so" LD_LIBRARY_PATH="$work/$lib"
  done
  # The real module as built: without a driver or GPU it must refuse with a reason.
  env I2I_CUDA_MODULE="$real" "$tool" translate -v "$work/tiny.onnx" "$work/in.npy" "$work/out.npy" 2>"$work/err" >/dev/null
  rc=$?
  if grep -q "on the GPU" "$work/err"; then
    "$tf" compare "$work/out.npy" "$work/cpu.npy" 3e-2 >/dev/null \
      && ok "real module: runs on the GPU within fp16 tolerance" || ko "real module: GPU result differs" "$(cat "$work/err")"
  elif [ $rc = 0 ] && grep -q "no usable NVIDIA GPU" "$work/err" && "$tf" compare "$work/out.npy" "$work/cpu.npy" 0 >/dev/null; then
    ok "real module without a usable GPU: AUTO falls back ($(grep -o 'no usable NVIDIA GPU ([^)]*)' "$work/err" | head -1))"
  else
    ko "real module: AUTO neither ran on the GPU nor fell back cleanly (exit $rc)" "$(cat "$work/err")"
  fi
else
  echo "SKIP: the real CUDA module is not built"
fi

# link hygiene: neither the tool nor the plug-in links a CUDA library
for bin in "$tool" "$plugin"; do
  [ "$bin" = "-" ] && continue
  if [ ! -f "$bin" ]; then echo "SKIP: $bin not built"; continue; fi
  libs=$(ldd "$bin" 2>&1)
  if echo "$libs" | grep -qiE 'libcud|libnvrtc|libcublas|libnvidia|libnvjitlink'; then
    ko "ldd $(basename "$bin"): links a CUDA library" "$(echo "$libs" | grep -iE 'cud|nv')"
  else
    ok "ldd $(basename "$(dirname "$bin")")/$(basename "$bin"): no CUDA library"
  fi
done

echo "$pass passed, $fail failed"
[ $fail = 0 ]
