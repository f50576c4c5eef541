"""bench/cpu/ort_bench.py OUTDIR THREADS...: times ONNX Runtime CPU on the benchmark models.

Run by tools/ort-venv's python. Same models, sizes, thread counts and run counts as
torch_bench.py (median of 5 at 256x256, 3 at 512x512, after one warm-up); also writes ONNX
Runtime's output for the gate input. Writes ort.json.
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

out = sys.argv[1]
threads = [int(t) for t in sys.argv[2:]] or [1, 2]
gate = np.load(os.path.join(out, "gate_in.npy")).transpose(2, 0, 1)[None].copy()
cases = [("resnet", 256, 5), ("resnet", 512, 3), ("unet", 256, 5)]
res = []
for t in threads:
    sessions = {}
    for name in ("resnet", "unet"):
        so = ort.SessionOptions()
        so.intra_op_num_threads = t
        so.inter_op_num_threads = 1
        sessions[name] = ort.InferenceSession(os.path.join(out, name + ".onnx"), so, providers=["CPUExecutionProvider"])
        if t == threads[0]:
            y = sessions[name].run(None, {"input": gate})[0][0].transpose(1, 2, 0)
            np.save(os.path.join(out, "gate_ort_%s.npy" % name), y)
    for name, size, runs in cases:
        s = sessions[name]
        x = np.sin(np.arange(3 * size * size, dtype=np.float32) * 0.001).reshape(1, 3, size, size)
        s.run(None, {"input": x})
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            s.run(None, {"input": x})
            times.append(time.perf_counter() - t0)
        res.append({"runtime": "onnxruntime", "model": name, "size": size, "threads": t, "times": times,
                    "median": statistics.median(times)})
        print("onnxruntime %s %d threads=%d: %.3f s" % (name, size, t, statistics.median(times)), flush=True)
json.dump({"onnxruntime": ort.__version__, "results": res}, open(os.path.join(out, "ort.json"), "w"), indent=1)
