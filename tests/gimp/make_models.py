#!/usr/bin/python3
"""tests/gimp/make_models.py OUTDIR [--full]: the checkpoints the GIMP tests and timings need.

What it is: a subset of tests/fixtures/make_checkpoints.py (same functions, same arguments as
its main()), so the GIMP tests do not wait for all twenty fixture files: the narrow (8 base
channels) summer2winter CycleGAN in the published mmagic layout and the narrow facades Pix2Pix.
`i2i convert` turns them into winter2summer.onnx, summer2winter.onnx and a U-Net model;
overflow.onnx, two convolutions whose output overflows float32 (a bad model for the tests); and
overrange.onnx, one 1x1 convolution without tanh (output = 2 x input, finite but past [-1,1]). --full
writes instead the full-size (64 channels, 9 blocks, 113 MB) summer2winter file under its
published name, for timings with the real architecture (random weights).
What it is not: a new fixture format; the files are make_checkpoints.py's. Run it with Debian's
/usr/bin/python3 (torch). Prints the file names, one a line.
"""
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'fixtures'))

import torch  # noqa: E402

import fixture_common as fc  # noqa: E402
import make_checkpoints as mc  # noqa: E402


def overrange_model():
    """One 1x1 convolution, output = 2 x input per channel (no tanh): in the model's [-1,1] range an input
    below -0.5 gives less than -1 and one above 0.5 more than 1, i.e. pixel values 2p - 0.5 past 0..1 for
    p < 0.25 and p > 0.75. The weights are powers of two, so the result is exact in float32."""
    m = torch.nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        m.weight.zero_()
        for c in range(3):
            m.weight[c, c, 0, 0] = 2.0
        m.bias.zero_()
    return m


def main():
    args = sys.argv[1:]
    full = '--full' in args
    args = [a for a in args if a != '--full']
    if len(args) != 1:
        sys.exit('usage: make_models.py OUTDIR [--full]')
    out = args[0]
    os.makedirs(out, exist_ok=True)
    warnings.simplefilter('ignore')
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    ctx = {'outdir': out, 'refs': mc.Refs(out)}
    t2021 = 'Thu Sep  2 16:59:32 2021'
    if full:
        e = mc.cyclegan_entry(
            ctx, file='cyclegan_lsgan_resnet_in_1x1_246200_summer2winter_convert-bgr_'
                      '20210902_165932-fcf08dc1.pth',
            layout='mmagic', container='zip', order='bgr', name_rule="'convert-bgr' in the name",
            domains=('summer', 'winter'), base=64, blocks=9, seed=11, variant=0, iters=246200,
            time_str=t2021, exp_name='cyclegan_summer2winter',
            config='cyclegan_lsgan_resnet_in_1x1_246200_summer2winter.py', published=True)
        print(os.path.join(out, e['file']))
        return
    cyc = mc.cyclegan_entry(
        ctx, file='cyclegan_lsgan_resnet_in_1x1_246200_summer2winter_convert-bgr_'
                  '20210902_165932-00000008.pth',
        layout='mmagic', container='zip', order='bgr', name_rule="'convert-bgr' in the name",
        domains=('summer', 'winter'), seed=31, variant=0, iters=246200, time_str=t2021,
        exp_name='cyclegan_summer2winter', config='cyclegan_summer2winter.py')
    p2p = mc.pix2pix_entry(
        ctx, file='pix2pix_vanilla_unet_bn_1x1_80k_facades_20210902_170442-00000008.pth',
        layout='mmagic', container='zip', order='bgr',
        name_rule='mmgen 2021 file (2021-09-02 refactor date in the name): BGR-native',
        domains=('mask', 'photo'), seed=61, variant=1, iters=80000, time_str=t2021,
        exp_name='pix2pix_facades', config='pix2pix_vanilla_unet_bn_facades_b1x1_80k.py')
    for e in (cyc, p2p):
        print(os.path.join(out, e['file']))
    # a model whose finite weights overflow float32 (inf everywhere): the plug-in must refuse its
    # result, not write inf into a float layer
    print(fc.export_image_model(fc.overflowing_model(), os.path.join(out, 'overflow.onnx')))
    # a model without tanh whose finite output leaves [-1,1]: a float layer's result is clamped to 0..1
    print(fc.export_image_model(overrange_model(), os.path.join(out, 'overrange.onnx')))


if __name__ == '__main__':
    main()
