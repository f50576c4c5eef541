#!/usr/bin/env bash
# tests/cuda/emu/run_emu.sh: the CUDA backend's logic on the emulated module, no GPU needed:
# parity (C-built models and, with torch, PyTorch's exports), a second process served by the
# on-disk algorithm cache, injected faults, a real device OOM and a mid-run fault, and the
# open-time refusals (old driver, cc 6.1, no device, no kernel image); layer-by-layer runs inside a
# device budget (large images) equal to the CPU's; training on the emulated
# module against the CPU (train_backends), in float32 and with TF32 convolutions, with
# out-of-memory and a fault mid-step; CUDA graphs (the emulated runtime records a capture and
# replays it): inference runs with I2I_CUDA_GRAPH=1 equal the CPU, training passes replayed as
# graphs equal kernel-by-kernel launches bit for bit, and a driver that cannot capture falls back.
# "N passed, N failed".
# Usage: run_emu.sh EMU_MODULE PARITY I2I_TOOL TEST_FALLBACK WORKDIR [PYTHON [TRAIN_BACKENDS]]
set -u
emu=$1 parity=$2 tool=$3 tf=$4 work=$5 py=${6:-} tb=${7:-}
pass=0 fail=0
rm -rf "$work" && mkdir -p "$work" || exit 1
export I2I_CUDA_MODULE=$emu I2I_CUDA_ALGO_CACHE=$work/algos.txt
unset I2I_BACKEND I2I_CUDA_FAULT I2I_CUDA_PRECISION MALLOC_PERTURB_
# float32 FMA-exact training unless a run says otherwise (only training's TF32 run below): the
# emulated cuDNN then refuses any float convolution that could run on TF32
export I2I_CUDA_TF32=0

count() { # count LOG: adds the log's closing "N passed, N failed" to the totals
  local p f
  p=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$1" | tail -1)
  f=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$1" | tail -1)
  if [ -z "$p" ]; then fail=$((fail + 1)); echo "FAIL: $(basename "$1") ended without a summary"; tail -5 "$1"; return; fi
  pass=$((pass + p)); fail=$((fail + f))
  grep '^FAIL' "$1"
}
ok() { pass=$((pass + 1)); echo "PASS: $1"; }
ko() { fail=$((fail + 1)); echo "FAIL: $1"; [ -n "${2:-}" ] && echo "$2" | sed 's/^/    /'; }

"$parity" --small --sizes 67x45,256x256 --op-sizes 67x45 --seed 11 >"$work/parity.log" 2>&1
count "$work/parity.log"
echo "parity, C-built models: $(tail -1 "$work/parity.log")"

onnx_args=()
if [ -n "$py" ] && "$py" -c 'import torch, onnx' 2>/dev/null; then
  if "$py" "$(dirname "$0")/../../gpu/export_models.py" "$work/onnx" --small >"$work/export.log" 2>&1; then
    onnx_args=(--onnx "$work/onnx/resnet2_c8.onnx" --onnx "$work/onnx/unet8_c8.onnx")
    "$parity" --models none "${onnx_args[@]}" --sizes 67x45,256x256 --op-sizes 67x45 --seed 12 >"$work/parity-onnx.log" 2>&1
    count "$work/parity-onnx.log"
    echo "parity, PyTorch exports: $(tail -1 "$work/parity-onnx.log")"
  else
    ko "PyTorch export" "$(tail -5 "$work/export.log")"
  fi
else
  echo "SKIP: no torch and onnx for the PyTorch exports"
fi

"$parity" --models resnet --small --sizes 67x45 --op-sizes none --expect-no-search >"$work/second.log" 2>&1
count "$work/second.log"
echo "second process: $(grep 'algorithm search' "$work/second.log" | tail -1)"

I2I_CUDA_GRAPH=1 "$parity" --small --sizes 67x45 --op-sizes none --seed 13 --expect-graphs >"$work/graphs.log" 2>&1
count "$work/graphs.log"
echo "inference replayed as CUDA graphs: $(grep 'replayed CUDA graphs' "$work/graphs.log" | tail -1)"

