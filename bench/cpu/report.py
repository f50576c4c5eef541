#!/usr/bin/python3
"""bench/cpu/report.py OUTDIR: merges torch.json, ort.json and engine.json into one table and
bench.json (the engine's median against the faster of PyTorch and ONNX Runtime; goal <= 1.0),
after the correctness gate (engine and ONNX Runtime against PyTorch on the gate input)."""
import json
import os
import sys

import numpy as np

out = sys.argv[1]
rows = []
meta = {}
for f in ("torch.json", "ort.json", "engine.json"):
    p = os.path.join(out, f)
    if os.path.exists(p):
        d = json.load(open(p))
        rows += d.pop("results")
        meta.update(d)
gate = {}
for name in ("resnet", "unet"):
    ref = np.load(os.path.join(out, "gate_torch_%s.npy" % name))
    for rt in ("engine", "ort"):
        p = os.path.join(out, "gate_%s_%s.npy" % (rt, name))
        if os.path.exists(p):
            gate["%s %s" % (rt, name)] = float(np.abs(np.load(p) - ref).max())
print("correctness gate (max abs vs PyTorch, 256x256): " + ", ".join("%s %.2g" % kv for kv in gate.items()))
flops = {("resnet", 256): 99.1e9, ("resnet", 512): 396.4e9, ("unet", 256): 12.1e9}
table = []
keys = sorted({(r["model"], r["size"], r["threads"]) for r in rows})
print("\n%-8s %5s %3s %10s %10s %10s %8s %10s" % ("model", "size", "thr", "i2i (s)", "pytorch", "onnxrt", "ratio", "i2i GF/s"))
for k in keys:
    get = {r["runtime"]: r["median"] for r in rows if (r["model"], r["size"], r["threads"]) == k}
    e, p, o = get.get("i2i"), get.get("pytorch"), get.get("onnxruntime")
    best = min(v for v in (p, o) if v) if (p or o) else None
    ratio = e / best if e and best else None
    table.append({"model": k[0], "size": k[1], "threads": k[2], "i2i": e, "pytorch": p, "onnxruntime": o,
                  "ratio_vs_best": ratio})
    fmt = lambda v: "%10.3f" % v if v else "%10s" % "-"
    print("%-8s %5d %3d %s %s %s %8s %10.1f" % (k[0], k[1], k[2], fmt(e), fmt(p), fmt(o),
                                              "%.2f" % ratio if ratio else "-", flops[(k[0], k[1])] / e / 1e9 if e else 0))
json.dump({"meta": meta, "gate_max_abs": gate, "table": table, "runs": rows}, open(os.path.join(out, "bench.json"), "w"),
          indent=1)
print("\nwritten %s" % os.path.join(out, "bench.json"))
