#!/usr/bin/python3
"""tests/cli/run_cli.py: the `i2i` tool's command line and `i2i inspect` on an ONNX model.

Checks: `i2i --help` and each subcommand's --help exit 0, show the usage line as "i2i COMMAND"
and name the subcommand's arguments and options; no command, an unknown command and an unknown
option exit 2 with a message; `i2i inspect` on a small network torch exports (with metadata set
through python3-onnx) prints the op counts of the network's layers, the channels and size
multiple, the exact parameter count (torch's sum of numel), every metadata key and value, and each
convolution's output shape for a --size rounded up to the size multiple (as torch computes them);
--size values that are not positive or overflow when rounded up are refused with a message; a
missing file, a directory, junk bytes and a truncated model exit 1 with a message.
A task name is looked up through $I2I_MODEL_PATH, and an unknown one names the folders searched.
Not checked here: .pth checkpoints (tests/converter). Usage: run_cli.py BUILD_DIR WORK_DIR.
Ends with "N passed, N failed".
"""
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

build, work = sys.argv[1:3]
i2i = os.path.join(build, "converter", "i2i")
passed = failed = 0


def check(ok, name, detail=""):
    global passed, failed
    passed += bool(ok)
    failed += not ok
    print("%s %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail else ""), flush=True)


def run(*args):
    return subprocess.run([i2i] + list(args), capture_output=True, text=True, timeout=120)


def short(s):
    return s.strip().replace("\n", " | ")[:300]


# ---- help and usage errors -----------------------------------------------------------------

r = run("--help")
check(r.returncode == 0 and "Usage: i2i COMMAND" in r.stdout, "i2i --help exits 0 with a usage line",
      "rc %d %s" % (r.returncode, short(r.stdout)))
for cmd in ("translate", "inspect", "convert", "finetune", "fetch"):
    check(re.search(r"^\s+%s\s+\S" % cmd, r.stdout, re.M) is not None, "i2i --help lists " + cmd)
r = run("-h")
check(r.returncode == 0 and "Usage: i2i COMMAND" in r.stdout, "i2i -h exits 0")
r = run("--version")
check(r.returncode == 0 and re.fullmatch(r"i2i \d+\.\d+\.\d+\n", r.stdout) is not None, "i2i --version",
      short(r.stdout))
r = run()
check(r.returncode == 2 and "Usage: i2i COMMAND" in r.stderr and not r.stdout, "no command: exit 2, usage on stderr",
      "rc %d" % r.returncode)
r = run("bogus")
check(r.returncode == 2 and "unknown command 'bogus'" in r.stderr, "an unknown command: exit 2 with a message",
      "rc %d %s" % (r.returncode, short(r.stderr)))

# what each subcommand's --help must name: its arguments, then some of its options
helps = {
    "translate": ["MODEL IN OUT", "-o DIR", "--output-dir", "--backend", "--scale", "--strength", "--memory"],
    "inspect": ["FILE", "--size", "--brief", "--strict"],
    "convert": ["CHECKPOINT.pth", "--output-dir", "--channel-order", "--domains", "--task"],
    "finetune": ["MODEL DATA...", "--iters", "--resume", "--backend", "--output"],
    "fetch": ["TASK...", "--list", "--all", "--from", "--output-dir"],
}
for cmd, words in helps.items():
    for flag in ("--help", "-h"):
        r = run(cmd, flag)
        check(r.returncode == 0, "i2i %s %s exits 0" % (cmd, flag), "rc %d %s" % (r.returncode, short(r.stderr)))
    usage = r.stdout.split("\n")[1] if r.stdout.startswith("Usage:") else ""
    # GLib writes "[OPTION…]" in a UTF-8 locale and "[OPTION?]" in the C locale
    check(re.match(r"\s+i2i %s \[OPTION" % cmd, usage) is not None, "i2i %s --help: the usage line says 'i2i %s'" % (cmd, cmd),
          repr(usage))
    missing = [w for w in words if w not in r.stdout]
    check(not missing, "i2i %s --help names its arguments and options" % cmd, "missing " + ", ".join(missing))
    r = run(cmd, "--bogus-option")
    check(r.returncode == 2 and ("i2i %s:" % cmd) in r.stderr and "--bogus-option" in r.stderr,
          "i2i %s --bogus-option: exit 2 with a message" % cmd, "rc %d %s" % (r.returncode, short(r.stderr)))

# ---- the fixture: a small generator-like network torch exports ------------------------------


class Net(nn.Module):
    """Pad x3, Conv x4, InstanceNormalization x2, Relu x2, Add, ConvTranspose, LeakyRelu, Tanh."""

    def __init__(self):
        super().__init__()
        self.pad_in = nn.ReflectionPad2d(3)
        self.conv_in = nn.Conv2d(3, 8, 7)
        self.norm_in = nn.InstanceNorm2d(8, affine=True)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.norm_down = nn.InstanceNorm2d(16, affine=True)
        self.pad_res = nn.ReflectionPad2d(1)
        self.conv_res = nn.Conv2d(16, 16, 3)
        self.up = nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1)
        self.pad_out = nn.ReflectionPad2d(3)
        self.conv_out = nn.Conv2d(8, 3, 7)

    def forward(self, x):
        x = F.relu(self.norm_in(self.conv_in(self.pad_in(x))))
        y = F.relu(self.norm_down(self.down(x)))
        y = y + self.conv_res(self.pad_res(y))
        z = F.leaky_relu(self.up(y), 0.2)
        return torch.tanh(self.conv_out(self.pad_out(z)))


