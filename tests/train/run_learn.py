#!/usr/bin/python3
"""tests/train/run_learn.py: `i2i finetune` end to end on the CPU.

A learnable paired task (B is the colour-inverted A, 64x64 smooth random pictures, side by
side) and a Pix2Pix checkpoint with an 8-channel U-Net of depth 6 and no discriminator (a new
one starts from N(0, 0.02)):
  - 200 iterations cut the L1 term by at least half (mean of the first 10 iterations against the
    last 10, from the loss log);
  - a run stopped at iteration 100 and resumed from its state file ends with parameters
    bit-identical to the uninterrupted run (same --threads);
  - the output ONNX loads and runs through `i2i translate`, and moves a held-out picture
    towards its inverse; it carries its own task name, the fine-tuned label and its origin;
  - bad data is reported and skipped (unreadable, grayscale, too small, not a pair), an empty
    folder is refused, two folders of mismatched names are reported;
  - Ctrl-C lets the step in progress finish, writes the state and exits 130 with a resume hint;
    resuming gives the uninterrupted run's parameters bit for bit;
  - a diverging run (learning rate 1e30) stops with a message and keeps the last good state;
  - CycleGAN: a .pth with both directions fine-tunes into both generators and discriminators,
    whose files name each other, and fine-tuning again from those ONNX files finds them;
  - nothing of an earlier run is lost: the same command again (its state, its model) is refused
    before training, pointing to --resume and --overwrite; an unwritable output folder and
    out-of-range options are refused up front, naming them; files that are not pictures i2i
    reads are reported as skipped; Ctrl-C twice still saves the state, three times quits at once
    and leaves no temporary; a state naming an output outside its folder, or lacking Adam
    moments, is refused.

Usage: run_learn.py BUILD_DIR SOURCE_DIR WORK_DIR. Ends with "N passed, N failed".
"""
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image

build, src, work = sys.argv[1:4]
i2i = os.environ.get('I2I_TOOL') or os.path.join(build, 'converter', 'i2i')
parity = os.environ.get('I2I_TRAIN_PARITY') or os.path.join(build, 'tests', 'train', 'train_parity')
sys.path.insert(0, os.path.join(src, 'tests', 'fixtures'))
passed = failed = 0


def check(ok, name, detail=''):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print('%s %s%s' % ('ok  ' if ok else 'FAIL', name, (': ' + detail) if detail else ''), flush=True)


def run(args, **kw):
    env = dict(os.environ, I2I_BACKEND='cpu', I2I_NO_PROGRESS='1', XDG_DATA_HOME=os.path.join(work, 'xdg'))
    return subprocess.run(args, capture_output=True, text=True, env=env, **kw)


