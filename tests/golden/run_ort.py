"""tests/golden/run_ort.py: the engine against ONNX Runtime, the golden tests' second reference.

Run by the python of tools/ort-venv (onnxruntime and numpy from PyPI). For the ResNet exports and
the eval-form U-Net of tests/fixtures/make_onnx.py: ONNX Runtime on the input padded as the engine
pads (numpy 'reflect' at the bottom and right to the size multiple and smallest side), cropped back,
against `i2i translate` on the same .npy (eval mode for the U-Net). Max abs error at most 1e-4.
A fixture marked "check": "finite" (the ResNet on a flat 1x1 image: see its note) is skipped.
Usage: run_ort.py BUILD_DIR FIXTURE_DIR WORK_DIR. Ends with "N passed, N failed".
"""
import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort

build, fx, work = sys.argv[1:4]
i2i = os.path.join(build, "converter", "i2i")
man = json.load(open(os.path.join(fx, "manifest.json")))
passed = failed = 0
os.makedirs(work, exist_ok=True)


def pad_to(x, mult, minside):
    """The engine's rule, axis by axis: numpy 'reflect' (repeated when the pad exceeds the side),
    and a side of 1 replicated."""
    h, w = x.shape[:2]
    H = max(-(-h // mult) * mult, minside)
    W = max(-(-w // mult) * mult, minside)
    x = np.pad(x, ((0, H - h), (0, 0), (0, 0)), mode="reflect" if h > 1 else "edge")
    return np.pad(x, ((0, 0), (0, W - w), (0, 0)), mode="reflect" if w > 1 else "edge")


for f in man["fixtures"]:
    m = f["model"]
    unet = m.startswith("unet")
    if (unet and ("_eval_" not in m or f["mode"] != "eval")) or (not unet and not m.startswith("resnet")):
        continue
    if f.get("check") == "finite":
        continue
    x = np.load(os.path.join(fx, f["input"])).astype(np.float32)
    mult, minside = (256, 256) if unet else (4, 8)
    xp = pad_to(x, mult, minside).transpose(2, 0, 1)[None].copy()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(os.path.join(fx, m), so, providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: xp})[0][0].transpose(1, 2, 0)[: x.shape[0], : x.shape[1]]
    out = os.path.join(work, "ort_engine.npy")
    r = subprocess.run([i2i, "translate", os.path.join(fx, m), os.path.join(fx, f["input"]), out, "--backend", "cpu",
                        "--pix2pix-mode", f["mode"]], capture_output=True, text=True)
    if r.returncode:
        ok, detail = False, r.stderr.strip()
    else:
        d = float(np.abs(np.load(out) - y).max())
        ok, detail = d <= 1e-4, "max_abs %.3g (ONNX Runtime %s)" % (d, ort.__version__)
    passed += ok
    failed += not ok
    print("%s %s %s %dx%d: %s" % ("ok  " if ok else "FAIL", m, f["mode"], f["h"], f["w"], detail), flush=True)
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
