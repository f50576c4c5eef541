#!/usr/bin/python3
# gen_fixtures.py: writes the torch-made checkpoints the .pth reader's tests load, plus the values
# torch sees (NAME.expect: "key dtype rank dims... byte_offset byte_count" per tensor in file order;
# NAME.bin: float32 for floating tensors, int64 for integer ones). Run with /usr/bin/python3 (torch
# 1.13). Nothing hostile is written here. `--big DIR` instead writes full-size mmagic-layout
# CycleGAN (zip) and Pix2Pix (legacy) checkpoints for timing.
import collections
import io
import os
import sys

import numpy as np
import torch


def expected(sd, path):
    """Writes path.expect / path.bin for state dict `sd` (keys after any 'module.' strip)."""
    lines, blob = [], bytearray()
    for key, t in sd.items():
        t = t.detach()
        if t.is_floating_point():
            arr, dt = t.to(torch.float32).contiguous().numpy(), "float32"
        else:
            arr, dt = t.to(torch.int64).contiguous().numpy(), "int64"
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        if key.startswith("module."):
            key = key[len("module."):]
        lines.append(" ".join([key, dt, str(t.dim())] + [str(d) for d in t.shape] + [str(len(blob)), str(len(raw))]))
        blob += raw
    with open(path + ".expect", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(path + ".bin", "wb") as f:
        f.write(bytes(blob))


def rich_state_dict():
    """A state dict with every tensor form the reader must handle."""
    torch.manual_seed(1234)
    conv = torch.nn.Conv2d(3, 4, 3)
    bn = torch.nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-1, 1)
    bn.num_batches_tracked += 7
    sd = collections.OrderedDict()
    sd["conv.weight"] = conv.weight.data
    sd["conv.bias"] = conv.bias.data
    sd["bn.weight"] = bn.weight.data
    sd["bn.running_mean"] = bn.running_mean
    sd["bn.num_batches_tracked"] = bn.num_batches_tracked  # int64, 0-d
    base = torch.randn(5, 6)
    sd["base"] = base
    sd["view"] = base.view(-1)[9:21].view(3, 4)  # same storage, offset 9
    sd["transposed"] = torch.randn(3, 2).t()  # non-contiguous, stride (1, 2)
    sd["slice_t"] = base[1:4, ::2].t()  # offset and strides, non-contiguous
    sd["half"] = torch.randn(2, 3).half()
    sd["half_special"] = torch.tensor([0.0, -0.0, 6.1e-5, 5.96e-8, 65504.0, float("inf"), -float("inf"), 1.0 / 3], dtype=torch.float16)
    sd["bf16"] = torch.randn(4).bfloat16()
    sd["double"] = torch.randn(2, 2, dtype=torch.float64)
    sd["param"] = torch.nn.Parameter(torch.randn(4))
    sd["int32"] = torch.tensor([[-3, 4], [5, -2**31]], dtype=torch.int32)
    sd["uint8"] = torch.tensor([0, 255, 7], dtype=torch.uint8)
    sd["boolmask"] = torch.tensor([True, False, True])
    sd["empty"] = torch.zeros(0, 3)
    sd["scalar"] = torch.tensor(2.5)
    return sd


def meta():
    return {
        "str": "hello",
        "int": 7,
        "neg": -5,
        "big": 2**40,
        "float": 0.25,
        "list": [1, 2, 3],
        "tuple": (4, "x"),
        "none": None,
        "yes": True,
        "no": False,
        "bytes": b"\x00\x01\xffabc",
        "nested": {"a": {"b": 1}},
        "np_float": np.float64(1.5),
        "np_array": np.arange(6, dtype=np.float32).reshape(2, 3),
    }


def save_pair(sd, obj, out, name, **kw):
    """obj saved to out/name.pth through a file object (prefix 'archive'), plus expectations."""
    path = os.path.join(out, name)
    with open(path + ".pth", "wb") as f:
        torch.save(obj, f, **kw)
    expected(sd, path)


def main(out):
    os.makedirs(out, exist_ok=True)
    sd = rich_state_dict()
    ckpt = {"meta": meta(), "state_dict": sd}
    save_pair(sd, ckpt, out, "ckpt_zip")
    save_pair(sd, ckpt, out, "ckpt_legacy", _use_new_zipfile_serialization=False)
    save_pair(sd, sd, out, "bare_zip")  # bare state dict
    save_pair(sd, ckpt, out, "ckpt_proto4", pickle_protocol=4)
    # Saved to a path: the zip prefix is the file name without its last extension.
    torch.save(sd, os.path.join(out, "my.weird.name.pth"))
    expected(sd, os.path.join(out, "my.weird.name"))
    # A DataParallel-style prefix.
    msd = collections.OrderedDict(("module." + k, v) for k, v in sd.items())
    save_pair(msd, {"state_dict": msd}, out, "module_prefix")
    # 120 entries: memo indices above 255 (LONG_BINPUT / LONG_BINGET).
    torch.manual_seed(5)
    big = collections.OrderedDict(("layer%d.weight" % i, torch.randn(i % 5 + 1, 2)) for i in range(120))
    save_pair(big, {"meta": {"n": 120}, "state_dict": big}, out, "many_zip")
    save_pair(big, {"meta": {"n": 120}, "state_dict": big}, out, "many_legacy", _use_new_zipfile_serialization=False)
    # The tiny sample's values, as torch reads them.
    samples = os.environ.get("PTH_SAMPLES")
    if samples:
        for name in ("tiny_zip", "tiny_legacy"):
            d = torch.load(os.path.join(samples, name + ".pth"))
            expected(d["state_dict"], os.path.join(out, "sample_" + name))
    with open(os.path.join(out, "done"), "w") as f:
        f.write("ok\n")


