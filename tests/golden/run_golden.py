#!/usr/bin/python3
"""tests/golden/run_golden.py: the engine's CPU output against PyTorch, through the library and
through `i2i translate`.

Makes the fixtures with tests/fixtures/make_onnx.py (torch 1.13's exports of the mmagic replica and
torch reference outputs), then for every fixture: the folded graph's op counts equal the export's
compute ops; `golden run` (library) and `i2i translate IN.npy OUT.npy` (tool) match the reference
within its tolerance (a fixture marked "check": "finite" is one no implementation can match: only
that it runs and gives finite values in [-1,1]); philox.py passes Random123's known-answer vectors;
the C Philox equals philox.py on a million counters; the engine's dropout_keep equals philox.py's
mask for several seeds, ordinals, batch indices, steps, ratios and more than 255 channels;
faithful-mode seeds 0 and 1 differ; every Dropout layer drops 0.5 +- 0.02 of its units.
The fixtures are made again when the fixture scripts change (a hash in WORK_DIR/onnx/stamp.txt).

Usage: run_golden.py BUILD_DIR SOURCE_DIR WORK_DIR [--small-only]. Ends with "N passed, N failed".
"""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np

build, src, work = sys.argv[1:4]
small_only = "--small-only" in sys.argv
golden = os.path.join(build, "tests", "golden", "golden")
i2i = os.path.join(build, "converter", "i2i")
fixtures = os.path.join(src, "tests", "fixtures")
passed = failed = 0


