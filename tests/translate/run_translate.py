#!/usr/bin/python3
"""tests/translate/run_translate.py: `i2i translate` on a folder of real photographs.

A small ResNet generator (the mmagic replica, exported by torch) translates a folder holding an
8-bit PNG, a 16-bit PNG, an RGBA PNG, a JPEG, a lossy WebP, a 16-bit TIFF and a corrupt PNG. Checks:
the corrupt file is reported and the others are written (exit status 1); each output has the input's
size, format and bit depth and untouched alpha; each output's RGB equals the .npy path's output on
the same decoded pixels within one level of its bit depth (PSNR >= 40 dB for JPEG and lossy WebP);
the 16-bit output has more than 256 distinct values in a channel; `cp`-style single-file use (also
into an existing folder); commands that would lose a file refused before anything runs (an output
that is an input, two inputs onto one output, an image written as .npy, a bit depth the format
cannot hold), the inputs untouched; a missing model's message naming `i2i fetch`; model lookup order
($I2I_MODEL_PATH folders in order, then the XDG folder); --strength 0; --memory tiles, same result; the
same bits on any --threads; a folder run's outputs equal each file run alone, reported in order;
Ctrl-C keeps what was written whole and leaves no temporary; a short OpenMP spin unless the user
chose one; a model whose output overflows to inf is refused, no file written; an image larger
than a cgroup's memory limit refused with a message (where a cgroup can be made); a small WebP
declaring a huge size fails without taking the memory; a 16 MP float TIFF / 16-bit PNG written
within the image's memory and 200 MB; a folder's skipped entries named; a
non-picture input said to be one, a PNG named .dat pointed to -f; an -o folder of a run that writes
nothing removed; an H x W x 4 .npy's fourth channel kept; --bits for .npy warned of; an output
symlink written through, a dangling one refused; no GEGL or babl loaded; an output name of a
format i2i does not write, or one -f contradicts, refused; options out of range named; a .pth as
the model told to convert; a FIFO model refused at once; a .npy holding inf refused; RGBA to JPEG
warns; a TIFF of several pages warns that the first is translated; nothing left in TMPDIR or
the working folder.
Usage: run_translate.py BUILD_DIR SOURCE_DIR WORK_DIR.
Ends with "N passed, N failed".
"""
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

build, src, work = sys.argv[1:4]
i2i = os.path.join(build, "converter", "i2i")
# a sanitizer build: its allocator keeps freed memory in quarantine and its code runs ~10x slower,
# so memory figures that depend on either are checked apart
sanitized = b"libasan" in subprocess.run(["ldd", i2i], capture_output=True).stdout
sys.path.insert(0, os.path.join(src, "tests", "fixtures"))
sys.path.insert(0, os.path.join(src, "tests", "imageio"))
import fixture_common as fc  # noqa: E402
import gen_images as gi  # noqa: E402
import mmagic_replica as mr  # noqa: E402

passed = failed = 0


