#!/usr/bin/python3
"""bench/cpu/torch_bench.py OUTDIR THREADS...: exports the benchmark models and times PyTorch CPU.

Builds the mmagic replica (tests/fixtures/mmagic_replica.py): ResNet generator (9 blocks, 64
channels) and U-Net generator (8 downsamplings) with N(0, 0.02) weights, exports them to ONNX
(opset 17; the U-Net in eval form, which every runtime runs the same way), writes a gate input
and PyTorch's output for it, then times PyTorch (Debian's torch 1.13) with torch.no_grad() for each
thread count: median of 5 runs at 256x256, 3 at 512x512, after one warm-up. Writes torch.json.
"""
import json
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "tests", "fixtures"))
import mmagic_replica as mr  # noqa: E402

out = sys.argv[1]
threads = [int(t) for t in sys.argv[2:]] or [1, 2]
os.makedirs(out, exist_ok=True)
models = {"resnet": mr.build_resnet(seed=101).eval(), "unet": mr.build_unet(seed=102).eval()}
mr.randomize_biases(models["resnet"], 101)
for name, m in models.items():
    path = os.path.join(out, name + ".onnx")
    if not os.path.exists(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, torch.zeros(1, 3, 256, 256), path, opset_version=17, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "n", 2: "h", 3: "w"},
                                                                     "output": {0: "n", 2: "h", 3: "w"}})
rng = np.random.default_rng(0)
gate = (rng.random((256, 256, 3), dtype=np.float32) * 2 - 1).astype(np.float32)
np.save(os.path.join(out, "gate_in.npy"), gate)
with torch.no_grad():
    x = torch.from_numpy(gate.transpose(2, 0, 1)[None].copy())
    for name, m in models.items():
        np.save(os.path.join(out, "gate_torch_%s.npy" % name), m(x)[0].numpy().transpose(1, 2, 0))
cases = [("resnet", 256, 5), ("resnet", 512, 3), ("unet", 256, 5)]
res = []
for t in threads:
    torch.set_num_threads(t)
    for name, size, runs in cases:
        m = models[name]
        x = torch.from_numpy(np.sin(np.arange(3 * size * size, dtype=np.float32) * 0.001).reshape(1, 3, size, size))
        with torch.no_grad():
            m(x)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                m(x)
                times.append(time.perf_counter() - t0)
        res.append({"runtime": "pytorch", "model": name, "size": size, "threads": t, "times": times,
                    "median": statistics.median(times)})
        print("pytorch %s %d threads=%d: %.3f s" % (name, size, t, statistics.median(times)), flush=True)
json.dump({"torch": torch.__version__, "results": res}, open(os.path.join(out, "torch.json"), "w"), indent=1)
