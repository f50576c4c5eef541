#!/usr/bin/python3
"""tests/converter/run_convert.py: `i2i convert` and `i2i inspect` on PyTorch checkpoints.

Makes checkpoints in the exact mmagic / mmediting / original-authors layouts with
tests/fixtures/make_checkpoints.py (Debian's torch), converts each, and checks: every file written
passes onnx.checker's full check; every generator's output on an RGB image equals the torch
module's on the BGR image (or RGB for RGB files) within 1e-4, Pix2Pix in deterministic, eval and
faithful modes; every discriminator, run by the fixtures' ONNX interpreter, equals torch's; and
hostile or broken files (pickle payloads in the weights and in meta, bad storages, sizes and
strides, a zip entry outside the file, truncation, an unknown architecture, an empty file, a
directory, an old layout with no known colour order) are refused, or kept inert, with a message;
missing, unexpected and mis-shaped keys (mmagic and original-authors layouts) are refused with
nothing written and the key named; a broken I2I_MANIFEST makes convert and inspect warn (file and
problem named) and go on with the built-in manifest.

Usage: run_convert.py BUILD_DIR SOURCE_DIR WORK_DIR [--full]. Ends with "N passed, N failed".
"""
import collections
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import onnx
import torch

build, src, work = sys.argv[1:4]
full = "--full" in sys.argv
i2i = os.path.join(build, "converter", "i2i")
fixtures = os.path.join(src, "tests", "fixtures")
sys.path.insert(0, fixtures)
import onnx_runner  # noqa: E402

passed = failed = 0


