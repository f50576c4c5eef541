#!/usr/bin/env python3
"""tests/gpu/export_models.py: the generators of the GPU parity run and bench/gpu as PyTorch
modules and as ONNX files with the same weights: the mmagic replica (tests/fixtures) with fixed
seeds, exported by torch.onnx.export(..., dynamo=False) at opset 17 (ResNet eval; U-Net in its
batch-statistics form, Dropout off). Not a reference oracle (tests/fixtures/make_onnx.py is).
Usage: export_models.py OUTDIR [--small] [--i2i TOOL]; importable: build(tag), TAGS.
"""
# If the TorchScript exporter is missing (a future torch), the state dict is saved as an mmagic
# checkpoint and converted with `i2i convert` (--i2i TOOL). torch 1.13 has no `dynamo` argument
# and exports the same way.
import argparse
import inspect
import os
import subprocess
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures'))

import torch  # noqa: E402

import mmagic_replica as mr  # noqa: E402

SPECS = {
    'resnet9_c64': ('resnet', dict(base=64, num_blocks=9), 101),
    'unet8_c64': ('unet', dict(base=64, num_down=8), 102),
    'resnet2_c8': ('resnet', dict(base=8, num_blocks=2), 103),
    'unet8_c8': ('unet', dict(base=8, num_down=8), 104),
}
TAGS = list(SPECS)


def build(tag):
    """The torch generator of `tag` on the CPU, float32, in its inference mode: ResNet eval,
    U-Net train (batch statistics) with Dropout off (the engine's deterministic mode)."""
    family, kw, seed = SPECS[tag]
    if family == 'resnet':
        m = mr.build_resnet(seed=seed, **kw)
        mr.randomize_biases(m, seed)
        return m.eval()
    m = mr.build_unet(seed=seed, **kw)
    mr.randomize_biases(m, seed)
    mr.calibrate_bn(m, seed=seed + 1000)
    return mr.set_pix2pix_mode(m, 'deterministic')


def export_onnx(model, path, family):
    kw = dict(opset_version=17, input_names=['input'], output_names=['output'],
              dynamic_axes={'input': {0: 'batch', 2: 'height', 3: 'width'},
                            'output': {0: 'batch', 2: 'height', 3: 'width'}},
              training=(torch.onnx.TrainingMode.EVAL if family == 'resnet'
                        else torch.onnx.TrainingMode.PRESERVE))
    if 'dynamo' in inspect.signature(torch.onnx.export).parameters:
        kw['dynamo'] = False
    state = {k: v.clone() for k, v in model.state_dict().items()}
    side = 64 if family == 'resnet' else 256   # the smallest traceable size; the axes stay dynamic
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model, torch.zeros(1, 3, side, side), path, **kw)
    model.load_state_dict(state)   # tracing in train mode moves BatchNorm running statistics


def convert_pth(model, tag, outdir, tool):
    """Fallback: an mmagic-layout checkpoint converted by `i2i convert`."""
    pth = os.path.join(outdir, tag + '.pth')
    sd = mr.translation_state_dict([('b', model)], [])
    torch.save({'state_dict': sd, 'meta': {}}, pth)
    subprocess.run([tool, 'convert', pth, '-o', outdir, '--channel-order', 'rgb', '--task', tag],
                   check=True)
    return os.path.join(outdir, tag + '.onnx')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('outdir')
    ap.add_argument('--small', action='store_true', help='only the 8-channel models')
    ap.add_argument('--i2i', help='the i2i tool, for the .pth fallback')
    a = ap.parse_args(argv)
    os.makedirs(a.outdir, exist_ok=True)
    for tag in TAGS:
        if a.small and '_c64' in tag:
            continue
        family = SPECS[tag][0]
        model = build(tag)
        path = os.path.join(a.outdir, tag + '.onnx')
        try:
            export_onnx(model, path, family)
            how = 'torch.onnx.export (TorchScript, opset 17)'
        except Exception as e:  # noqa: BLE001 - any exporter failure takes the fallback
            if not a.i2i:
                raise
            print('export of %s failed (%s); converting a checkpoint instead' % (tag, e))
            path = convert_pth(model, tag, a.outdir, a.i2i)
            how = 'i2i convert'
        print('%s -> %s (%s, torch %s)' % (tag, path, how, torch.__version__))
    return 0


if __name__ == '__main__':
    sys.exit(main())
