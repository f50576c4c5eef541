#!/usr/bin/python3
"""tests/train/run_parity.py: the engine's CycleGAN and Pix2Pix training steps against PyTorch.

For every case of torch_train.py (small networks: ResNet 8 channels 2 blocks, U-Net depth 5 and
6 (one dropout level), PatchGAN 8 channels; 32x32 and 64x64; batch 1, 2 and 4; the pool with
forced choices; Pix2Pix dropout from the Philox counter with the step) the same checkpoint,
images and choices go through the engine (`train_parity`, float32) and PyTorch (float64).

Per step k, against the reference step taken from the engine's state after step k-1 (see
torch_train.py for why): every loss (relative error <= 1e-5); every parameter gradient (per
tensor max |g - g_ref| / max |g_ref| <= 1e-3); after the step every parameter, running statistic
and Adam moment (max |d| / (max |ref| of the tensor) <= 1e-3, so Adam's lr-sized step on every
weight is checked to 1e-3 of its size). Biases in front of an InstanceNorm have an exact
gradient of zero: both sides hold rounding noise, which Adam turns into steps of up to lr; their
gradient must stay below 1e-5 of the network's largest and they are left out of the value check.
The free run of 5 steps from the same start is compared too (losses within 1e-2 relative): it
is ill-conditioned, so its figure is what to expect from any float32 implementation, not a
property of this one.

Kinks: a ReLU input within rounding of zero passes or blocks one pixel's gradient depending on
the last bit, which moves a whole weight gradient of these small networks by up to a few
percent (with weights multiplied by 1 + 1e-6 N(0,1) the float64 reference itself moves by up to
6%). A gradient above 1e-3 is therefore accepted (and listed) only when the reference, re-run
from weights with that rounding-sized noise (4 probes), moves at least half as much and the
error stays below 0.1; at most 40% of a case's steps may have such gradients (Winograd's
rounding, a little larger than a direct convolution's, crosses a few more kinks).

Usage: run_parity.py BUILD_DIR SOURCE_DIR WORK_DIR [CASE...]. Ends with "N passed, N failed". A
passing case's dumps are removed as soon as it is checked; a failing case's stay in WORK_DIR.
"""
import os
import shutil
import subprocess
import sys

import numpy as np

build, src, work = sys.argv[1:4]
only = sys.argv[4:]
here = os.path.join(src, 'tests', 'train')
sys.path.insert(0, here)
import torch_train  # noqa: E402

parity = os.environ.get('I2I_TRAIN_PARITY') or os.path.join(build, 'tests', 'train', 'train_parity')
PROBES = 4
passed = failed = 0


def check(ok, name, detail=''):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print('%s %s%s' % ('ok  ' if ok else 'FAIL', name, (': ' + detail) if detail else ''), flush=True)


