#!/usr/bin/python3
"""bench/large/large.py I2I OUT [--quick]: the measurements of bench/large/run (see there)."""
import os
import re
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "tests", "fixtures"))
import fixture_common as fc  # noqa: E402
import mmagic_replica as mr  # noqa: E402

i2i, out = sys.argv[1], sys.argv[2]
quick = "--quick" in sys.argv


def export(model, path):
    if not os.path.exists(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, torch.zeros(1, 3, 64, 64), path, opset_version=17, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "n", 2: "h", 3: "w"},
                                                                     "output": {0: "n", 2: "h", 3: "w"}})


def translate(model, src, dst, *opts):
    """Runs i2i translate -v under /usr/bin/time; returns (seconds, peak RSS MiB, verbose line)."""
    t0 = time.time()
    r = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M", i2i, "translate", model, src, dst, "-v", "--backend", "cpu"]
                       + list(opts), capture_output=True, text=True)
    dt = time.time() - t0
    if r.returncode:
        raise SystemExit("translate failed: " + r.stderr)
    rss = int(re.search(r"MAXRSS (\d+)", r.stderr).group(1)) / 1024
    line = [l for l in r.stderr.splitlines() if " -> " in l][0]
    return dt, rss, line


def photo(h, w):
    """A structured photo: the fixtures' photo crop upscaled, plus fine texture for detail."""
    base = fc.test_image(256, 256, 0)[0]
    img = Image.fromarray(((base + 1) * 127.5).clip(0, 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    a = np.asarray(img).astype(np.float32) / 255
    rng = np.random.default_rng(1)
    tex = rng.normal(0, 0.04, (h // 2 + 1, w // 2 + 1, 1)).astype(np.float32)
    a = a + np.repeat(np.repeat(tex, 2, 0), 2, 1)[:h, :w]
    return (a.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def hf_energy(a):
    a = a.astype(np.float64)
    lap = 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
    return float((lap ** 2).mean())


def area_down(a, h, w):
    return np.asarray(Image.fromarray(a).resize((w, h), Image.BOX)).astype(np.float64)


narrow = os.path.join(out, "resnet_c8.onnx")
full = os.path.join(out, "resnet_c64.onnx")
m = mr.build_resnet(base=8, seed=5).eval()
mr.randomize_biases(m, 5)
export(m, narrow)
m = mr.build_resnet(base=64, seed=6).eval()
mr.randomize_biases(m, 6)
export(m, full)

# 1. memory at 7680x4320 (the .npy path holds the input as RGBA and RGB floats: 28 bytes a pixel)
H, W = 4320, 7680
big = os.path.join(out, "big.npy")
if not os.path.exists(big):
    np.save(big, np.sin(np.arange(H * W * 3, dtype=np.float32) * 0.0007).reshape(H, W, 3))
for budget in ("0", "256M"):
    dt, rss, line = translate(narrow, big, os.path.join(out, "big_out.npy"), "--memory", budget)
    inter = float(re.search(r"\(([\d.]+) MiB\)", line).group(1))
    work = float(re.search(r"\+ ([\d.]+) MiB workspace", line).group(1))
    nint = int(re.search(r"(\d+) whole-image intermediates", line).group(1))
    images = H * W * 7 * 4 / 2 ** 20
    bound = images + inter + work + 64
    print("7680x4320, narrow ResNet, budget %s: %.1f s, peak RSS %.0f MiB; image buffers %.0f + %d intermediates %.0f + "
          "workspace %.0f + 64 = %.0f MiB: %s" % (budget, dt, rss, images, nint, inter, work, bound,
                                                "within" if rss <= bound else "OVER"), flush=True)

# 2. working resolution on a 4000x3000 photo
ph = os.path.join(out, "photo4000.png")
if not os.path.exists(ph):
    Image.fromarray(photo(3000, 4000)).save(ph)
small = os.path.join(out, "photo512.png")
Image.fromarray(np.asarray(Image.open(ph).resize((683, 512), Image.BOX))).save(small)


def working_resolution(model, tag, label, *opts):
    """Scale 512 on the 4000x3000 photo: time, memory, detail kept, low frequencies."""
    res = os.path.join(out, "photo4000_s512_%s.png" % tag)
    dt, rss, line = translate(model, ph, res, "--scale", "512", *opts)
    a = np.asarray(Image.open(ph))
    b = np.asarray(Image.open(res))
    ratio = hf_energy(b) / hf_energy(a)
    small_out = os.path.join(out, "photo512_out_%s.png" % tag)
    translate(model, small, small_out, "--scale", "0", *opts)
    so = np.asarray(Image.open(small_out))
    si = np.asarray(Image.open(small))
    print("4000x3000 photo at scale 512, %s: %.1f s, peak RSS %.0f MiB; high-frequency energy %.3f of the "
          "original's (goal within 10%%), of the change alone %.3f" %
          (label, dt, rss, ratio, hf_energy(b.astype(np.float64) - a) / hf_energy(a)), flush=True)
    # the low frequencies of the output against the model's own output at the working size, at
    # the working size and at 1/2 and 1/4 of it (bilinear up then box down is exact only well
    # below the working size's Nyquist), beside the size of the change itself
    for h, w in ((512, 683), (256, 341), (128, 171)):
        lf = np.abs(area_down(b, h, w) - area_down(so, h, w)).mean() / 255
        ch = np.abs(area_down(so, h, w) - area_down(si, h, w)).mean() / 255
        print("  low frequencies at %dx%d: output vs the model at 683x512, mean abs %.4f (the change: %.4f)" %
              (w, h, lf, ch), flush=True)


def grade(a):
    """A smooth colour grade (warmer, lifted shadows), the kind of change a real model makes."""
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    return np.clip(np.stack([0.08 + 0.95 * r ** 0.85, 0.03 + 0.97 * g, 0.9 * b ** 1.1], -1), 0, 1)


def trained_standin():
    """An 8-channel Pix2Pix U-Net fine-tuned by `i2i finetune` to grade photos (random weights
    change a picture into saturated noise, which no real model does)."""
    onnx_out = os.path.join(out, "trained", "graded.onnx")
    if os.path.exists(onnx_out):
        return onnx_out
    pairs = os.path.join(out, "grade_pairs")
    os.makedirs(pairs, exist_ok=True)
    rng = np.random.default_rng(7)
    src = np.asarray(Image.open(ph)).astype(np.float64) / 255
    for i in range(24):
        s = int(rng.integers(300, 1500))
        y, x = int(rng.integers(0, 3000 - s)), int(rng.integers(0, 4000 - s))
        crop = np.asarray(Image.fromarray((src[y:y + s, x:x + s] * 255 + 0.5).astype(np.uint8)).resize(
            (286, 286), Image.BOX)).astype(np.float64) / 255
        both = np.concatenate([crop, grade(crop)], axis=1)
        Image.fromarray((both * 255 + 0.5).astype(np.uint8)).save(os.path.join(pairs, "g%02d.png" % i))
    g = mr.randomize_biases(mr.build_unet(8, 8, True, seed=41), 41)
    ckpt = os.path.join(out, "grade_unet8.pth")
    torch.save({"state_dict": mr.translation_state_dict([("photo", g)], [])}, ckpt)
    t0 = time.time()
    r = subprocess.run([i2i, "finetune", ckpt, pairs, "--channel-order", "rgb", "--size", "256", "--iters", "400",
                        "--seed", "1", "--sample-every", "0", "--save-every", "400", "-o", "graded", "--overwrite",
                        "--output-dir", os.path.join(out, "trained"), "--work-dir", os.path.join(out, "trained-work")],
                       capture_output=True, text=True, env=dict(os.environ, I2I_NO_PROGRESS="1"))
    if r.returncode:
        raise SystemExit("finetune failed: " + r.stderr[-2000:])
    print("trained stand-in: 8-channel U-Net, `i2i finetune` 400 iterations at 256x256 in %.0f s" % (time.time() - t0),
          flush=True)
    return onnx_out


working_resolution(full, "random", "random-weight full ResNet")
graded = trained_standin()
working_resolution(graded, "graded", "trained 8-channel U-Net (colour grade)", "--pix2pix-mode", "deterministic")


def comparison_picture(model, path):
    """The README's picture: a 360x360 crop of the photo, the model's working-size output
    upscaled, i2i's scale 512 and the model at native size, with each one's high-frequency
    energy against the original's."""
    nat = os.path.join(out, "photo4000_native_graded.png")
    translate(model, ph, nat, "--scale", "0", "--pix2pix-mode", "deterministic")
    o = Image.open(ph).convert("RGB")
    panels = [(o, "original (4000x3000)"),
              (Image.open(os.path.join(out, "photo512_out_graded.png")).convert("RGB").resize(o.size, Image.BILINEAR),
               "model at 683x512, upscaled"),
              (Image.open(os.path.join(out, "photo4000_s512_graded.png")).convert("RGB"), "i2i --scale 512 (default)"),
              (Image.open(nat).convert("RGB"), "model at native size")]
    x, y, s = 1700, 1250, 360
    canvas = Image.new("RGB", (4 * s + 24, s + 26), "white")
    from PIL import ImageDraw
    d = ImageDraw.Draw(canvas)
    h0 = hf_energy(np.asarray(o.convert("L")))
    for i, (im, label) in enumerate(panels):
        canvas.paste(im.crop((x, y, x + s, y + s)), (i * (s + 8), 26))
        d.text((i * (s + 8) + 4, 6), label, fill="black")
        print("  comparison: %-28s high-frequency energy %.3f of the original's" %
              (label, hf_energy(np.asarray(im.convert("L"))) / h0), flush=True)
    canvas.save(path, quality=88)
    print("comparison picture written: %s" % path, flush=True)


comparison_picture(graded, os.path.join(out, "working-resolution.jpg"))

# 3. full ResNet times
for size, scales in ((1024, ("0", "512")), (4096, ("512",) if quick else ("512", "0"))):
    p = os.path.join(out, "photo%d.png" % size)
    if not os.path.exists(p):
        Image.fromarray(photo(size, size)).save(p)
    for s in scales:
        dt, rss, line = translate(full, p, os.path.join(out, "out%d_%s.png" % (size, s)), "--scale", s)
        print("full ResNet %dx%d scale %s: %.1f s, peak RSS %.0f MiB (%s)" % (size, size, s if s != "0" else "native",
                                                                        dt, rss, line.split(": ", 1)[1][:120]), flush=True)