expected_ops = {"Pad": 3, "Conv": 4, "InstanceNormalization": 2, "Relu": 2, "Add": 1, "ConvTranspose": 1,
                "LeakyRelu": 1, "Tanh": 1}
meta = {"i2i.task": "cli-fixture", "i2i.menu_label": "CLI Fixture", "author": "tests/cli/run_cli.py",
        "note": "a value, with spaces = and commas"}

shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
torch.manual_seed(5)
net = Net().eval()
with torch.no_grad():
    for p in net.parameters():
        p.add_(torch.randn_like(p) * 0.05)
n_params = sum(p.numel() for p in net.parameters())
model = os.path.join(work, "model.onnx")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.onnx.export(net, torch.zeros(1, 3, 64, 64), model, opset_version=17, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "n", 2: "h", 3: "w"},
                                                             "output": {0: "n", 2: "h", 3: "w"}})
om = onnx.load(model)
for k, v in meta.items():
    e = om.metadata_props.add()
    e.key, e.value = k, v
onnx.save(om, model)

# the convolutions' output shapes torch computes for a 52 x 52 input (--size 51, multiple 2)
conv_shapes = []
hooks = [m.register_forward_hook(lambda m, i, o: conv_shapes.append(list(o.shape)))
         for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
with torch.no_grad():
    out_shape = list(net(torch.zeros(1, 3, 52, 52)).shape)
for h in hooks:
    h.remove()

# ---- i2i inspect ----------------------------------------------------------------------------

r = run("inspect", model, "--size", "51")
check(r.returncode == 0 and not r.stderr, "i2i inspect model.onnx exits 0", "rc %d %s" % (r.returncode, short(r.stderr)))
out = r.stdout
m = re.search(r"^\s+ops:\s+(.*)$", out, re.M)
ops = {k: int(v) for k, v in re.findall(r"(\w+) x(\d+)", m.group(1))} if m else {}
check(ops == expected_ops, "op counts", "got %s" % ops)
m = re.search(r"^\s+graph:\s+(\d+) compute nodes", out, re.M)
check(m is not None and int(m.group(1)) == sum(expected_ops.values()), "compute node count",
      m.group(0).strip() if m else "no graph line")
m = re.search(r"^\s+parameters:\s+([\d,]+)$", out, re.M)
got = int(m.group(1).replace(",", "")) if m else -1
check(got == n_params, "parameter count equals torch's sum of numel", "i2i %d, torch %d" % (got, n_params))
check(m is not None and m.group(1) == "{:,}".format(n_params), "parameter count grouped by thousands",
      m.group(1) if m else "")
check(re.search(r"^\s+channels:\s+3 in, 3 out$", out, re.M) is not None, "channels 3 in, 3 out")
check(re.search(r"^\s+size multiple:\s+2\b", out, re.M) is not None, "size multiple 2")
m = re.search(r"^metadata \((\d+)\):$", out, re.M)
check(m is not None and int(m.group(1)) == len(meta), "metadata count", m.group(0) if m else "no metadata line")
for k, v in meta.items():
    check(re.search(r"^  %s = %s$" % (re.escape(k), re.escape(v)), out, re.M) is not None, "metadata " + k)
check("nodes (output shapes for a 1x3x52x52 input):" in out, "--size 51 is rounded up to the size multiple (52)")
nodes = re.findall(r"^\s+\d+ (\w+)\s+.*\[(-?\d+), (-?\d+), (-?\d+), (-?\d+)\]$", out, re.M)
check(len(nodes) == sum(expected_ops.values()), "one line per compute node", "%d lines" % len(nodes))
got_conv = [[int(x) for x in n[1:]] for n in nodes if n[0] in ("Conv", "ConvTranspose")]
check(got_conv == conv_shapes, "convolution output shapes equal torch's", "i2i %s, torch %s" % (got_conv, conv_shapes))
check(bool(nodes) and [int(x) for x in nodes[-1][1:]] == out_shape, "the output shape equals torch's",
      "%s vs %s" % (nodes[-1][1:] if nodes else None, out_shape))

r = run("inspect", "--brief", model)
check(r.returncode == 0 and "ops:" in r.stdout and "nodes (output shapes" not in r.stdout, "--brief omits the node list")
r = run("inspect", "-s", "64", model)
check(r.returncode == 0 and "1x3x64x64 input" in r.stdout, "-s 64 (already a multiple) is kept")

# --size: refused when not positive, and when rounding up to the multiple overflows an int
for bad in ("0", "-4"):
    r = run("inspect", "--size", bad, model)
    check(r.returncode == 2 and "i2i inspect:" in r.stderr and "--size" in r.stderr,
          "--size %s: exit 2 with a message" % bad, "rc %d %s" % (r.returncode, short(r.stderr)))
r = run("inspect", "--size", "abc", model)
check(r.returncode == 2 and "i2i inspect:" in r.stderr, "--size abc: exit 2 with a message", short(r.stderr))
r = run("inspect", "--size", "2147483647", model)
check(r.returncode == 1 and "2147483647" in r.stderr and "multiple" in r.stderr and "nodes (output shapes" not in r.stdout,
      "--size 2147483647: overflow refused with a message (exit 1)", "rc %d %s" % (r.returncode, short(r.stderr)))
r = run("inspect", "--size", "2147483646", model)
check(r.returncode == 0 and "1x3x2147483646x2147483646" not in r.stdout and "fail" in r.stdout,
      "--size 2147483646 (a multiple): no crash, the shapes are refused",
      "rc %d %s" % (r.returncode, short(r.stdout[-300:])))

# ---- model lookup by task name (engine/src/lookup.c) -----------------------------------------

models = os.path.join(work, "models")
os.makedirs(models)
shutil.copy(model, os.path.join(models, "fixture.onnx"))
np_in = os.path.join(work, "in.npy")
np.save(np_in, np.zeros((8, 8, 3), np.float32))
nope = os.path.join(work, "nope") + "/"
env = dict(os.environ, I2I_MODEL_PATH="::%s:%s/" % (nope, models), XDG_DATA_HOME=os.path.join(work, "xdg"))


def run_env(*args):
    return subprocess.run([i2i] + list(args), capture_output=True, text=True, timeout=120, env=env)


r = run_env("translate", "fixture", np_in, os.path.join(work, "out.npy"), "--backend", "cpu")
check(r.returncode == 0 and os.path.exists(os.path.join(work, "out.npy")),
      "a task name is found in $I2I_MODEL_PATH (empty parts, trailing '/')", short(r.stderr))
r = run_env("translate", "no-such-task", np_in, os.path.join(work, "out2.npy"))
looked = "looked for no-such-task.onnx in %s, %s/, %s, " % (nope, models, os.path.join(work, "xdg", "i2i", "models"))
check(r.returncode == 1 and looked in r.stderr, "an unknown task: the message names the folders in search order",
      short(r.stderr))

# ---- bad files -------------------------------------------------------------------------------

junk = os.path.join(work, "junk.onnx")
with open(junk, "wb") as f:
    f.write(bytes((i * 37 + 11) % 256 for i in range(300)))
data = open(model, "rb").read()
truncated = os.path.join(work, "truncated.onnx")
with open(truncated, "wb") as f:
    f.write(data[: len(data) // 2])
empty = os.path.join(work, "empty.onnx")
open(empty, "wb").close()
cases = [("missing file", os.path.join(work, "absent.onnx"), "absent.onnx"),
         ("a directory", work, "directory"),
         ("junk bytes", junk, "junk.onnx"),
         ("a truncated model", truncated, "truncated.onnx"),
         ("an empty file", empty, "empty.onnx")]
for what, path, word in cases:
    r = run("inspect", path)
    check(r.returncode == 1 and r.stderr.startswith("i2i inspect: ") and word in r.stderr and not r.stdout,
          "inspect on %s: exit 1 with a message" % what, "rc %d %s" % (r.returncode, short(r.stderr)))
r = run("inspect")
check(r.returncode == 2 and "i2i inspect:" in r.stderr, "inspect without FILE: exit 2")
r = run("inspect", model, model)
check(r.returncode == 2 and "i2i inspect:" in r.stderr, "inspect with two files: exit 2")

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