for f in oom oom-once sticky; do
  "$parity" --fault $f >"$work/fault-$f.log" 2>&1
  count "$work/fault-$f.log"
done

# the tool on the emulated module: refusals at open, real out-of-memory, a fault mid-run
"$tf" fixtures "$work" || { ko "fixtures"; echo "$pass passed, $fail failed"; exit 1; }
I2I_BACKEND=cpu "$tool" translate "$work/tiny.onnx" "$work/in.npy" "$work/cpu.npy" 2>/dev/null
case_auto() { # case_auto LABEL WHY ENV...
  local label=$1 why=$2; shift 2
  if env "$@" "$tool" translate -v "$work/tiny.onnx" "$work/in.npy" "$work/out.npy" 2>"$work/err" >/dev/null \
      && grep -q "on the CPU" "$work/err" && grep -qF -- "$why" "$work/err" \
      && "$tf" compare "$work/out.npy" "$work/cpu.npy" 0 >/dev/null; then
    ok "$label: AUTO falls back with \"$why\""
  else
    ko "$label: AUTO falls back with \"$why\"" "$(cat "$work/err")"
  fi
  env "$@" "$tool" translate --backend cuda "$work/tiny.onnx" "$work/in.npy" "$work/out2.npy" 2>"$work/err" >/dev/null
  if [ $? = 1 ] && grep -qF -- "$why" "$work/err"; then ok "$label: forced CUDA fails with \"$why\""
  else ko "$label: forced CUDA fails with \"$why\"" "$(cat "$work/err")"; fi
}
case_auto "driver too old" "driver 580 or newer" EMU_DRIVER=12040
case_auto "compute capability 6.1" "needs 7.5" EMU_CC=61
case_auto "no device" "no CUDA device" EMU_NO_DEVICE=1
case_auto "no kernel image" "no code for" EMU_NO_IMAGE=1
case_auto "device out of memory (the weights do not fit)" "out of GPU memory" EMU_DEVICE_MEMORY=30000
case_auto "illegal address in the middle of a run" "illegal memory access" EMU_STICKY_AT=7
if "$tool" translate -v "$work/tiny.onnx" "$work/in.npy" "$work/out.npy" 2>"$work/err" >/dev/null \
    && grep -q "on the GPU" "$work/err" && "$tf" compare "$work/out.npy" "$work/cpu.npy" 3e-2 >/dev/null; then
  ok "i2i translate runs on the (emulated) GPU within fp16 tolerance"
else
  ko "i2i translate runs on the (emulated) GPU" "$(cat "$work/err")"
fi