def smooth(rng, size):
    low = rng.random((size // 8, size // 8, 3))
    img = np.array(Image.fromarray((low * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float64) / 255
    return np.clip(img + 0.03 * rng.standard_normal(img.shape), 0, 1)


def l1_column(path, col):
    rows = list(csv.DictReader(open(path)))
    return [float(r[col]) for r in rows], [int(r['iteration']) for r in rows]


shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
# ---- data: side-by-side pairs A | B with B = 1 - A, and some bad files --------------------------
rng = np.random.default_rng(3)
pairs = os.path.join(work, 'pairs')
os.makedirs(pairs)
for i in range(24):
    a = smooth(rng, 64)
    both = np.concatenate([a, 1 - a], axis=1)
    Image.fromarray((both * 255 + 0.5).astype(np.uint8)).save(os.path.join(pairs, 'p%02d.png' % i))
Image.fromarray((rng.random((64, 128)) * 255).astype(np.uint8), 'L').save(os.path.join(pairs, 'gray.png'))
Image.fromarray((rng.random((20, 40, 3)) * 255).astype(np.uint8)).save(os.path.join(pairs, 'tiny.png'))
Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(os.path.join(pairs, 'square.png'))
open(os.path.join(pairs, 'broken.png'), 'wb').write(b'\x89PNG\r\n\x1a\nthis is not a png')
held = smooth(rng, 64)
Image.fromarray((held * 255 + 0.5).astype(np.uint8)).save(os.path.join(work, 'held.png'))
# ---- the model: a Pix2Pix checkpoint without a discriminator ----------------------------------
import torch  # noqa: E402

import mmagic_replica as mr  # noqa: E402

g = mr.randomize_biases(mr.build_unet(8, 6, True, seed=31), 31)
ckpt = os.path.join(work, 'p2p_small.pth')
torch.save({'state_dict': mr.translation_state_dict([('photo', g)], [])}, ckpt)

common = ['--channel-order', 'rgb', '--size', '64', '--iters', '200', '--threads', '2', '--seed', '5',
          '--sample-every', '100', '--save-every', '50', '-o', 'learned']
# ---- 1. learning ----------------------------------------------------------------------------
w1, o1 = os.path.join(work, 'w1'), os.path.join(work, 'out1')
r = run([i2i, 'finetune', ckpt, pairs, '--work-dir', w1, '--output-dir', o1] + common)
check(r.returncode == 0, 'finetune 200 iterations', r.stderr[-1500:] if r.returncode else '')
for bad, why in (('gray.png', 'grayscale'), ('tiny.png', 'too small'), ('square.png', 'not a side-by-side pair'),
                 ('broken.png', '')):
    check(bad in r.stderr and why in r.stderr, 'bad data reported and skipped: %s' % bad)
check('24 pairs' in r.stderr and '4 skipped' in r.stderr, 'data summary: 24 pairs, 4 skipped',
      [line for line in r.stderr.splitlines() if 'pairs' in line][:1].__repr__())
check('new ones start from N(0, 0.02)' in r.stderr, 'missing discriminator reported and built')
log = os.path.join(w1, 'losses.csv')
if os.path.exists(log):
    l1, its = l1_column(log, 'loss_l1')
    first, last = float(np.mean(l1[:10])), float(np.mean(l1[-10:]))
    check(len(l1) == 200 and its == list(range(200)), 'loss log has iterations 0..199')
    check(last <= 0.5 * first, 'L1 cut by at least half in 200 iterations',
          'first 10: %.3f, last 10: %.3f (ratio %.2f)' % (first, last, last / first))
    print('    learning curve (L1 x100, mean of 20 iterations): ' +
          ' '.join('%.2f' % np.mean(l1[i:i + 20]) for i in range(0, 200, 20)))
else:
    check(False, 'loss log written')
check(os.path.exists(os.path.join(w1, 'samples', 'iter_0000100.png')) and
      os.path.exists(os.path.join(w1, 'samples', 'iter_0000200.png')), 'sample images every 100 iterations')
out = os.path.join(o1, 'learned.onnx')
check(os.path.exists(out) and os.path.exists(os.path.join(o1, 'learned.D.onnx')), 'learned.onnx and learned.D.onnx written')
# ---- 2. the result runs through `i2i translate` and carries its metadata ----------------------
r = run([i2i, 'translate', out, os.path.join(work, 'held.png'), os.path.join(work, 'held_out.png'),
         '--pix2pix-mode', 'deterministic', '--scale', '0'])
check(r.returncode == 0, 'i2i translate runs the fine-tuned model', r.stderr[-800:])
if r.returncode == 0:
    y = np.array(Image.open(os.path.join(work, 'held_out.png')).convert('RGB'), np.float64) / 255
    before, after = np.abs(held - (1 - held)).mean(), np.abs(y - (1 - held)).mean()
    check(after < 0.5 * before, 'held-out picture moved towards its inverse',
          'mean |out - inverse| %.3f, |in - inverse| %.3f' % (after, before))
r = run([i2i, 'inspect', out])
check('learned' in r.stdout and '(fine-tuned)' in r.stdout and 'finetune_iterations' in r.stdout,
      'metadata: task, label, origin', r.stdout[-600:] if r.returncode == 0 else r.stderr[-600:])
# ---- 3. stop at 100, resume: bit-identical ----------------------------------------------------
w2, o2 = os.path.join(work, 'w2'), os.path.join(work, 'out2')
r = run([i2i, 'finetune', ckpt, pairs, '--work-dir', w2, '--output-dir', o2, '--stop-at', '100'] + common)
check(r.returncode == 0 and 'stopped at iteration 100' in r.stderr, 'run stopped at iteration 100', r.stderr[-800:])
r = run([i2i, 'finetune', '--resume', os.path.join(w2, 'state.i2istate'), '--threads', '2'])
check(r.returncode == 0 and 'resuming' in r.stderr, 'resumed to 200', r.stderr[-800:])
for f in ('learned.onnx', 'learned.D.onnx'):
    a, b = os.path.join(o1, f), os.path.join(o2, f)
    if os.path.exists(a) and os.path.exists(b):
        r = run([parity, 'onnx-equal', a, b])
        check(r.returncode == 0, 'resumed %s bit-identical to the uninterrupted run' % f, (r.stdout + r.stderr).strip())
    else:
        check(False, 'resumed %s written' % f)
l1a, _ = l1_column(log, 'loss_l1')
l1b, itb = l1_column(os.path.join(w2, 'losses.csv'), 'loss_l1')
check(itb == list(range(200)) and l1a == l1b, 'resumed loss log equals the uninterrupted one')
# ---- 3b. Ctrl-C: the step finishes, the state is written, resume is bit-identical ---------------
w6, o6 = os.path.join(work, 'w6'), os.path.join(work, 'out6')
env6 = dict(os.environ, I2I_BACKEND='cpu', I2I_NO_PROGRESS='1', XDG_DATA_HOME=os.path.join(work, 'xdg'))
proc = subprocess.Popen([i2i, 'finetune', ckpt, pairs, '--work-dir', w6, '--output-dir', o6] + common,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env6)
log6 = os.path.join(w6, 'losses.csv')
t_end = time.time() + 60
while proc.poll() is None and time.time() < t_end and not (os.path.exists(log6) and os.path.getsize(log6) > 200):
    time.sleep(0.005)
proc.send_signal(signal.SIGINT)
out6, err6 = proc.communicate(timeout=120)
m6 = re.search(r'interrupted at iteration (\d+) of 200', err6)
check(proc.returncode == 130 and m6 is not None and 'i2i finetune --resume' in err6,
      'Ctrl-C stops after the step in progress with a resume hint (exit 130)', err6[-600:])
check(os.path.exists(os.path.join(w6, 'state.i2istate')) and not os.path.exists(os.path.join(o6, 'learned.onnx')) and
      not [f for f in os.listdir(w6) if f.startswith('.')], 'the state is written whole; no result, no temporary file yet')
if m6:
    print('    interrupted at iteration %s' % m6.group(1))
r = run([i2i, 'finetune', '--resume', os.path.join(w6, 'state.i2istate'), '--threads', '2'])
a, b = os.path.join(o1, 'learned.onnx'), os.path.join(o6, 'learned.onnx')
if r.returncode == 0 and os.path.exists(a) and os.path.exists(b):
    r = run([parity, 'onnx-equal', a, b])
    check(r.returncode == 0, 'resumed after Ctrl-C: learned.onnx bit-identical to the uninterrupted run',
          (r.stdout + r.stderr).strip())
else:
    check(False, 'resumed after Ctrl-C', r.stderr[-600:])
# ---- 4. bad data -----------------------------------------------------------------------------
empty = os.path.join(work, 'empty')
os.makedirs(empty)
r = run([i2i, 'finetune', ckpt, empty, '--work-dir', os.path.join(work, 'w3')] + common)
check(r.returncode == 1 and 'no usable pairs' in r.stderr, 'an empty folder is refused', r.stderr[-400:])
sa, sb = os.path.join(work, 'src'), os.path.join(work, 'dst')
os.makedirs(sa)
os.makedirs(sb)
for i in range(3):
    Image.fromarray((smooth(rng, 64) * 255).astype(np.uint8)).save(os.path.join(sa, 'x%d.png' % i))
    Image.fromarray((smooth(rng, 64) * 255).astype(np.uint8)).save(os.path.join(sb, 'y%d.png' % i))
r = run([i2i, 'finetune', ckpt, sa, sb, '--work-dir', os.path.join(work, 'w4')] + common)
check(r.returncode == 1 and 'no image of the same name' in r.stderr and 'no usable pairs' in r.stderr,
      'mismatched pair folders are reported and refused', r.stderr[-400:])
# ---- 5. a NaN stops the run and keeps the last good state -------------------------------------
w5 = os.path.join(work, 'w5')
r = run([i2i, 'finetune', ckpt, pairs, '--work-dir', w5, '--output-dir', os.path.join(work, 'out5'),
         '--lr', '1e30', '--save-every', '1000'] + common[:-6] + ['-o', 'diverged'])
stopped = r.returncode == 1 and ('not finite' in r.stderr or 'loss became' in r.stderr)
check(stopped, 'a non-finite loss stops the run with a message', r.stderr[-600:])
state = os.path.join(w5, 'state.i2istate')
check(os.path.exists(state) and 'last good state' in r.stderr, 'the last good state is kept')
if os.path.exists(state):
    r = run([i2i, 'finetune', '--resume', state, '--threads', '2', '--stop-at', '1'])
    check(r.returncode in (0, 1) and 'resuming' in r.stderr, 'the kept state loads')
# ---- 6. CycleGAN through the tool: a .pth with both directions, then the ONNX results -------------
ca, cb = os.path.join(work, 'cycA'), os.path.join(work, 'cycB')
os.makedirs(ca)
os.makedirs(cb)
for i in range(5):
    Image.fromarray((smooth(rng, 48) * 255).astype(np.uint8)).save(os.path.join(ca, 'a%d.png' % i))
for i in range(3):
    Image.fromarray((smooth(rng, 40) * 255).astype(np.uint8)).save(os.path.join(cb, 'b%d.jpg' % i))
Image.fromarray((rng.random((48, 48)) * 255).astype(np.uint8), 'L').save(os.path.join(ca, 'gray.png'))
gx = mr.randomize_biases(mr.build_resnet(8, 2, seed=41), 41)
gy = mr.randomize_biases(mr.build_resnet(8, 2, seed=42), 42)
cyc = os.path.join(work, 'cyc_small.pth')
torch.save({'state_dict': mr.translation_state_dict([('y', gy), ('x', gx)], [])}, cyc)
oc = os.path.join(work, 'outc')
r = run([i2i, 'finetune', cyc, ca, cb, '--direction', 'x2y', '--channel-order', 'rgb', '--size', '32', '--iters', '6',
         '--threads', '2', '--sample-every', '3', '--save-every', '3', '-o', 'cyc', '--work-dir', os.path.join(work, 'wc'),
         '--output-dir', oc])
check(r.returncode == 0, 'CycleGAN fine-tune from a .pth with both directions', r.stderr[-1000:])
check('5 images of A, 3 of B' in r.stderr and 'gray.png' in r.stderr, 'CycleGAN data: 5 A, 3 B, the grayscale one skipped',
      [line for line in r.stderr.splitlines() if 'images of A' in line][:1].__repr__())
files = ['cyc.onnx', 'cyc.D.onnx', 'cyc-reverse.onnx', 'cyc-reverse.D.onnx']
check(all(os.path.exists(os.path.join(oc, f)) for f in files), 'both generators and discriminators written', str(os.listdir(oc)
                                                                                                             if os.path.isdir(oc) else ''))
r = run([i2i, 'inspect', os.path.join(oc, 'cyc.onnx')])
check('cyc-reverse' in r.stdout and 'x2y (fine-tuned)' in r.stdout, 'the result names its reverse and its label',
      r.stdout[-400:])
env_path = dict(I2I_MODEL_PATH=oc)
r = subprocess.run([i2i, 'finetune', 'cyc', ca, cb, '--size', '32', '--iters', '2', '--threads', '2', '-o', 'cyc2',
                    '--work-dir', os.path.join(work, 'wc2'), '--output-dir', oc], capture_output=True, text=True,
                   env=dict(os.environ, I2I_BACKEND='cpu', I2I_NO_PROGRESS='1', XDG_DATA_HOME=os.path.join(work, 'xdg'),
                            **env_path))
check(r.returncode == 0 and 'cyc-reverse.onnx' in r.stderr and 'cyc.D.onnx' in r.stderr,
      'fine-tune again from the ONNX results (reverse and discriminators found by name)', r.stderr[-800:])
r = run([i2i, 'finetune', cyc, ca, '--channel-order', 'rgb', '--size', '32', '--iters', '2'])
check(r.returncode == 1 and 'two folders' in r.stderr, 'CycleGAN with one folder is refused', r.stderr[-300:])
# ---- 7. nothing of an earlier run is lost; bad options and states are refused up front ----------
state1, model1 = os.path.join(w1, 'state.i2istate'), os.path.join(o1, 'learned.onnx')
before = (open(state1, 'rb').read(), open(model1, 'rb').read())
r = run([i2i, 'finetune', ckpt, pairs, '--work-dir', w1, '--output-dir', o1] + common)
check(r.returncode == 1 and '--resume' in r.stderr and '--overwrite' in r.stderr and
      (open(state1, 'rb').read(), open(model1, 'rb').read()) == before,
      'the same command again: refused, pointing to --resume and --overwrite; the earlier state and model kept',
      r.stderr[-300:])
r = run([i2i, 'finetune', ckpt, pairs, '--work-dir', os.path.join(work, 'w7'), '--output-dir', o1] + common)
check(r.returncode == 1 and 'a model named' in r.stderr and open(model1, 'rb').read() == before[1] and
      not os.path.exists(os.path.join(work, 'w7', 'losses.csv')),
      'an existing model of the name: refused before training, the model kept', r.stderr[-300:])
r = run([i2i, 'finetune', ckpt, pairs, '--work-dir', w1, '--output-dir', o1, '--overwrite'] + common[:-10] +
        ['--iters', '2', '-o', 'learned'])
check(r.returncode == 0 and open(model1, 'rb').read() != before[1], '--overwrite starts afresh over both',
      r.stderr[-300:])
for opt, val, msg in (('--iters', '-1', '--iters must be at least 1'), ('--batch', '0', '--batch must be at least 1'),
                      ('--lr', '-1', '--lr must be a positive number'), ('--stop-at', '0', '--stop-at must be at least 1'),
                      ('--seed', '-3', '--seed must be at least 0')):
    r = run([i2i, 'finetune', ckpt, pairs, opt, val, '-o', 'opt'])
    check(r.returncode == 2 and msg in r.stderr, 'option %s %s refused, naming it' % (opt, val), r.stderr[-200:])
r = run([i2i, 'finetune', ckpt, pairs, '--work-dir', os.path.join(work, 'w8'), '--output-dir',
         os.path.join(work, 'held.png', 'models')] + common)
check(r.returncode == 1 and 'is not a folder' in r.stderr and '--output-dir' in r.stderr and
      not os.path.exists(os.path.join(work, 'w8')), 'an output folder that cannot be written: refused before training',
      r.stderr[-300:])
mixed = os.path.join(work, 'mixed')
os.makedirs(mixed)
for f in ('p00.png', 'p01.png'):
    shutil.copy(os.path.join(pairs, f), mixed)
Image.fromarray((rng.random((64, 128, 3)) * 255).astype(np.uint8)).save(os.path.join(mixed, 'anim.gif'))
open(os.path.join(mixed, 'notes.txt'), 'w').write('pairs from the valley\n')
os.makedirs(os.path.join(mixed, 'old'))
r = run([i2i, 'finetune', ckpt, mixed, '--work-dir', os.path.join(work, 'w9'), '--output-dir', os.path.join(work, 'o9')] +
        common[:-10] + ['--iters', '1', '-o', 'mixed'])
check(r.returncode == 0 and "skipping 2 files, the first 'anim.gif'" in r.stderr and "1 subfolder 'old'" in r.stderr and
      '2 pairs' in r.stderr and '3 skipped' in r.stderr,
      'files i2i does not read as pictures (a .gif, a .txt) and a subfolder are reported as skipped', r.stderr[-400:])


def interrupt(wdir, signals):
    """Starts a run, sends SIGINT `signals` times 3 ms apart once it is training; (rc, stderr, files left)."""
    p = subprocess.Popen([i2i, 'finetune', ckpt, pairs, '--work-dir', wdir, '--output-dir', os.path.join(wdir, 'o')] +
                         common, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env6)
    lg, end = os.path.join(wdir, 'losses.csv'), time.time() + 60
    while p.poll() is None and time.time() < end and not (os.path.exists(lg) and os.path.getsize(lg) > 200):
        time.sleep(0.005)
    for _ in range(signals):
        p.send_signal(signal.SIGINT)
        time.sleep(0.003)
    _, e = p.communicate(timeout=120)
    return p.returncode, e, sorted(os.listdir(wdir))


rc, e, left = interrupt(os.path.join(work, 'w10'), 2)
check(rc == 130 and 'interrupted at iteration' in e and 'state.i2istate' in left and
      not set(left) - {'losses.csv', 'o', 'samples', 'state.i2istate'},
      'Ctrl-C twice: the step finishes and the state is written whole, nothing else left', '%d %s %s' % (rc, left, e[-300:]))
rc, e, left = interrupt(os.path.join(work, 'w11'), 3)
check(rc == 130 and ('quit without saving' in e or 'interrupted at iteration' in e) and
      not set(left) - {'losses.csv', 'o', 'samples', 'state.i2istate'},
      'Ctrl-C three times: quits at once, no temporary or half-written file left', '%d %s %s' % (rc, left, e[-300:]))


def repack(path, out, edit):
    """Rewrites an i2i training state with edit(list of (tag, body)) applied and a valid checksum."""
    import struct
    import zlib
    data = open(path, 'rb').read()
    secs, pos = [], 12
    while pos < len(data):
        ln = struct.unpack('<Q', data[pos + 4:pos + 12])[0]
        secs.append((data[pos:pos + 4], data[pos + 12:pos + 12 + ln]))
        pos += 12 + ln
    secs = edit([x for x in secs if x[0] != b'END.'])
    b = bytearray(data[:12])
    for tag, body in secs:
        b += tag + struct.pack('<Q', len(body)) + body
    b += b'END.' + struct.pack('<QI', 4, zlib.crc32(bytes(b)))
    open(out, 'wb').write(bytes(b))


def rename_meta(secs, key, value):
    import struct
    out = []
    for tag, body in secs:
        if tag == b'META':
            n, pos, kv = struct.unpack('<I', body[:4])[0], 4, []
            for _ in range(2 * n):
                ln = struct.unpack('<I', body[pos:pos + 4])[0]
                kv.append(body[pos + 4:pos + 4 + ln])
                pos += 4 + ln
            kv = [(kv[i], value if kv[i] == key else kv[i + 1]) for i in range(0, len(kv), 2)]
            body = struct.pack('<I', len(kv)) + b''.join(struct.pack('<I', len(x)) + x for p in kv for x in p)
        out.append((tag, body))
    return out


stw2 = os.path.join(w2, 'state.i2istate')
evil = os.path.join(work, 'w12', 'state.i2istate')
os.makedirs(os.path.dirname(evil))
repack(stw2, evil, lambda secs: secs)
r = run([i2i, 'finetune', '--resume', evil, '--threads', '2', '--stop-at', '101'])
check(r.returncode == 0 and 'resuming' in r.stderr, 'a re-packed state (same content) resumes', r.stderr[-300:])
repack(stw2, evil, lambda secs: rename_meta(secs, b'name', b'../../evil'))
r = run([i2i, 'finetune', '--resume', evil, '--threads', '2'])
check(r.returncode == 1 and 'refused' in r.stderr and not any('evil' in f for f in os.listdir(work)),
      'a state naming an output outside its folder (../../evil) is refused', r.stderr[-300:])
repack(stw2, evil, lambda secs: [x for x in secs if x[0] != b'ADAM' or x[1][:4] != b'\x02\0\0\0'])
r = run([i2i, 'finetune', '--resume', evil, '--threads', '2'])
check(r.returncode == 1 and 'damaged' in r.stderr, "a state without the discriminator's Adam moments is refused",
      r.stderr[-300:])
print('%d passed, %d failed' % (passed, failed))
sys.exit(1 if failed else 0)