def run(args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode:
        print(r.stdout[-3000:], r.stderr[-3000:])
    return r.returncode == 0


lim_grad = 1e-3
n_kink = n_grad = 0
for case in only or list(torch_train.CASES):
    failed_before = failed
    c = torch_train.CASES[case]
    ref_root, eng_dir = os.path.join(work, 'ref'), os.path.join(work, 'engine', case)
    cdir = os.path.join(ref_root, case)
    tt = ['/usr/bin/python3', os.path.join(here, 'torch_train.py'), ref_root, case]
    if not run(tt):
        check(False, case + ': torch reference (free run)')
        continue
    if not run([parity, cdir, eng_dir, '2']):
        check(False, case + ': engine run')
        continue
    if not run(tt + ['--forced', eng_dir, '--probes', str(PROBES)]):
        check(False, case + ': torch reference (per step)')
        continue
    print('%s: %s %dx%d batch %d, %d steps%s' % (case, c['kind'], c['size'], c['size'], c['batch'], c['steps'],
                                                  ', identity 0' if c.get('identity', 0.5) == 0 else ''))
    inert = set()
    if c['kind'] == 'cyclegan':
        last = 'model.%d.conv.bias' % (c['blocks'] + 5)
        for role in ('G', 'G_REV'):
            for i in range(c['blocks'] + 5):
                inert.add('%s/model.%d.conv.bias' % (role, i))
                for j in (0, 1):
                    inert.add('%s/model.%d.block.%d.conv.bias' % (role, i, j))
            inert.discard('%s/%s' % (role, last))
        for role in ('D', 'D_REV'):
            for i in range(1, 4):
                inert.add('%s/model.%d.conv.bias' % (role, i))
    worst = {k: (0.0, '') for k in ('loss', 'grad', 'value', 'adam', 'inert', 'free', 'kink')}
    kinks = []

    def note(slot, e, where):
        if e >= worst[slot][0]:
            worst[slot] = (e, where)

    complete = True
    for s in range(c['steps']):
        ref = np.load(os.path.join(cdir, 'forced_step%d.npz' % s))
        free = np.load(os.path.join(cdir, 'free_step%d.npz' % s))
        probes = [np.load(os.path.join(cdir, 'probe%d_step%d.npz' % (j, s))) for j in range(1, PROBES + 1)]
        el, et = torch_train.read_engine(os.path.join(eng_dir, 'step%d.txt' % s), os.path.join(eng_dir, 'step%d.bin' % s))
        for k in ref.files:
            if not k.startswith('loss.'):
                continue
            if k not in el:
                complete = False
                print('    the engine reports no %s' % k)
                continue
            b, fb = float(ref[k]), float(free[k])
            note('loss', abs(el[k] - b) / max(abs(b), 1e-9), '%s step %d' % (k, s))
            note('free', abs(el[k] - fb) / max(abs(fb), 1e-9), '%s step %d' % (k, s))
        gmax = {}
        for k in ref.files:
            if '/grad/' in k:
                role = k.split('/')[0]
                gmax[role] = max(gmax.get(role, 0.0), float(np.abs(ref[k]).max()))
        excused = set()
        order = sorted((k for k in ref.files if not k.startswith('loss.')), key=lambda k: '/grad/' not in k)
        for k in order:
            role, kind, key = k.split('/', 2)
            if k not in et:
                complete = False
                print('    the engine has no %s' % k)
                continue
            a, b = et[k].astype(np.float64), ref[k].reshape(-1).astype(np.float64)
            if a.shape != b.shape:
                complete = False
                print('    %s: %d values, torch %d' % (k, a.size, b.size))
                continue
            where = '%s step %d' % (k, s)
            if role + '/' + key in inert:
                if kind == 'grad':
                    note('inert', max(np.abs(a).max(), np.abs(b).max()) / max(gmax[role], 1e-30), where)
                continue
            if kind in ('adam_m', 'adam_v', 'value') and role + '/' + key in excused:
                continue  # the moments and the update follow the excused gradient
            e = np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)
            if kind == 'grad':
                n_grad += 1
            if kind == 'grad' and e > lim_grad:
                # rounding-sized noise in the reference moves this gradient as much: a kink
                sens = max(np.abs(p[k].reshape(-1) - b).max() for p in probes) / max(np.abs(b).max(), 1e-30)
                if e <= 2 * sens and e <= 0.1:
                    kinks.append('%s (%.1e, rounding moves the reference by %.1e)' % (where, e, sens))
                    n_kink += 1
                    excused.add(role + '/' + key)
                    note('kink', e, where)
                    continue
            note({'grad': 'grad', 'value': 'value', 'adam_m': 'adam', 'adam_v': 'adam'}[kind], e, where)
    lim = dict(loss=1e-5, grad=lim_grad, value=1e-3, adam=1e-3, inert=1e-5, free=1e-2)
    desc = dict(loss='losses, max relative error', grad='gradients, max per-tensor relative error',
                value='parameters and running statistics after each step, max per-tensor relative error',
                adam='Adam moments after each step, max per-tensor relative error',
                inert='zero-by-construction bias gradients (before InstanceNorm), max |g| / max gradient of the network',
                free='free run of %d steps: losses, max relative difference' % c['steps'])
    check(complete, '%s: every loss and tensor compared' % case)
    for k in kinks:
        print('    kink-sensitive: %s' % k)
    kink_steps = sorted({k.split(' step ')[1].split(' ')[0] for k in kinks})
    check(len(kink_steps) <= 0.4 * c['steps'], '%s: steps with kink-sensitive gradients: %d of %d (at most 40%%)' %
          (case, len(kink_steps), c['steps']))
    for k in ('loss', 'grad', 'value', 'adam', 'inert', 'free'):
        if k == 'inert' and not inert:
            continue
        e, where = worst[k]
        check(e <= lim[k], '%s: %s %.2e (limit %.0e) at %s' % (case, desc[k], e, lim[k], where))
    if failed == failed_before:  # a passing case's dumps (up to 0.5 GB) go; a failing one's stay to look at
        shutil.rmtree(cdir, ignore_errors=True)
        shutil.rmtree(eng_dir, ignore_errors=True)
print('kink-sensitive gradient comparisons: %d of %d' % (n_kink, n_grad))
print('%d passed, %d failed' % (passed, failed))
sys.exit(1 if failed else 0)