def check(ok, name, detail=""):
    global passed, failed
    passed += bool(ok)
    failed += not ok
    print("%s %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail else ""), flush=True)


shutil.rmtree(work, ignore_errors=True)
os.makedirs(os.path.join(work, "in"))
model = os.path.join(work, "model.onnx")
m = mr.build_resnet(base=8, num_blocks=2, seed=11).eval()
mr.randomize_biases(m, 11)
fc.export_image_model(m, model)

# a smooth, photo-like model for the lossy formats: a random generator's output is a
# high-frequency pattern no lossy codec keeps at 40 dB, which would test the codec, not i2i
smooth = os.path.join(work, "smooth.onnx")
sm = torch.nn.Sequential(torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(3, 3, 3), torch.nn.Tanh())
with torch.no_grad():
    k = torch.full((3, 3), 0.025)
    k[1, 1] = 0.8
    sm[1].weight.zero_()
    for c in range(3):
        sm[1].weight[c, c] = k
    sm[1].bias.fill_(0.05)
fc.export_image_model(sm, smooth)

h, w = 200, 300
rgb = ((fc.test_image(h, w, 0)[0] + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
yy, xx = np.mgrid[0:h, 0:w]
files = {}
p = os.path.join(work, "in", "a_rgb8.png")
Image.fromarray(rgb).save(p)
files[p] = ("PNG", 8, False)
rgb16 = np.minimum(rgb.astype(np.uint32) * 257 + ((xx * 5 + yy * 3) % 251)[:, :, None], 65535).astype(np.uint16)
p = os.path.join(work, "in", "b_rgb16.png")
gi.png_write(p, rgb16.reshape(h, w * 3), 16, 2, w, h)
files[p] = ("PNG", 16, False)
alpha = ((xx * 255) // (w - 1)).astype(np.uint8)
p = os.path.join(work, "in", "c_rgba8.png")
Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(p)
files[p] = ("PNG", 8, True)
p = os.path.join(work, "in", "d_photo.jpg")
Image.fromarray(rgb).save(p, quality=95)
files[p] = ("JPEG", 8, False)
p = os.path.join(work, "in", "e_photo.webp")
Image.fromarray(rgb).save(p, quality=95)
files[p] = ("WEBP", 8, False)
p = os.path.join(work, "in", "f_rgb16.tif")
Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257, "I;16").save(p)
files[p] = ("TIFF", 16, False)
good = open(os.path.join(work, "in", "a_rgb8.png"), "rb").read()
open(os.path.join(work, "in", "z_corrupt.png"), "wb").write(good[: len(good) // 3])

out = os.path.join(work, "out")
r = subprocess.run([i2i, "translate", model, os.path.join(work, "in"), "-o", out, "--scale", "0", "--backend", "cpu"],
                   capture_output=True, text=True)
check(r.returncode == 1, "exit status 1 when one file fails", "rc %d" % r.returncode)
check("z_corrupt.png" in r.stderr and r.stderr.count("\n") <= 3, "the corrupt file is reported", r.stderr.strip()[:200])
check(not os.path.exists(os.path.join(out, "z_corrupt.png")), "nothing written for the corrupt file")


def depth_of(path):
    head = open(path, "rb").read(32)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG", head[24], head[25] in (4, 6)
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG", 8, False
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP", 8, Image.open(path).mode == "RGBA"
    if head[:2] in (b"II", b"MM"):
        im = Image.open(path)
        return "TIFF", 16 if im.mode.startswith("I;16") or im.mode == "I" else 8, "A" in im.mode
    return "?", 0, False


lossy = [p for p, (fmt, _, _) in files.items() if fmt in ("JPEG", "WEBP")]
out_lossy = os.path.join(work, "out_lossy")
r = subprocess.run([i2i, "translate", smooth] + lossy + ["-o", out_lossy, "--scale", "0", "--backend", "cpu"],
                   capture_output=True, text=True)
check(r.returncode == 0, "lossy formats with a smooth model", r.stderr.strip()[:200])

for path, (fmt, bits, has_alpha) in sorted(files.items()):
    name = os.path.basename(path)
    lossy_fmt = fmt in ("JPEG", "WEBP")
    mdl = smooth if lossy_fmt else model
    o = os.path.join(out_lossy if lossy_fmt else out, name)
    if not os.path.exists(o) or (lossy_fmt and not os.path.exists(os.path.join(out, name))):
        check(False, name + " written")
        continue
    dec_in = gi.decode(path)      # H x W x 4 float [0,1], as the decoders read it
    dec_out = gi.decode(o)
    f, b, a = depth_of(o)
    check((f, b) == (fmt, bits) and dec_out.shape[:2] == (h, w), name + ": format, depth, size",
          "%s %d-bit %dx%d" % (f, b, dec_out.shape[1], dec_out.shape[0]))
    if has_alpha:
        check(a and np.array_equal(np.round(dec_out[:, :, 3] * 255), np.round(dec_in[:, :, 3] * 255)), name + ": alpha untouched")
    # the same decoded pixels through the .npy path
    npy_in = os.path.join(work, "x.npy")
    npy_out = os.path.join(work, "y.npy")
    np.save(npy_in, (dec_in[:, :, :3].astype(np.float64) * 2 - 1).astype(np.float32))
    rr = subprocess.run([i2i, "translate", mdl, npy_in, npy_out, "--backend", "cpu"], capture_output=True, text=True)
    ref = (np.load(npy_out).astype(np.float64) + 1) / 2
    got = dec_out[:, :, :3].astype(np.float64)
    if lossy_fmt:
        mse = float(((np.clip(ref, 0, 1) - got) ** 2).mean())
        psnr = 10 * np.log10(1 / max(mse, 1e-12))
        check(rr.returncode == 0 and psnr >= 40, name + ": equals the .npy path (PSNR)", "%.1f dB" % psnr)
    else:
        lvl = 1 / (2 ** bits - 1)
        if fmt == "TIFF":  # a gray TIFF: compare the luma the file stores
            ref = ref[:, :, :1] * 0.299 + ref[:, :, 1:2] * 0.587 + ref[:, :, 2:3] * 0.114
            got = got[:, :, :1]
        d = float(np.abs(np.clip(ref, 0, 1) - got).max())
        check(rr.returncode == 0 and d <= lvl * 1.01, name + ": equals the .npy path within one level",
              "max %.2f levels" % (d / lvl))
    if bits == 16:
        nd = max(len(np.unique(np.round(dec_out[:, :, c] * 65535))) for c in range(3))
        check(nd > 256, name + ": 16-bit output keeps 16 bits", "%d distinct values" % nd)

# a folder run writes each image on a thread of its own while the next file translates: every
# output equals a run of that file alone, byte for byte, and -v reports the files in their order
# with failures in the middle (a corrupt file, an output that cannot be written) in their places
alone = os.path.join(work, "alone")
os.makedirs(alone)
mixups = []
for path in sorted(files):
    name = os.path.basename(path)
    o = os.path.join(alone, name)
    subprocess.run([i2i, "translate", model, path, o, "--scale", "0", "--backend", "cpu"], capture_output=True)
    if not (os.path.exists(o) and open(o, "rb").read() == open(os.path.join(out, name), "rb").read()):
        mixups.append(name)
check(not mixups, "each output of the folder run equals that file translated alone", ", ".join(mixups))
order_in = os.path.join(work, "order_in")
os.makedirs(order_in)
order = ["a_rgb8.png", "b_corrupt.png", "c_rgba8.png", "d_photo.jpg"]
for name in order:
    shutil.copy(os.path.join(work, "in", "z_corrupt.png" if "corrupt" in name else name), os.path.join(order_in, name))
os.makedirs(os.path.join(work, "order_out", "c_rgba8.png"))  # c's write fails, on the writer's thread
r = subprocess.run([i2i, "translate", "-v", model, order_in, "-o", os.path.join(work, "order_out"), "--scale", "0",
                    "--backend", "cpu"], capture_output=True, text=True)
lines = r.stderr.splitlines()
named = [n for line in lines for n in order if os.path.join(order_in, n) in line]
check(r.returncode == 1 and named == order and "it is a folder" in lines[named.index("c_rgba8.png")] and
      "2 of 4 files failed" in r.stderr and os.path.exists(os.path.join(work, "order_out", "d_photo.jpg")),
      "-v and errors (a read and a write failing) report the files in their order; the rest are written",
      "; ".join(named))

# cp-style single file, and a missing model
single = os.path.join(work, "single.png")
r = subprocess.run([i2i, "translate", model, os.path.join(work, "in", "a_rgb8.png"), single, "--backend", "cpu"],
                   capture_output=True, text=True)
check(r.returncode == 0 and os.path.exists(single), "IN OUT for one file", r.stderr.strip()[:200])

# cp-style: an existing folder as the last path receives the output under the input's name
into = os.path.join(work, "into")
os.makedirs(into)
r = subprocess.run([i2i, "translate", model, os.path.join(work, "in", "a_rgb8.png"), into, "--backend", "cpu"],
                   capture_output=True, text=True)
check(r.returncode == 0 and open(os.path.join(into, "a_rgb8.png"), "rb").read() == open(single, "rb").read(),
      "IN DIR writes DIR/IN's name, as cp does", r.stderr.strip()[:200])


def refused(args, name, needle, keep):
    # a command that would lose a file is refused before anything runs: exit 2, the reason named,
    # and every file in KEEP byte-identical afterwards
    before = {k: open(k, "rb").read() for k in keep}
    r = subprocess.run([i2i, "translate", model] + args + ["--backend", "cpu"], capture_output=True, text=True)
    same = all(open(k, "rb").read() == v for k, v in before.items())
    check(r.returncode == 2 and needle in r.stderr and same, name, r.stderr.strip()[:240])


src_png = os.path.join(work, "in", "a_rgb8.png")
refused([src_png, src_png], "an output that is its own input is refused; the input is untouched",
        "would replace the input", [src_png])
refused([os.path.join(work, "in"), "-o", os.path.join(work, "in")],
        "-o set to the input folder is refused; every input is untouched", "would replace the input",
        [os.path.join(work, "in", n) for n in os.listdir(os.path.join(work, "in"))])
dup = os.path.join(work, "dup")
os.makedirs(os.path.join(dup, "x"))
os.makedirs(os.path.join(dup, "y"))
shutil.copy(src_png, os.path.join(dup, "x", "p.png"))
shutil.copy(src_png, os.path.join(dup, "y", "p.png"))
refused([os.path.join(dup, "x"), os.path.join(dup, "y"), "-o", os.path.join(dup, "out")],
        "two inputs that would write one output are refused, nothing written", "would both be written to", [])
check(not os.path.exists(os.path.join(dup, "out")), "... and the output folder is not even created")
refused([src_png, os.path.join(work, "img_as.npy")], "an image input with a .npy output is refused",
        "needs an image output", [])
check(not os.path.exists(os.path.join(work, "img_as.npy")), "... and no .npy is written")
refused([src_png, os.path.join(work, "deep.jpg"), "--bits", "16"], "--bits 16 with a JPEG output is refused up front",
        "JPEG and WebP store 8 bits", [])
refused([src_png, os.path.join(dup, "x", "p.png"), single], "several inputs and an existing file as the output: refused",
        "is not a folder", [single])

refused([src_png, os.path.join(work, "x.bmp")], "an output named for a format i2i does not write (.bmp) is refused",
        "does not write '.bmp' files", [])
refused([src_png, os.path.join(work, "x.png"), "-f", "jpeg"], "-f jpeg with an output named .png is refused",
        "-f asks for another format", [])
check(not os.path.exists(os.path.join(work, "x.bmp")) and not os.path.exists(os.path.join(work, "x.png")),
      "... and nothing is written")
for opt, val, msg in (("--quality", "0", "--quality must be within 1..100"), ("--threads", "-1", "--threads must be"),
                      ("--bits", "12", "--bits must be 8, 16 or 32")):
    refused([src_png, os.path.join(work, "opt.png"), opt, val], "%s %s is refused, naming the option" % (opt, val), msg, [])
r = subprocess.run([i2i, "translate", model, src_png, os.path.join(work, "upper.png"), "--backend", "CPU"],
                   capture_output=True, text=True)
check(r.returncode == 0, "--backend CPU (upper case) is accepted", r.stderr.strip()[-200:])
# a .pth given where a model is expected: told to convert it first, and -o's folder is not made
pth = os.path.join(work, "ckpt.pth")
torch.save({"w": torch.zeros(2)}, pth)
r = subprocess.run([i2i, "translate", pth, src_png, "-o", os.path.join(work, "never_made")], capture_output=True,
                   text=True)
check(r.returncode == 1 and "is a PyTorch checkpoint" in r.stderr and "i2i convert" in r.stderr and
      not os.path.exists(os.path.join(work, "never_made")),
      "a .pth as the model: told to convert it first; the output folder is not created", r.stderr.strip()[-200:])
# a FIFO as the model is refused at once instead of waiting for a writer
fifo = os.path.join(work, "fifo.onnx")
os.mkfifo(fifo)
try:
    r = subprocess.run([i2i, "translate", fifo, src_png, os.path.join(work, "fifo_out.png")], capture_output=True,
                       text=True, timeout=20)
    check(r.returncode == 1 and "not a regular file" in r.stderr, "a FIFO as the model is refused at once",
          r.stderr.strip()[-200:])
except subprocess.TimeoutExpired:
    check(False, "a FIFO as the model is refused at once", "blocked")
# .npy input holding inf: refused, naming where
bad_npy = os.path.join(work, "inf_in.npy")
arr = np.zeros((6, 8, 3), np.float32)
arr[2, 5, 1] = np.inf
np.save(bad_npy, arr)
r = subprocess.run([i2i, "translate", model, bad_npy, os.path.join(work, "inf_out.npy")], capture_output=True, text=True)
check(r.returncode == 1 and "inf at row 2, column 5, channel 1" in r.stderr and
      not os.path.exists(os.path.join(work, "inf_out.npy")), "a .npy holding inf is refused, naming the element",
      r.stderr.strip()[-200:])
# a TIFF of two pages: the first is translated, with a warning that says so
pages = os.path.join(work, "pages.tif")
first_page = Image.fromarray((np.random.default_rng(8).random((40, 60, 3)) * 255).astype(np.uint8))
first_page.save(pages, save_all=True, append_images=[first_page.rotate(90)])
r = subprocess.run([i2i, "translate", model, pages, os.path.join(work, "pages_out.tif")], capture_output=True, text=True)
check(r.returncode == 0 and "has several pages: the first is translated" in r.stderr and
      Image.open(os.path.join(work, "pages_out.tif")).size == (60, 40),
      "a TIFF of several pages: the first is translated, with a warning", r.stderr.strip()[-200:])
# RGBA written as JPEG: a warning that the transparency is dropped
r = subprocess.run([i2i, "translate", model, os.path.join(work, "in", "c_rgba8.png"), os.path.join(work, "rgba.jpg")],
                   capture_output=True, text=True)
check(r.returncode == 0 and "JPEG has no alpha channel" in r.stderr, "RGBA written as JPEG warns that the alpha is dropped",
      r.stderr.strip()[-200:])

env = dict(os.environ, I2I_MODEL_PATH=work, XDG_DATA_HOME=os.path.join(work, "xdg"))
r = subprocess.run([i2i, "translate", "winter2summer", single, os.path.join(work, "never.png")], capture_output=True,
                   text=True, env=env)
check(r.returncode == 1 and "i2i fetch winter2summer" in r.stderr and not os.path.exists(os.path.join(work, "never.png")),
      "a missing model names the command that installs it", r.stderr.strip()[:200])

# model lookup by task name: $I2I_MODEL_PATH's folders in order (the first holding TASK.onnx
# wins; a folder without it is skipped), then the XDG data folder
npy_in = os.path.join(work, "look_in.npy")
np.save(npy_in, (np.random.default_rng(4).random((20, 28, 3)) * 2 - 1).astype(np.float32))
first, second, xdg = (os.path.join(work, d) for d in ("look1", "look2", "lookxdg"))
for d in (first, second, os.path.join(xdg, "i2i", "models")):
    os.makedirs(d, exist_ok=True)
shutil.copy(model, os.path.join(second, "mytask.onnx"))
shutil.copy(smooth, os.path.join(xdg, "i2i", "models", "mytask.onnx"))


def by_name(path_env, dst):
    e = dict(os.environ, I2I_MODEL_PATH=path_env, XDG_DATA_HOME=xdg)
    return subprocess.run([i2i, "translate", "mytask", npy_in, dst, "--backend", "cpu"], capture_output=True, text=True,
                          env=e)


def same_as(path_model, got, name):
    ref = os.path.join(work, "look_ref.npy")
    subprocess.run([i2i, "translate", path_model, npy_in, ref, "--backend", "cpu"], capture_output=True, check=True)
    check(os.path.exists(got) and np.array_equal(np.load(got), np.load(ref)), name)


r = by_name(first + ":" + second, os.path.join(work, "look_a.npy"))
same_as(model, os.path.join(work, "look_a.npy"), "lookup: a colon list is searched in order; a folder without the model is skipped")
shutil.copy(smooth, os.path.join(first, "mytask.onnx"))
r = by_name(first + ":" + second, os.path.join(work, "look_b.npy"))
same_as(smooth, os.path.join(work, "look_b.npy"), "lookup: the first folder holding the model wins")
r = by_name(os.path.join(work, "nowhere"), os.path.join(work, "look_c.npy"))
same_as(smooth, os.path.join(work, "look_c.npy"), "lookup: then the XDG data folder (~/.local/share/i2i/models)")

# --strength 0 gives the input back; --memory (tiles) does not change the result
r = subprocess.run([i2i, "translate", model, npy_in, os.path.join(work, "s0.npy"), "--backend", "cpu", "--strength", "0"],
                   capture_output=True, text=True)
check(r.returncode == 0 and np.abs(np.load(os.path.join(work, "s0.npy")) - np.load(npy_in)).max() < 1e-6,
      "--strength 0 returns the input", r.stderr.strip()[:200])
big = os.path.join(work, "big_in.npy")
np.save(big, (np.random.default_rng(6).random((300, 200, 3)) * 2 - 1).astype(np.float32))
outs = []
for mem in ("0", "64K"):
    o = os.path.join(work, "mem_%s.npy" % mem)
    r = subprocess.run([i2i, "translate", "-v", model, big, o, "--backend", "cpu", "--memory", mem], capture_output=True,
                       text=True)
    tiles = re.search(r"(\d+) tiles?,", r.stderr)
    outs.append((np.load(o) if os.path.exists(o) else None, int(tiles.group(1)) if tiles else 0))
check(outs[0][0] is not None and outs[1][0] is not None and outs[1][1] > outs[0][1] and
      np.abs(outs[0][0] - outs[1][0]).max() <= 1e-4,
      "--memory 64K works in more tiles with the same result (1e-4)",
      "tiles %d vs %d" % (outs[0][1], outs[1][1]))

# --threads does not change a bit of the result: at 300x200 the model's 32-channel blocks run
# Winograd F(4x4) (36 products) and its 16 -> 32 stride-2 and 32 -> 16 transposed layers the
# sub-pixel Winograd (9 products), whose products the threads share by columns
thr = []
for t in ("1", "2", "3", "7"):
    o = os.path.join(work, "thr_%s.npy" % t)
    r = subprocess.run([i2i, "translate", model, big, o, "--backend", "cpu", "--threads", t], capture_output=True,
                       text=True)
    thr.append(np.load(o) if r.returncode == 0 and os.path.exists(o) else None)
check(all(x is not None for x in thr) and all(np.array_equal(thr[0], x) for x in thr[1:]),
      "--threads 1, 2, 3 and 7 give the same bits")

# Ctrl-C during a folder run: exit status 130 and a message; the files written are whole (each
# equals the file translated alone), no temporary is left beside them, the rest are not started
sig_in, sig_out = os.path.join(work, "sig_in"), os.path.join(work, "sig_out")
os.makedirs(sig_in)
sig_rgb = ((fc.test_image(768, 768, 3)[0] + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
for k in range(16):
    Image.fromarray(sig_rgb).save(os.path.join(sig_in, "p%02d.png" % k))
sig_ref = os.path.join(work, "sig_ref.png")
subprocess.run([i2i, "translate", model, os.path.join(sig_in, "p00.png"), sig_ref, "--scale", "0", "--backend", "cpu"],
               capture_output=True, check=True)
quiet_env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}


def interrupt_folder_run(dst, env, ready):
    # starts a folder run into dst, waits until ready(dst), reads the running tool's environment,
    # sends SIGINT; returns the process (finished), its stderr and the environment's variables
    p = subprocess.Popen([i2i, "translate", model, sig_in, "-o", dst, "--scale", "0", "--backend", "cpu"],
                         stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 300 and not ready(dst):
        time.sleep(0.005)
    try:
        environ = open("/proc/%d/environ" % p.pid, "rb").read().split(b"\0")
    except OSError:
        environ = []
    p.send_signal(signal.SIGINT)
    return p, p.communicate()[1], environ


p, err, environ = interrupt_folder_run(
    sig_out, quiet_env, lambda d: os.path.isdir(d) and any(not n.startswith(".") for n in os.listdir(d)))
left = sorted(os.listdir(sig_out)) if os.path.isdir(sig_out) else []
written = [n for n in left if not n.startswith(".")]
whole = all(open(os.path.join(sig_out, n), "rb").read() == open(sig_ref, "rb").read() for n in written)
check(p.returncode == 130 and "interrupted: %d of 16 files written" % len(written) in err and 1 <= len(written) < 16 and
      whole and len(left) == len(written),
      "Ctrl-C: exit 130, the files written are whole, no temporary left, the rest not started",
      "rc %s, %d written, whole %s, left %s; %s" % (p.returncode, len(written), whole, left[:4], err.strip()[-160:]))
# the tool runs with OpenMP's idle threads spinning briefly (it executes itself again with
# GOMP_SPINCOUNT set, i2i_openmp_reexec: 2-2.5x faster beside a busy core), unless the user set it
check(b"GOMP_SPINCOUNT=10000" in environ, "the tool runs with a short OpenMP spin (GOMP_SPINCOUNT=10000)",
      "%d variables read" % len(environ))
p, err, environ = interrupt_folder_run(os.path.join(work, "sig_out2"), dict(quiet_env, GOMP_SPINCOUNT="777"),
                                       os.path.isdir)
check(b"GOMP_SPINCOUNT=777" in environ and b"GOMP_SPINCOUNT=10000" not in environ,
      "a GOMP_SPINCOUNT of the user's is kept", "%d variables read" % len(environ))

# a model whose output overflows float32: an error, and no file (a float TIFF would keep the inf)
over = os.path.join(work, "overflow.onnx")
fc.export_image_model(fc.overflowing_model(), over)
over_out = os.path.join(work, "overflow.tif")
r = subprocess.run([i2i, "translate", over, os.path.join(work, "in", "a_rgb8.png"), over_out, "--bits", "32"],
                   capture_output=True, text=True)
check(r.returncode == 1 and "not finite" in r.stderr and not os.path.exists(over_out),
      "a model whose output overflows (inf): refused with a message, no file written", r.stderr.strip()[-200:])


# a folder's entries that are not translated are named, not dropped unseen: a file of another
# format, a subfolder, a broken link
odd = os.path.join(work, "odd_in")
os.makedirs(os.path.join(odd, "sub"))
shutil.copy(src_png, os.path.join(odd, "p.png"))
open(os.path.join(odd, "notes.txt"), "w").write("x")
os.symlink("gone.png", os.path.join(odd, "dead.png"))
r = subprocess.run([i2i, "translate", model, odd, "-o", os.path.join(work, "odd_out")], capture_output=True, text=True)
check(r.returncode == 0 and "skipping 1 file 'notes.txt'" in r.stderr and "1 subfolder 'sub'" in r.stderr and
      "1 broken link 'dead.png'" in r.stderr and os.listdir(os.path.join(work, "odd_out")) == ["p.png"],
      "a folder's other files, subfolders and broken links are named as skipped", r.stderr.strip()[-300:])
# a file that is no picture given by name: said so (not "i2i does not write .txt"); a PNG with
# another extension under -o is told to choose the format with -f, and -f png writes it
r = subprocess.run([i2i, "translate", model, os.path.join(odd, "notes.txt"), "-o", os.path.join(work, "odd_out2")],
                   capture_output=True, text=True)
check(r.returncode == 2 and "is not a PNG, JPEG, TIFF or WebP image" in r.stderr, "a text file as an input: not a picture",
      r.stderr.strip()[-200:])
shutil.copy(src_png, os.path.join(work, "png_data.dat"))
r = subprocess.run([i2i, "translate", model, os.path.join(work, "png_data.dat"), "-o", os.path.join(work, "odd_out3")],
                   capture_output=True, text=True)
r2 = subprocess.run([i2i, "translate", model, os.path.join(work, "png_data.dat"), "-o", os.path.join(work, "odd_out3"),
                     "-f", "png"], capture_output=True, text=True)
check(r.returncode == 2 and "give the outputs' format with -f" in r.stderr and r2.returncode == 0 and
      os.path.exists(os.path.join(work, "odd_out3", "png_data.png")),
      "a PNG named .dat under -o: told to give -f, and -f png writes png_data.png", r.stderr.strip()[-200:])
# an output folder -o would create is not left behind when no file could be written
r = subprocess.run([i2i, "translate", model, os.path.join(work, "in", "z_corrupt.png"), "-o",
                    os.path.join(work, "never_dir", "deeper")], capture_output=True, text=True)
check(r.returncode == 1 and not os.path.exists(os.path.join(work, "never_dir")),
      "-o NEW/DEEPER made for a run that writes nothing is removed again", r.stderr.strip()[-200:])
# an H x W x 4 .npy: the fourth channel comes back unchanged, RGB as the H x W x 3 run's
rgba_npy, rgb_npy = os.path.join(work, "four.npy"), os.path.join(work, "three.npy")
four = np.random.default_rng(12).uniform(-1, 1, (20, 24, 4)).astype(np.float32)
np.save(rgba_npy, four)
np.save(rgb_npy, four[:, :, :3].copy())
r = subprocess.run([i2i, "translate", model, rgba_npy, rgb_npy, "-o", os.path.join(work, "four_out"), "--bits", "16"],
                   capture_output=True, text=True)
got4 = np.load(os.path.join(work, "four_out", "four.npy")) if r.returncode == 0 else None
got3 = np.load(os.path.join(work, "four_out", "three.npy")) if r.returncode == 0 else None
check(got4 is not None and got4.shape == (20, 24, 4) and np.array_equal(got4[:, :, 3], four[:, :, 3]) and
      np.array_equal(got4[:, :, :3], got3), "an H x W x 4 .npy keeps its fourth channel; RGB as the 3-channel run",
      r.stderr.strip()[-200:])
check("--bits does not apply to .npy files" in r.stderr, "--bits given for .npy files: a warning that it does not apply",
      r.stderr.strip()[-200:])
# an output that is a symbolic link is written through (the link stays, its target is replaced),
# as cp does; a link to nothing is refused and nothing is created
target, link, dead = (os.path.join(work, n) for n in ("target.png", "link.png", "dead_link.png"))
shutil.copy(src_png, target)
os.symlink("target.png", link)
os.symlink("nothing_here.png", dead)
r = subprocess.run([i2i, "translate", model, src_png, link], capture_output=True, text=True)
check(r.returncode == 0 and os.path.islink(link) and open(target, "rb").read() == open(single, "rb").read(),
      "an output that is a symbolic link: its target is written, the link kept", r.stderr.strip()[-200:])
r = subprocess.run([i2i, "translate", model, src_png, dead], capture_output=True, text=True)
check(r.returncode == 1 and "symbolic link to a file that does not exist" in r.stderr and os.path.islink(dead) and
      not os.path.exists(os.path.join(work, "nothing_here.png")), "an output that is a dangling link is refused",
      r.stderr.strip()[-200:])


def memory_cgroup(limit):
    # a fresh memory cgroup limited to LIMIT bytes (v2 at the root, v1 under this process's own
    # group), or None where this machine allows none (not root, a read-only or v2-delegated tree)
    d = None
    try:
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            if "memory" not in open("/sys/fs/cgroup/cgroup.subtree_control").read().split():
                return None
            d = "/sys/fs/cgroup/i2i-test-%d" % os.getpid()
            os.mkdir(d)
            open(os.path.join(d, "memory.max"), "w").write(str(limit))
        else:
            own = [ln.split(":", 2)[2].strip() for ln in open("/proc/self/cgroup")
                   if "memory" in ln.split(":")[1].split(",")]
            base = "/sys/fs/cgroup/memory" + (own[0] if own else "")
            if not os.path.isdir(base):
                base = "/sys/fs/cgroup/memory"
            d = os.path.join(base, "i2i-test-%d" % os.getpid())
            os.mkdir(d)
            open(os.path.join(d, "memory.limit_in_bytes"), "w").write(str(limit))
        return d
    except (OSError, IndexError):
        if d and os.path.isdir(d):
            os.rmdir(d)
        return None


# an image larger than the memory a cgroup (a container's limit) leaves: refused with a message
# that names the figures, where it used to be killed by the kernel (the host had the memory)
huge = os.path.join(work, "huge.png")
Image.new("RGB", (4000, 4000), (30, 90, 200)).save(huge)
cg = memory_cgroup(192 << 20)
if cg is None:
    print("  (no memory cgroup can be made here: the cgroup limit check is skipped)")
else:
    huge_out = os.path.join(work, "huge_out.png")
    r = subprocess.run([i2i, "translate", model, huge, huge_out, "--backend", "cpu"], capture_output=True, text=True,
                       preexec_fn=lambda: open(os.path.join(cg, "cgroup.procs"), "w").write(str(os.getpid())))
    os.rmdir(cg)
    check(r.returncode == 1 and "not enough memory for" in r.stderr and "244 MB" in r.stderr and
          not os.path.exists(huge_out), "an image larger than a cgroup's memory limit is refused, not killed",
          "rc %d: %s" % (r.returncode, r.stderr.strip()[-200:]))
    # room to read and translate it but not for libwebp's whole-image buffers (26 bytes a pixel):
    # the WebP save is refused with the figures, and the PNG save, a row at a time, goes through
    cg = memory_cgroup(480 << 20)
    if cg:
        def in_cg(*args):
            return subprocess.run([i2i, "translate", model, huge] + list(args) + ["--backend", "cpu"],
                                  capture_output=True, text=True,
                                  preexec_fn=lambda: open(os.path.join(cg, "cgroup.procs"), "w").write(str(os.getpid())))
        got = {name: in_cg(os.path.join(work, name)) for name in ("huge_out.webp", "huge_out.png")}
        # at native size the run's intermediates (796 MiB) do not fit: the refusal names a working
        # size that does, and a run at that size goes through in the same cgroup
        native = in_cg(os.path.join(work, "huge_native.png"), "--scale", "0")
        advised = re.search(r"it would fit at a working size \(short side\) of (\d+) pixels or less", native.stderr)
        # (a sanitizer build's quarantine is not the engine's count: the advised run is not tried there)
        at_advice = None
        if advised and not sanitized:
            at_advice = in_cg(os.path.join(work, "huge_advised.png"), "--scale", advised.group(1))
        os.rmdir(cg)
        check(native.returncode == 1 and advised and int(advised.group(1)) >= 512 and
              not os.path.exists(os.path.join(work, "huge_native.png")),
              "a native-size run that needs more memory than the cgroup leaves is refused with a working size that fits",
              "rc %d: %s" % (native.returncode, native.stderr.strip()[-300:]))
        if sanitized:
            print("  (sanitizer build: the run at the advised working size is not tried)")
        else:
            check(at_advice is not None and at_advice.returncode == 0 and
                  Image.open(os.path.join(work, "huge_advised.png")).size == (4000, 4000),
                  "... and a run at that working size goes through in the same memory",
                  "rc %d: %s" % (at_advice.returncode, at_advice.stderr.strip()[-300:]) if at_advice else "no advice")
        r = got["huge_out.webp"]
        check(r.returncode == 1 and "as WebP needs about 396 MB" in r.stderr and
              not os.path.exists(os.path.join(work, "huge_out.webp")),
              "a WebP save that needs more memory than the cgroup leaves is refused, not killed",
              "rc %d: %s" % (r.returncode, r.stderr.strip()[-200:]))
        check(got["huge_out.png"].returncode == 0, "... while the PNG save, a row at a time, fits",
              got["huge_out.png"].stderr.strip()[-200:])

# a 94-byte WebP whose header declares 16383 x 16383 pixels (a 4 GiB float buffer): refused as
# truncated after a few MB, where the buffer's pages were all mapped before the decoder failed
forged = os.path.join(work, "forged.webp")
buf = io.BytesIO()
Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, "WEBP", quality=50)
data = bytearray(buf.getvalue())
at = data.find(b"VP8 ") + 8 + 6
data[at:at + 4] = (16383).to_bytes(2, "little") * 2
open(forged, "wb").write(data)
# the peak is read by a small parent: a child of this process inherits its high-water mark (torch)
peak_of = ("import os, sys\npid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)\n"
           "_, st, ru = os.wait4(pid, 0)\nprint(ru.ru_maxrss >> 10)\nsys.exit(os.waitstatus_to_exitcode(st))")
# (without meson's MALLOC_PERTURB_, which makes malloc write every byte it hands out)
r = subprocess.run([sys.executable, "-c", peak_of, i2i, "translate", model, forged, os.path.join(work, "forged_out.webp")],
                   capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "MALLOC_PERTURB_"})
peak = int(r.stdout) if r.stdout.strip().isdigit() else -1
# (the page-mapping helper runs while the decoder works: under a sanitizer the decoder takes ten
# times as long to find the truncation and 0.6-1.0 GB get mapped meanwhile, 17-213 MB otherwise)
check(r.returncode == 1 and "truncated WebP" in r.stderr and 0 < peak < (2048 if sanitized else 1024),
      "a small WebP declaring 16383 x 16383 pixels fails without taking the buffer's 4 GiB",
      "rc %d, peak %d MB: %s" % (r.returncode, peak, r.stderr.strip()[-160:]))
# a 16 MP picture written as float TIFF and 16-bit PNG a row at a time: the run's peak stays
# within its float RGBA copy (244 MB) and 200 MB (GEGL's savers took 875 and 500 MB in all)
for name, extra in (("huge32.tif", ["--bits", "32"]), ("huge16.png", ["--bits", "16"])):
    r = subprocess.run([sys.executable, "-c", peak_of, i2i, "translate", model, huge, os.path.join(work, name)] + extra,
                       capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "MALLOC_PERTURB_"})
    peak = int(r.stdout) if r.stdout.strip().isdigit() else -1
    check(r.returncode == 0 and 0 < peak < 244 + 200, "a 16 MP picture saved as %s: peak within the image + 200 MB" % name,
          "rc %d, peak %d MB: %s" % (r.returncode, peak, r.stderr.strip()[-160:]))

# images are read and written with their format's libraries alone: GEGL and babl are not loaded
# (their module scan cost each run ~30 ms, their savers a copy of the image), and a run leaves
# nothing in TMPDIR or the working folder
tmp, cwd = os.path.join(work, "tmp_lean"), os.path.join(work, "cwd_lean")
os.makedirs(tmp)
os.makedirs(cwd)
lean_out = {}
for ext in ("png", "tif"):
    lean_out[ext] = os.path.join(work, "lean." + ext)
    r = subprocess.run([i2i, "translate", model, os.path.join(work, "in", "a_rgb8.png"), lean_out[ext], "--backend", "cpu"],
                       capture_output=True, text=True, cwd=cwd, env=dict(os.environ, TMPDIR=tmp, LD_DEBUG="files"))
    loaded = set(re.findall(r"file=(?:\S*/)?([\w.+-]+\.so[.\d]*)", r.stderr))
    check(r.returncode == 0 and "libpng16.so.16" in loaded and not any(n.startswith(("libgegl", "libbabl")) for n in loaded) and
          not os.listdir(tmp) and not os.listdir(cwd),
          "a %s output: no GEGL or babl loaded, nothing left in TMPDIR or the working folder" % ext.upper(),
          "rc %d, %d libraries, gegl/babl %s, left %s" % (r.returncode, len(loaded),
                                                        sorted(n for n in loaded if "gegl" in n or "babl" in n),
                                                        os.listdir(tmp) + os.listdir(cwd)))
check(open(lean_out["png"], "rb").read() == open(single, "rb").read(), "... and the PNG is the same as without LD_DEBUG and TMPDIR set")
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
