#!/usr/bin/python3
"""bench/train/torch_train_bench.py OUTDIR SIZE ITERS THREADS...: PyTorch's time per training
iteration for mmagic's CycleGAN step (tests/train/torch_train.py's TorchTrainer, float32, the
full-size networks: two ResNet generators with 9 blocks and 64 channels, two PatchGANs with 64),
and the same networks as an mmagic-layout checkpoint (OUTDIR/cyclegan.pth, RGB) for the engine.
I2I_BENCH_MODELS="cyclegan pix2pix" adds mmagic's Pix2Pix step (the U-Net with 8 downsamplings
and 64 channels, the 6-channel PatchGAN with BatchNorm; OUTDIR/pix2pix.pth).

Times: one warm-up iteration, then ITERS iterations per thread count, each timed on its own;
the median is reported. Writes OUTDIR/torch.json. Not a test: it prints figures only.
I2I_BENCH_DEVICE=cuda (tests/gpu/run): on the GPU instead, threads ignored, two rows: float32 with
TF32 off (the engine's precision) and PyTorch's default, TF32 convolutions; cudnn.benchmark on in
both, each iteration timed to a torch.cuda.synchronize().
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', '..', 'tests', 'train'))
sys.path.insert(0, os.path.join(here, '..', '..', 'tests', 'fixtures'))
import mmagic_replica as mr  # noqa: E402
import torch_train as tt  # noqa: E402

out, size, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
threads = [int(t) for t in sys.argv[4:]] or [2]
os.makedirs(out, exist_ok=True)
tt.DTYPE = torch.float32


def nets(kind):
    if kind == 'pix2pix':
        return {'G': mr.build_unet(64, 8, seed=1), 'D': mr.build_patch_disc(6, 64, 'BN', seed=3)}
    return {'G': mr.build_resnet(64, 9, seed=1), 'G_REV': mr.build_resnet(64, 9, seed=2),
            'D': mr.build_patch_disc(3, 64, 'IN', seed=3), 'D_REV': mr.build_patch_disc(3, 64, 'IN', seed=4)}


def checkpoint(kind):
    path = os.path.join(out, kind + '.pth')
    if not os.path.exists(path):
        n = nets(kind)
        if kind == 'pix2pix':
            sd = mr.translation_state_dict([('photo', n['G'])], [('photo', n['D'])])
        else:
            sd = mr.translation_state_dict([('y', n['G']), ('x', n['G_REV'])], [('y', n['D']), ('x', n['D_REV'])])
        torch.save({'state_dict': sd}, path)


res = []
gpu = os.environ.get('I2I_BENCH_DEVICE') == 'cuda'
if gpu:
    torch.backends.cudnn.benchmark = True
    runs = [('pytorch-cuda', 'fp32', 0, False), ('pytorch-cuda', 'tf32', 0, True)]
else:
    runs = [('pytorch', 'fp32', t, False) for t in threads]
for kind in os.environ.get('I2I_BENCH_MODELS', 'cyclegan').split():
    checkpoint(kind)
    c = dict(kind=kind, size=size, batch=1, iters=1000, pool=50)
    rng = np.random.default_rng(0)
    for runtime, precision, t, tf32 in runs:
        if gpu:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        else:
            torch.set_num_threads(t)
        trainer = tt.TorchTrainer(c, nets(kind), {})
        if gpu:
            for n_ in trainer.nets.values():
                n_.cuda()
        times = []
        for it in range(iters + 1):
            a = torch.from_numpy(rng.random((1, 3, size, size), dtype=np.float32) * 2 - 1)
            if gpu:
                a = a.cuda()
                torch.cuda.synchronize()
            b = -a
            t0 = time.perf_counter()
            losses = trainer.step(it, a, b)
            if gpu:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            print('%s %s %s %d threads=%d iteration %d: %.3f s (loss G %.3f)' % (runtime, precision, kind, size, t, it, dt,
                                                                                losses['g']), flush=True)
            if it:
                times.append(dt)
        res.append({'runtime': runtime, 'precision': precision, 'model': kind, 'size': size, 'batch': 1, 'threads': t,
                    'times': times, 'median': statistics.median(times), 'mkldnn': torch.backends.mkldnn.is_available()})
json.dump({'torch': torch.__version__, 'results': res}, open(os.path.join(out, 'torch.json'), 'w'), indent=1)