def check(ok, name, detail=""):
    global passed, failed
    passed += bool(ok)
    failed += not ok
    print("%s %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail else ""), flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def convert(path, outdir, *extra):
    """Runs i2i convert; returns (CompletedProcess, {key prefix: written path})."""
    if os.path.exists(outdir):
        shutil.rmtree(outdir)
    r = run([i2i, "convert", path, "-o", outdir] + list(extra))
    written = {}
    for line in r.stdout.splitlines():
        m = re.match(r"(\S+\.onnx) <- (.+?): ", line)
        if m:
            written[m.group(2)] = m.group(1)
    return r, written


ck = os.path.join(work, "ckpt")
if not os.path.exists(os.path.join(ck, "checkpoints.json")):
    args = ["/usr/bin/python3", os.path.join(fixtures, "make_checkpoints.py"), ck, "--no-verify"]
    if full:
        args.append("--full")
    r = run(args)
    if r.returncode:
        print(r.stdout[-3000:], r.stderr[-3000:])
        check(False, "make_checkpoints.py")
        print("%d passed, %d failed" % (passed, failed))
        sys.exit(1)
man = json.load(open(os.path.join(ck, "checkpoints.json")))


def key_of(prefix):
    p = prefix[len("module."):] if prefix.startswith("module.") else prefix
    return p.rstrip(".") or "(top level)"


# ---- every checkpoint: convert, checker, numbers ----------------------------------------------
for c in man["checkpoints"]:
    path = os.path.join(ck, c["file"])
    name = c["file"]
    out = os.path.join(work, "out", re.sub(r"[^A-Za-z0-9_.-]", "_", name))
    r, written = convert(path, out)
    if not c.get("name_tells_order", True) and c["layout"] != "junyanz":
        check(r.returncode == 1 and "--channel-order" in r.stderr, "refuses an unknown colour order: " + name,
              r.stderr.strip()[:200])
        r, written = convert(path, out, "--channel-order", c["channel_order"])
    if r.returncode:
        check(False, "convert " + name, r.stderr.strip())
        continue
    nets = c["generators"] + c.get("discriminators", [])
    check(len(written) == len(nets), "convert %s: %d networks" % (name, len(written)), " ".join(sorted(written)))
    for f in set(written.values()):
        try:
            onnx.checker.check_model(onnx.load(f), full_check=True)
            check(True, "onnx.checker full: " + os.path.basename(f))
        except Exception as e:  # noqa: BLE001
            check(False, "onnx.checker full: " + f, str(e)[:300])
    for g in c["generators"]:
        f = written.get(key_of(g["key_prefix"]))
        if not f:
            check(False, "%s %s written" % (name, g["key_prefix"]))
            continue
        for ref in g["references"]:
            o = os.path.join(work, "o.npy")
            mode, seed = ref["mode"], str(ref["seed"] or 0)
            rr = run([i2i, "translate", f, os.path.join(ck, ref["input"]), o, "--backend", "cpu",
                      "--pix2pix-mode", mode, "--seed", seed])
            if rr.returncode:
                check(False, "%s %s %s" % (name, g["key_prefix"], mode), rr.stderr.strip())
                continue
            d = float(np.abs(np.load(o).astype(np.float64) - np.load(os.path.join(ck, ref["output"]))).max())
            check(d <= ref["tolerance"], "%s %s %s" % (os.path.basename(f), mode, ref["input"]), "max_abs %.3g" % d)
    for dsc in c.get("discriminators", []):
        f = written.get(key_of(dsc["key_prefix"]))
        if not f:
            check(False, "%s %s written" % (name, dsc["key_prefix"]))
            continue
        for ref in dsc["references"]:
            x = np.load(os.path.join(ck, ref["input"])).astype(np.float32)
            x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
            y = onnx_runner.run(onnx.load(f), x, mode="deterministic")
            d = float(np.abs(y[0, 0] - np.load(os.path.join(ck, ref["output"]))).max())
            check(d <= ref["tolerance"], "%s (ONNX interpreter) %s" % (os.path.basename(f), ref["input"]), "max_abs %.3g" % d)

# ---- metadata of a published-name file ---------------------------------------------------------
pub = [c for c in man["checkpoints"] if "summer2winter_convert-bgr_20210902" in c["file"]]
if pub:
    manifest = open(os.path.join(src, "weights", "manifest")).read()
    fake = manifest.replace("fcf08dc1", pub[0]["file"].rsplit("-", 1)[1][:-4])
    mf = os.path.join(work, "manifest")
    open(mf, "w").write(fake)
    out = os.path.join(work, "out", "published")
    env = dict(os.environ, I2I_MANIFEST=mf)
    shutil.rmtree(out, ignore_errors=True)
    r = run([i2i, "convert", os.path.join(ck, pub[0]["file"]), "-o", out], env=env)
    files = sorted(os.listdir(out)) if os.path.isdir(out) else []
    check(files == ["summer2winter.D.onnx", "summer2winter.onnx", "winter2summer.D.onnx", "winter2summer.onnx"],
          "published file: task names from the manifest", " ".join(files) + r.stderr)
    if "winter2summer.onnx" in files:
        meta = {p.key: p.value for p in onnx.load(os.path.join(out, "winter2summer.onnx")).metadata_props}
        want = {"i2i.family": "resnet", "i2i.task": "winter2summer", "i2i.menu_label": "Winter to Summer",
                "i2i.source_domain": "winter", "i2i.target_domain": "summer", "i2i.channel_order": "rgb",
                "i2i.source_channel_order": "bgr", "i2i.size_multiple": "4", "i2i.variant": "standard",
                "i2i.source_checkpoint": pub[0]["file"], "i2i.value_range": "-1,1"}
        bad = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
        check(not bad, "published file: metadata", str(bad))
    check("warning" not in r.stderr, "a sound I2I_MANIFEST: no warning", r.stderr.strip()[:300])

# ---- task names and domains of files outside the manifest --------------------------------------
def meta_of(path):
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def names_and_domains(path, extra, want, label):
    out = os.path.join(work, "out", "domains_" + label)
    shutil.rmtree(out, ignore_errors=True)
    r = run([i2i, "convert", path, "-o", out] + extra)
    got = {}
    for task in want:
        f = os.path.join(out, task + ".onnx")
        if os.path.exists(f):
            m = meta_of(f)
            got[task] = (m.get("i2i.task"), m.get("i2i.source_domain"), m.get("i2i.target_domain"))
    exp = {t: (t, s_, d) for t, (s_, d) in want.items()}
    check(r.returncode == 0 and got == exp, label + ": task names and source/target domains",
          "got %s, want %s %s" % (got, exp, r.stderr.strip()[:200]))


old_ab = [c for c in man["checkpoints"] if c["file"] == "iter_266800.pth"]
if old_ab:
    # an a/b-layout file with no name to go by: --domains names both directions
    names_and_domains(os.path.join(ck, "iter_266800.pth"), ["--channel-order", "rgb", "--domains", "horse,zebra"],
                      {"horse2zebra": ("horse", "zebra"), "zebra2horse": ("zebra", "horse")}, "a/b layout with --domains")
if pub:
    # a user's own mmagic run (a name the manifest does not know): the domains come from the keys
    own = os.path.join(work, "my_run.pth")
    shutil.copy(os.path.join(ck, pub[0]["file"]), own)
    names_and_domains(own, ["--channel-order", "rgb"],
                      {"summer2winter": ("summer", "winter"), "winter2summer": ("winter", "summer")},
                      "own mmagic checkpoint")

# ---- a broken I2I_MANIFEST: convert and inspect warn, naming the file and the problem, and go on
# with the built-in manifest (the file below carries a published name the built-in one knows) ---
if pub:
    pd = os.path.join(work, "published_name")
    os.makedirs(pd, exist_ok=True)
    pp = os.path.join(pd, "cyclegan_lsgan_resnet_in_1x1_246200_summer2winter_convert-bgr_20210902_165932-fcf08dc1.pth")
    if os.path.lexists(pp):
        os.remove(pp)
    os.symlink(os.path.abspath(os.path.join(ck, pub[0]["file"])), pp)
    broken = os.path.join(work, "broken.manifest")
    open(broken, "w").write(open(os.path.join(src, "weights", "manifest")).read()
                            .replace("sha256=fcf08dc1", "sha256=fcf08dc"))
    notext = os.path.join(work, "not-a-key-file.manifest")
    open(notext, "w").write("this is not a key file\n")
    for label, mf, why in (("a 7-digit sha256", broken, r"\[checkpoint cyclegan-summer2winter\].*sha256 'fcf08dc' is not 8 hex digits"),
                           ("a missing file", os.path.join(work, "no-such.manifest"), r"No such file|[Ff]ailed to open"),
                           ("not a key file", notext, r"\S")):
        env = dict(os.environ, I2I_MANIFEST=mf)
        warning = r"warning: manifest '%s' \(I2I_MANIFEST\): .*(%s).*using the built-in manifest" % (re.escape(mf), why)
        out = os.path.join(work, "out", "broken_manifest")
        shutil.rmtree(out, ignore_errors=True)
        r = run([i2i, "convert", pp, "-o", out], env=env)
        files = sorted(os.listdir(out)) if os.path.isdir(out) else []
        label_meta = meta_of(os.path.join(out, "winter2summer.onnx")).get("i2i.menu_label") if "winter2summer.onnx" in files else None
        check(r.returncode == 0 and re.search("i2i convert: " + warning, r.stderr) is not None and
              "(from the manifest)" in r.stdout and label_meta == "Winter to Summer",
              "I2I_MANIFEST with %s: convert warns and uses the built-in manifest" % label,
              "rc %d, label %s: %s" % (r.returncode, label_meta, r.stderr.strip()[:300]))
        ins = run([i2i, "inspect", "--brief", pp], env=env)
        check(ins.returncode == 0 and re.search("i2i inspect: " + warning, ins.stderr) is not None and
              "published:   yes" in ins.stdout, "I2I_MANIFEST with %s: inspect warns and uses the built-in manifest" % label,
              ins.stderr.strip()[:300])

# ---- hostile and broken files ------------------------------------------------------------------


class Storage:
    def __init__(self, key, data, kind="FloatStorage"):
        self.key, self.data, self.kind = key, data, kind


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class Payload:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            n = len(obj.data) // 4
            return ("storage", getattr(torch, obj.kind), obj.key, "cpu", n)
        return None


def write_ckpt(path, obj, storages):
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        for s in storages:
            z.writestr("archive/data/%s" % s.key, s.data)
        z.writestr("archive/version", "3\n")


def bad(name, path, want, *extra, expect_ok=False):
    out = os.path.join(work, "out", "bad_" + name)
    r, written = convert(path, out, *extra)
    made = os.listdir(out) if os.path.isdir(out) else []
    if expect_ok:
        check(r.returncode == 0, name, r.stderr.strip())
    else:
        check(r.returncode == 1 and not made and re.search(want, r.stderr) is not None, name,
              (r.stderr.strip() or "(no message)")[:260] + ("; wrote %s" % made if made else ""))
    return r


hd = os.path.join(work, "hostile")
os.makedirs(hd, exist_ok=True)
marker = os.path.join(hd, "MARKER")
if os.path.exists(marker):
    os.remove(marker)
w = Storage("0", np.zeros(16, np.float32).tobytes())
good_t = Tensor(w, 0, (4, 4), (4, 1))
for label, fn, arg in (("os.system", os.system, "touch " + marker), ("posix.system", __import__("posix").system, "touch " + marker),
                       ("builtins.eval", eval, "__import__('os').system('touch %s')" % marker)):
    p = os.path.join(hd, "payload_state_%s.pth" % label)
    sd = collections.OrderedDict([("model.0.conv.weight", good_t), ("evil", Payload(fn, arg))])
    write_ckpt(p, {"meta": {"x": 1}, "state_dict": sd}, [w])
    glob = {"os.system": "posix system|os system", "posix.system": "posix system", "builtins.eval": "builtins eval|__builtin__ eval"}[label]
    bad("%s REDUCE inside state_dict" % label, p, glob.replace(" ", "[ .]"), "--channel-order", "rgb")
    check(not os.path.exists(marker), "%s in state_dict: nothing executed" % label)
    # inside meta: the weights still convert; inspect names the global
    p2 = os.path.join(hd, "payload_meta_%s.pth" % label)
    src_ck = [c for c in man["checkpoints"] if c["layout"] == "junyanz" and c["file"].endswith("horse2zebra.pth")][0]
    sd2 = torch.load(os.path.join(ck, src_ck["file"]))
    torch.save({"meta": {"hook": Payload(fn, arg)}, "state_dict": sd2}, p2)
    if os.path.exists(marker):
        os.remove(marker)  # torch.save itself does not call it; keep the check honest
    r = bad("%s REDUCE inside meta converts" % label, p2, "", "--channel-order", "rgb", expect_ok=True)
    ins = run([i2i, "inspect", "--brief", p2])
    g = "eval" if label == "builtins.eval" else "posix.system"
    check(ins.returncode == 0 and g in ins.stdout and "never called" in ins.stdout, "%s in meta: inspect names it" % label,
          [l for l in ins.stdout.splitlines() if "inert" in l or "globals" in l].__str__()[:300])
    check(not os.path.exists(marker), "%s in meta: nothing executed" % label)

cases = {
    "storage smaller than its tensor": ((4, 4), (4, 1), 0, 10, r"needs|holds|storage"),
    "negative size": ((-1, 4), (4, 1), 0, 16, r"negative|size"),
    "negative stride": ((4, 4), (-4, 1), 0, 16, r"negative|stride"),
    "overflowing size": ((2 ** 62, 4), (4, 1), 0, 16, r"overflow|too large|size|exceeds"),
    "overflowing stride": ((4, 4), (2 ** 62, 1), 0, 16, r"overflow|too large|stride|exceeds"),
}
for label, (size, stride, off, numel, want) in cases.items():
    s = Storage("0", np.zeros(numel, np.float32).tobytes())
    p = os.path.join(hd, label.replace(" ", "_") + ".pth")
    write_ckpt(p, collections.OrderedDict([("model.0.conv.weight", Tensor(s, off, size, stride))]), [s])
    bad(label, p, want, "--channel-order", "rgb")

# a zip entry pointing outside the file
okp = os.path.join(ck, [c for c in man["checkpoints"] if c["format"] == "zip" and c["layout"] == "junyanz"][0]["file"])
data = bytearray(open(okp, "rb").read())
cd = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 1)
data[cd + 42:cd + 46] = (len(data) + 1000).to_bytes(4, "little")
p = os.path.join(hd, "zip_outside.pth")
open(p, "wb").write(data)
bad("zip entry outside the file", p, r"zip:", "--channel-order", "rgb")
# truncation at 16 offsets, both containers
for fmt in ("zip", "legacy"):
    c = [c for c in man["checkpoints"] if c["format"] == fmt and c["layout"] == "junyanz"][0]
    data = open(os.path.join(ck, c["file"]), "rb").read()
    ok = True
    msgs = set()
    for k in range(16):
        cut = max(1, len(data) * k // 16 + k)
        p = os.path.join(hd, "trunc.pth")
        open(p, "wb").write(data[:cut])
        r = run([i2i, "convert", p, "-o", os.path.join(work, "out", "trunc")])
        ok &= r.returncode == 1 and bool(r.stderr.strip()) and "crash" not in r.stderr.lower()
        msgs.add(r.stderr.strip()[:60])
    check(ok and not os.path.exists(os.path.join(work, "out", "trunc")), "%s truncated at 16 offsets: refused" % fmt,
          "%d distinct messages" % len(msgs))
# unknown architecture, empty file, a directory, not a checkpoint
s = Storage("0", np.zeros(9, np.float32).tobytes())
p = os.path.join(hd, "unknown_arch.pth")
write_ckpt(p, collections.OrderedDict([("encoder.layer1.weight", Tensor(s, 0, (3, 3), (3, 1)))]), [s])
bad("unknown architecture", p, r"unknown architecture", "--channel-order", "rgb")
p = os.path.join(hd, "empty.pth")
open(p, "wb").close()
bad("empty file", p, r"empty")
bad("a directory", hd, r"directory")
p = os.path.join(hd, "text.pth")
open(p, "w").write("not a checkpoint\n")
bad("not a checkpoint", p, r"not a|unknown|format|magic")

# ---- missing, unexpected and mis-shaped keys: exit 1, nothing written, the key named --------------
# (the converter reports the first problem of a network; keys that set the architecture's shape,
# such as a block's first weight or a U-Net level's down convolution, must be named too, not
# change the shape and blame another key)


def keyed(name, c, edit, want):
    """Loads checkpoint c with torch, applies edit to its state dict, saves it, expects a refusal."""
    obj = torch.load(os.path.join(ck, c["file"]))
    sd = obj["state_dict"] if "state_dict" in obj else obj
    edit(sd)
    p = os.path.join(hd, "keys_%s.pth" % re.sub(r"[^A-Za-z0-9]+", "_", name))
    torch.save(obj, p)
    bad(name, p, want, "--channel-order", "rgb")


def rm(k):
    return lambda sd: sd.pop(k)


def add(k, like):
    return lambda sd: sd.__setitem__(k, sd[like].clone())


def edit(k, f):
    return lambda sd: sd.__setitem__(k, f(sd[k]))


def q(k):
    return re.escape("'%s'" % k)


one = lambda pred: ([c for c in man["checkpoints"] if pred(c)] or [None])[0]  # noqa: E731
s2w = one(lambda c: c["layout"] == "mmagic" and "summer2winter_convert-bgr_20210902" in c["file"])
e2s = one(lambda c: c["layout"] == "mmagic" and "edges2shoes" in c["file"])
jres = one(lambda c: c["layout"] == "junyanz" and c["file"].endswith("horse2zebra.pth"))
junet = one(lambda c: c["layout"] == "junyanz" and c["file"].endswith("facades_label2photo.pth"))
if s2w:
    G, W, D = "generators.summer.", "generators.winter.", "discriminators.winter."
    keyed("missing key", s2w, rm(G + "model.3.block.0.conv.bias"), "missing key " + q(G + "model.3.block.0.conv.bias"))
    keyed("unexpected key", s2w, add(G + "model.3.block.0.conv.scale", G + "model.3.block.0.conv.bias"),
          "unexpected key " + q(G + "model.3.block.0.conv.scale"))
    keyed("mis-shaped tensor", s2w, edit(W + "model.1.conv.weight", lambda t: t[:, :, :, :2].clone()),
          q(W + "model.1.conv.weight") + r" has shape \[\d+, \d+, 3, 2\] \(float32\), expected \[\d+, \d+, 3, 3\]")
    keyed("missing block weight", s2w, rm(G + "model.5.block.0.conv.weight"), "missing key " + q(G + "model.5.block.0.conv.weight"))
    keyed("missing first conv", s2w, rm(W + "model.0.conv.weight"), "missing key " + q(W + "model.0.conv.weight"))
    keyed("missing discriminator weight", s2w, rm(D + "model.2.conv.weight"), "missing key " + q(D + "model.2.conv.weight"))
    keyed("int64 tensor", s2w, edit(W + "model.1.conv.bias", lambda t: t.long()),
          q(W + "model.1.conv.bias") + r" has shape \[\d+\] \(int64\)")
    keyed("key outside the networks", s2w, add("ema.model.0.conv.weight", G + "model.0.conv.weight"),
          "unexpected key " + q("ema.model.0.conv.weight"))
if e2s:
    P = "generators.photo.model.model.1.model.1."
    keyed("missing U-Net level conv", e2s, rm(P + "model.0.conv.weight"), "missing key " + q(P + "model.0.conv.weight"))
    keyed("missing BatchNorm running_var", e2s, rm(P + "model.0.bn.running_var"), "missing key " + q(P + "model.0.bn.running_var"))
    keyed("missing discriminator BatchNorm", e2s, rm("discriminators.photo.model.1.bn.weight"),
          "missing key " + q("discriminators.photo.model.1.bn.weight"))
if jres:
    keyed("original authors: missing key", jres, rm("model.10.conv_block.5.weight"),
          "missing key " + q("model.10.conv_block.5.weight"))
    keyed("original authors: missing block weight", jres, rm("model.11.conv_block.1.weight"),
          "missing key " + q("model.11.conv_block.1.weight"))
    keyed("original authors: unexpected key", jres, add("model.10.conv_block.1.extra", "model.10.conv_block.1.bias"),
          "unexpected key " + q("model.10.conv_block.1.extra"))
if junet:
    ks = list(torch.load(os.path.join(ck, junet["file"])).keys())
    inner = max((k for k in ks if k.startswith("model.model.1.model.") and k.endswith(".1.weight")), key=len)
    keyed("original authors: missing innermost conv", junet, rm(inner), "missing key " + q(inner))

# a set is written whole or not at all: one target in the way (a folder of that name) changes
# nothing, and no staging folder is left
if s2w:
    blocked = os.path.join(work, "blocked")
    r, wr = convert(os.path.join(ck, s2w["file"]), blocked)
    before = {f: open(os.path.join(blocked, f), "rb").read() for f in os.listdir(blocked)} if r.returncode == 0 else {}
    victim = sorted(before)[-1] if before else "x.onnx"
    os.unlink(os.path.join(blocked, victim))
    os.makedirs(os.path.join(blocked, victim))
    others = [f for f in before if f != victim]
    for f in others:
        open(os.path.join(blocked, f), "wb").write(b"old")
    r = run([i2i, "convert", os.path.join(ck, s2w["file"]), "-o", blocked])
    left = sorted(os.listdir(blocked))
    check(r.returncode == 1 and "nothing was written" in r.stderr and len(others) >= 3 and
          all(open(os.path.join(blocked, f), "rb").read() == b"old" for f in others) and
          not [f for f in left if f.startswith(".")],
          "a set with one target in the way (a folder): refused, the other files untouched, no staging left",
          "%s %s" % (r.stderr.strip()[-200:], left))

# ---- names from the file reach the terminal escaped; top-level objects named; paths; FIFOs ----------
# (control characters and invalid UTF-8 as \xNN, valid UTF-8 kept; stderr and stdout read as bytes)


def run_bytes(cmd, timeout=60):
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def clean(b):
    """No escape, BEL, CR or other C0 byte but newlines, and valid UTF-8."""
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(c < 0x20 and c != 0x0a for c in b) and b"\xc2\x9b" not in b


esc_key = "\x1b]0;PWNED\x07\x1b[2J\x1b[31mk\nfake: i2i convert: wrote everything fine"
esc_shown = r"\x1b]0;PWNED\x07\x1b[2J\x1b[31mk\x0afake: i2i convert: wrote everything fine"
if s2w:
    G = "generators.summer."
    for label, key, shown_key in (("escape sequences and a newline", G + esc_key, G + esc_shown),
                                  ("valid UTF-8 kept", G + "model.3.block.0.conv.b\u00efas", G + "model.3.block.0.conv.b\u00efas")):
        obj = torch.load(os.path.join(ck, s2w["file"]))
        obj["state_dict"][key] = obj["state_dict"][G + "model.3.block.0.conv.bias"].clone()
        p = os.path.join(hd, "names_%s.pth" % re.sub(r"[^A-Za-z0-9]+", "_", label))
        torch.save(obj, p)
        out = os.path.join(work, "out", "names")
        shutil.rmtree(out, ignore_errors=True)
        r = run_bytes([i2i, "convert", p, "-o", out, "--channel-order", "rgb"])
        want = ("unexpected key '%s'" % shown_key).encode()
        check(r is not None and r.returncode == 1 and want in r.stderr and clean(r.stderr) and r.stderr.count(b"\n") == 1,
              "convert, a key with %s: shown escaped on one line" % label, repr(r.stderr[-300:]) if r else "timeout")
        r = run_bytes([i2i, "inspect", "--brief", p])
        check(r is not None and r.returncode == 0 and shown_key.encode() in r.stdout and clean(r.stdout) and
              not re.search(rb"^fake:", r.stdout, re.M),
              "inspect, a key with %s: listed escaped" % label,
              repr([l for l in r.stdout.splitlines() if b"PWNED" in l or b"b\xc3\xafas" in l])[:300] if r else "timeout")
    # a byte flipped in a key of data.pkl: invalid UTF-8 shown as \xNN
    data = bytearray(open(os.path.join(ck, s2w["file"]), "rb").read())
    at = data.find(b"generators.summer.model.3.block.0.conv.bias")
    data[at + 6] = 0xa4
    p = os.path.join(hd, "names_flipped.pth")
    open(p, "wb").write(data)
    r = run_bytes([i2i, "convert", p, "-o", os.path.join(work, "out", "flipped")])
    check(r is not None and r.returncode == 1 and rb"unexpected key 'genera\xa4ors.summer.model.3.block.0.conv.bias'" in r.stderr and
          clean(r.stderr), "convert, a flipped byte in a key: \\xa4 shown, valid UTF-8 message", repr(r.stderr[-300:]) if r else "timeout")
    r = run_bytes([i2i, "inspect", "--brief", p])
    check(r is not None and rb"genera\xa4ors.summer.model.3.block.0.conv.bias" in r.stdout and clean(r.stdout + r.stderr),
          "inspect, a flipped byte in a key: \\xa4 shown, valid UTF-8 output", repr((r.stdout + r.stderr)[-300:]) if r else "timeout")

# the top-level object is not a dict: a call names its global; an int, None, a tensor read right
if os.path.exists(marker):
    os.remove(marker)
tops = (("os.system call", Payload(os.system, "touch " + marker), r"is an opaque call of '(posix|os)\.system' \((GLOBAL|STACK_GLOBAL) at byte \d+, (REDUCE|NEWOBJ) at byte \d+"),
        ("bare tensor", torch.zeros(2), r"is a tensor \(torch\._utils\._rebuild_tensor_v2\), not a dict"),
        ("int", 5, r"is an int, not a dict"), ("None", None, r"is None, not a dict"))
for label, obj, want in tops:
    p = os.path.join(hd, "top_%s.pth" % re.sub(r"[^A-Za-z0-9]+", "_", label))
    torch.save(obj, p)
    for cmd in ("convert", "inspect"):
        r = run([i2i, cmd, p] + (["-o", os.path.join(work, "out", "top")] if cmd == "convert" else []))
        check(r.returncode == 1 and re.search("i2i %s: %s: the top-level object %s" % (cmd, re.escape(p), want), r.stderr) is not None and
              " a opaque" not in r.stderr and " a int" not in r.stderr and "a None" not in r.stderr,
              "%s, top-level %s: named" % (cmd, label), r.stderr.strip()[:300])
check(not os.path.exists(marker), "top-level os.system: nothing executed")

# a truncated checkpoint: inspect's and convert's messages name the file
if s2w:
    p = os.path.join(hd, "cut_for_inspect.pth")
    open(p, "wb").write(open(os.path.join(ck, s2w["file"]), "rb").read()[:300])
    for cmd in ("inspect", "convert"):
        r = run([i2i, cmd, p] + (["-o", os.path.join(work, "out", "cut")] if cmd == "convert" else []))
        check(r.returncode == 1 and r.stderr.startswith("i2i %s: %s: zip: " % (cmd, p)) and not r.stdout.strip(),
              "%s of a truncated checkpoint names the file" % cmd, r.stderr.strip()[:300])

# FIFOs are refused at once, not waited on
for name in ("fifo.pth", "fifo.onnx", "fifo.png"):
    p = os.path.join(hd, name)
    if os.path.lexists(p):
        os.remove(p)
    os.mkfifo(p)
    for cmd in ("inspect", "convert"):
        r = run_bytes([i2i, cmd, p] + (["-o", os.path.join(work, "out", "fifo")] if cmd == "convert" else []), timeout=20)
        check(r is not None and r.returncode == 1 and b"FIFO" in r.stderr and name.encode() in r.stderr,
              "%s on a FIFO (%s): refused at once with a message" % (cmd, name),
              "still waiting after 20 s" if r is None else repr(r.stderr[-200:]))
    os.remove(p)

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