def check(ok, name, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print("%s %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail else ""), flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


fx = os.path.join(work, "onnx")
stamp = os.path.join(fx, "stamp.txt")
args = ["/usr/bin/python3", os.path.join(fixtures, "make_onnx.py"), fx, "--no-verify"]
if small_only:
    args.append("--small-only")
digest = hashlib.sha256(" ".join(args[2:]).encode())
for script in ("make_onnx.py", "fixture_common.py", "mmagic_replica.py", "philox.py", "onnx_runner.py"):
    digest.update(open(os.path.join(fixtures, script), "rb").read())
digest = digest.hexdigest()
if not os.path.exists(os.path.join(fx, "manifest.json")) or not os.path.exists(stamp) or \
        open(stamp).read().strip() != digest:
    r = run(args)
    if r.returncode:
        print(r.stdout[-2000:], r.stderr[-2000:])
        check(False, "make_onnx.py")
        print("%d passed, %d failed" % (passed, failed))
        sys.exit(1)
    with open(stamp, "w") as f:
        f.write(digest + "\n")
man = json.load(open(os.path.join(fx, "manifest.json")))
counts = json.load(open(os.path.join(fx, "op_counts.json")))

# 1. folded graphs: the compute ops survive, the exporter's shape chains are folded away
for model, info in sorted(counts.items()):
    r = run([golden, "ops", os.path.join(fx, model)])
    got = {}
    for line in r.stdout.split():
        k, _, v = line.partition("=")
        got[k] = int(v)
    want = {k: v for k, v in info["compute"].items() if v}
    # an Identity is no compute op: the engine aliases it away, or copies where it makes the output
    ours = {k: v for k, v in got.items() if k not in ("folded", "multiple", "family", "Identity")}
    check(r.returncode == 0 and ours == want, "ops %s" % model, "%s vs %s" % (ours, want) if ours != want else
          "%d folded" % got.get("folded", -1))

# 2. every fixture through the library and through the tool
for f in man["fixtures"]:
    model = os.path.join(fx, f["model"])
    inp = os.path.join(fx, f["input"])
    ref = os.path.join(fx, f["output"])
    seed = str(f["seed"] or 0)
    mode = f["mode"]
    name = "%s %s %dx%d%s" % (f["model"], mode, f["h"], f["w"], (" seed " + seed) if f["seed"] is not None else "")
    finite_only = f.get("check") == "finite"   # the reason is in the fixture's note (make_onnx.py)
    if finite_only:
        name += " (runs, finite: %s)" % f["note"]
    r = run([golden, "run", model, inp, ref, mode, seed, "inf" if finite_only else str(f["tolerance"])])
    check(r.returncode == 0, "library " + name, r.stdout.strip())
    out = os.path.join(work, "out.npy")
    r = run([i2i, "translate", model, inp, out, "--backend", "cpu", "--pix2pix-mode", mode, "--seed", seed])
    if r.returncode:
        check(False, "tool " + name, r.stderr.strip())
        continue
    y, want = np.load(out).astype(np.float64), np.load(ref)
    if y.shape != want.shape:
        check(False, "tool " + name, "output %s, reference %s" % (y.shape, want.shape))
    elif finite_only:
        check(bool(np.isfinite(y).all() and np.abs(y).max() <= 1), "tool " + name,
              "max |y| %.3g, max_abs vs torch float32 %.3g (float64 torch: %.3g)" % (
                  np.abs(y).max(), np.abs(y - want).max(), f.get("torch_f32_vs_f64_max_abs", -1)))
    else:
        d = float(np.abs(y - want).max())
        check(d <= f["tolerance"], "tool " + name, "max_abs %.3g" % d)

# 3. faithful mode: Philox known answers, C == python (generator and mask packing), seeds differ,
# the drop rate
r = run(["/usr/bin/python3", os.path.join(fixtures, "philox.py"), "--kat"])
n_ok = r.stdout.count("ok   ")
check(r.returncode == 0 and n_ok >= 3 and "FAIL" not in r.stdout, "philox.py Random123 known answers",
      "%d vectors ok" % n_ok if r.returncode == 0 else (r.stdout + r.stderr).strip())
dump = os.path.join(work, "philox.bin")
r = run(["/usr/bin/python3", os.path.join(fixtures, "philox.py"), "--dump", dump, "--n", "1000000", "--seed",
         "0x123456789abcdef0"])
r2 = run([golden, "philox", dump, "1000000", "0x123456789abcdef0"])
check(r.returncode == 0 and r2.returncode == 0, "philox C == python on 1e6 counters", r2.stdout.strip())
# the counter packing of dropout_keep (x, y, channel | batch << 16, ordinal | step << 8) against
# philox.py's mask, which the faithful references use: batch indices up to 2, channels past 255,
# ordinals up to 255, steps up to 2^24 - 1, x up to 999, a seed with a high word, two ratios
# (philox.py imported here rather than run once per case: its --mask-dump writes the same bytes)
sys.path.insert(0, fixtures)
import philox  # noqa: E402

mdump = os.path.join(work, "mask.bin")
for seed, ordinal, shape, step, ratio in ((0, 0, (1, 300, 4, 5), 0, 0.5),
                                          (0x123456789abcdef0, 1, (3, 260, 3, 3), 0, 0.5),
                                          (7, 2, (2, 257, 2, 7), 1, 0.5),
                                          (1, 255, (2, 8, 3, 4), 123456, 0.5),
                                          (2, 5, (1, 4, 2, 1000), 0xFFFFFF, 0.5),
                                          (3, 3, (2, 300, 4, 4), 9, 0.3)):
    with open(mdump, "wb") as f:
        f.write(philox.mask(seed, ordinal, *shape, ratio=ratio, step=step).astype("<f4").tobytes())
    shp = ",".join(map(str, shape))
    r = run([golden, "mask", mdump, str(seed), str(ordinal), shp, str(step), str(ratio)])
    check(r.returncode == 0, "dropout mask C == python: seed %#x ordinal %d N,C,H,W %s step %d ratio %g" % (
        seed, ordinal, shp, step, ratio), (r.stdout + r.stderr).strip())
drop_models = sorted(m for m in counts if "traindrop" in m)
faith = [f for f in man["fixtures"] if f["mode"] == "faithful"]
by_key = {}
for f in faith:
    by_key.setdefault((f["model"], f["input"]), {})[f["seed"]] = os.path.join(fx, f["output"])
for (model, inp), seeds in sorted(by_key.items()):
    if 0 in seeds and 1 in seeds:
        d = float(np.abs(np.load(seeds[0]) - np.load(seeds[1])).max())
        check(d > 1e-3, "seeds 0 and 1 differ: %s %s" % (model, inp), "max diff %.3g" % d)
for model in drop_models[:1]:
    for seed in ("0", "1"):
        r = run([golden, "dropfrac", os.path.join(fx, model), "1024", seed])
        check(r.returncode == 0, "drop rate 0.5 +- 0.02: %s seed %s" % (model, seed), " / ".join(r.stdout.strip().split("\n")))

# 4. tiled equals whole: budgets forcing 1, about 4 and many tiles, both families, faithful dropout;
# an odd size large enough that its convolutions still split (at 67x45 the direct first layer
# leaves only chunks smaller than the floor of one small chunk)
for model, inp, mode in (("resnet2_c8_op17.onnx", "input_256x256.npy", "deterministic"),
                         ("resnet2_c8_op17.onnx", "input_151x113.npy", "deterministic"),
                         ("unet8_c8_traindrop_op17.onnx", "input_300x200.npy", "faithful")):
    r = run([golden, "tiles", os.path.join(fx, model), os.path.join(fx, inp), mode])
    check(r.returncode == 0, "tiled equals whole: %s %s %s" % (model, inp, mode), r.stdout.strip())

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