# layer by layer (large images): a device budget below what the whole image needs, or a device
# too small for it, runs each convolution in bands of rows on the GPU with the whole-image
# intermediates in host memory; the result equals the CPU's, the peak stays inside the budget
layerwise() { # layerwise LABEL MODEL INPUT BUDGET_BYTES MODE [ENV...]
  local label=$1 model=$2 input=$3 budget=$4 mode=$5; shift 5
  local mem=(); [ "$budget" != 0 ] && mem=(--memory "$budget")
  I2I_BACKEND=cpu "$tool" translate --pix2pix-mode "$mode" "$model" "$input" "$work/lw-cpu.npy" 2>/dev/null
  if env "$@" "$tool" translate -v --backend cuda --pix2pix-mode "$mode" "${mem[@]}" "$model" \
      "$input" "$work/lw.npy" 2>"$work/err" >/dev/null; then
    local tiles peak
    tiles=$(sed -n 's/.* \([0-9]*\) tiles\{0,1\}, .*/\1/p' "$work/err" | tail -1)
    peak=$(sed -n 's/.*peak GPU memory \([0-9.]*\) MiB.*/\1/p' "$work/err" | tail -1)
    if grep -q "on the GPU" "$work/err" && grep -q "layer by layer" "$work/err" && [ "${tiles:-0}" -gt 1 ] &&
        "$tf" compare "$work/lw.npy" "$work/lw-cpu.npy" 1e-4 >/dev/null &&
        { [ "$budget" = 0 ] || awk -v p="$peak" -v b="$budget" 'BEGIN { exit !(p * 1048576 <= b) }'; }; then
      ok "$label: layer by layer on the GPU in $tiles bands, equal to the CPU (1e-4), peak $peak MiB"
    else
      ko "$label: layer by layer on the GPU" "$(cat "$work/err"; "$tf" compare "$work/lw.npy" "$work/lw-cpu.npy" 1e-4)"
    fi
  else
    ko "$label: layer by layer on the GPU" "$(cat "$work/err")"
  fi
}
layerwise "C-built model, a device too small for the whole image" "$work/tiny.onnx" "$work/in.npy" 0 eval EMU_DEVICE_MEMORY=60000
if [ ${#onnx_args[@]} -gt 0 ] && "$py" -c "import numpy as np
rng = np.random.default_rng(5)
for n, (h, w) in {'lw67': (67, 45), 'lw256': (256, 256)}.items():
    np.save('$work/' + n + '.npy', np.clip(rng.standard_normal((h, w, 3)) * 0.4, -1, 1).astype(np.float32))"; then
  layerwise "ResNet 67x45, 300 KiB budget" "$work/onnx/resnet2_c8.onnx" "$work/lw67.npy" 307200 eval
  layerwise "ResNet 256x256, 1 MiB budget" "$work/onnx/resnet2_c8.onnx" "$work/lw256.npy" 1048576 eval
  layerwise "U-Net 256x256 faithful (dropout masks), 3.7 MiB budget" "$work/onnx/unet8_c8.onnx" "$work/lw256.npy" 3788800 faithful
  layerwise "U-Net 67x45 eval, 3.7 MiB budget" "$work/onnx/unet8_c8.onnx" "$work/lw67.npy" 3788800 eval
fi
# a budget below the weights themselves: AUTO finishes on the CPU, forced CUDA says why
if "$tool" translate -v --memory 1000 "$work/tiny.onnx" "$work/in.npy" "$work/out.npy" 2>"$work/err" >/dev/null &&
    grep -q "on the CPU" "$work/err" && grep -q "device budget" "$work/err" &&
    "$tf" compare "$work/out.npy" "$work/cpu.npy" 0 >/dev/null; then
  ok "a budget below the weights: AUTO finishes on the CPU with the reason"
else
  ko "a budget below the weights: AUTO finishes on the CPU with the reason" "$(cat "$work/err")"
fi

if [ -n "$tb" ]; then
  "$tb" parity 5 "$work" >"$work/train.log" 2>&1
  count "$work/train.log"
  echo "training, GPU backend against the CPU: $(tail -1 "$work/train.log")"
  # TF32 convolutions, training's default (the emulated cuDNN rounds their operands as tensor
  # cores do)
  env -u I2I_CUDA_TF32 "$tb" parity 3 "$work" >"$work/train-tf32.log" 2>&1
  count "$work/train-tf32.log"
  echo "training with TF32 convolutions, GPU backend against the CPU: $(tail -1 "$work/train-tf32.log")"
  # training passes as CUDA graphs (the default) against kernel-by-kernel launches, and a driver
  # that cannot capture
  "$tb" graphs 3 >"$work/train-graphs.log" 2>&1
  count "$work/train-graphs.log"
  EMU_NO_CAPTURE=1 "$tb" graphs 2 fallback >"$work/train-graphs-fallback.log" 2>&1
  count "$work/train-graphs-fallback.log"
  echo "training passes as CUDA graphs: $(tail -1 "$work/train-graphs.log"); without capture: $(tail -1 "$work/train-graphs-fallback.log")"
  EMU_DEVICE_MEMORY=60000 "$tb" fault "out of GPU memory" >"$work/train-oom.log" 2>&1
  count "$work/train-oom.log"
  EMU_STICKY_AT=40 "$tb" fault "illegal memory access" >"$work/train-sticky.log" 2>&1
  count "$work/train-sticky.log"
  EMU_DEVICE_MEMORY=400000 "$tb" auto-cpu >"$work/train-auto.log" 2>&1
  count "$work/train-auto.log"
fi

echo "$pass passed, $fail failed"
[ $fail = 0 ]