# ----------------------------------------------------------------------------------------------
# Full-size checkpoints in the mmagic layout (spec/mmagic.md sections 2-5), for timing.

def cyclegan_g(p, sd):
    def conv(name, o, i, k, bias=True):
        sd[p + name + ".weight"] = torch.randn(o, i, k, k) * 0.02
        if bias:
            sd[p + name + ".bias"] = torch.zeros(o)
    conv("model.0.conv", 64, 3, 7)
    conv("model.1.conv", 128, 64, 3)
    conv("model.2.conv", 256, 128, 3)
    for b in range(3, 12):
        conv("model.%d.block.0.conv" % b, 256, 256, 3)
        conv("model.%d.block.1.conv" % b, 256, 256, 3)
    sd[p + "model.12.conv.weight"] = torch.randn(256, 128, 3, 3) * 0.02
    sd[p + "model.12.conv.bias"] = torch.zeros(128)
    sd[p + "model.13.conv.weight"] = torch.randn(128, 64, 3, 3) * 0.02
    sd[p + "model.13.conv.bias"] = torch.zeros(64)
    conv("model.14.conv", 3, 64, 7)


def bn(name, c, sd):
    sd[name + ".weight"] = torch.ones(c)
    sd[name + ".bias"] = torch.zeros(c)
    sd[name + ".running_mean"] = torch.zeros(c)
    sd[name + ".running_var"] = torch.ones(c)
    sd[name + ".num_batches_tracked"] = torch.tensor(0)


def patch_d(p, sd, cin, norm):
    sd[p + "model.0.conv.weight"] = torch.randn(64, cin, 4, 4) * 0.02
    sd[p + "model.0.conv.bias"] = torch.zeros(64)
    for i, (o, c) in enumerate([(128, 64), (256, 128), (512, 256)], start=1):
        sd[p + "model.%d.conv.weight" % i] = torch.randn(o, c, 4, 4) * 0.02
        if norm == "in":
            sd[p + "model.%d.conv.bias" % i] = torch.zeros(o)
        else:
            bn(p + "model.%d.bn" % i, o, sd)
    sd[p + "model.4.weight"] = torch.randn(1, 512, 4, 4) * 0.02
    sd[p + "model.4.bias"] = torch.zeros(1)


def unet_g(p, sd):
    chans = [(3, 64), (64, 128), (128, 256), (256, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    for d, (outer, inner) in enumerate(chans):
        lp = p + "model." + "model.1." * d + "model."
        sd[lp + "0.conv.weight"] = torch.randn(inner, outer, 4, 4) * 0.02
        if d == 0:
            sd[lp + "2.conv.weight"] = torch.randn(2 * inner, outer, 4, 4) * 0.02
            sd[lp + "2.conv.bias"] = torch.zeros(outer)
        elif d < 7:
            bn(lp + "0.bn", inner, sd)
            sd[lp + "2.conv.weight"] = torch.randn(2 * inner, outer, 4, 4) * 0.02
            bn(lp + "2.bn", outer, sd)
        else:
            sd[lp + "1.conv.weight"] = torch.randn(inner, inner, 4, 4) * 0.02
            bn(lp + "1.bn", inner, sd)


def big(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    m = {"mmcv_version": "1.3.16", "time": "Thu Sep  2 16:59:05 2021", "iter": 80000, "epoch": 1,
         "config": "model = dict(type='CycleGAN')\n" * 200, "seed": 2021, "exp_name": "cyclegan"}
    sd = collections.OrderedDict()
    cyclegan_g("generators.summer.", sd)
    cyclegan_g("generators.winter.", sd)
    patch_d("discriminators.summer.", sd, 3, "in")
    patch_d("discriminators.winter.", sd, 3, "in")
    with open(os.path.join(out, "cyclegan_summer2winter.pth"), "wb") as f:
        torch.save({"meta": m, "state_dict": sd}, f)
    sd = collections.OrderedDict()
    unet_g("generators.photo.", sd)
    patch_d("discriminators.photo.", sd, 6, "bn")
    torch.save({"meta": m, "state_dict": sd}, os.path.join(out, "pix2pix_facades.pth"), _use_new_zipfile_serialization=False)
    print("cyclegan tensors", 2 * 48 + 2 * 10, "pix2pix tensors", len(sd))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--big":
        big(sys.argv[2])
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        sys.exit("usage: gen_fixtures.py OUTDIR | --big OUTDIR")
