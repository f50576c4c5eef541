#!/usr/bin/env python3
"""bench/gpu/bench.py: the engine's CUDA backend against PyTorch on the same GPU, in one run,
into one table (perf.md section 5): ResNet 256^2 b1 and b16, 1024^2, 3840x2160; U-Net 256^2
and 1024^2; same weights on both sides; PyTorch fp32 (TF32 off) and its best eager setting
against the engine's fp32 / fp16 device-resident and host-to-host times, TFLOP/s and ratios.
Usage: bench.py --engine BUILD/bench/gpu/bench_engine --models DIR [--out TABLE.md] [--quick]
"""
# Details. A correctness gate comes first: relative L2 of each engine output and of PyTorch's
# fp16 output against PyTorch fp32 at 256x256. PyTorch's best = channels_last + autocast fp16 +
# cudnn.benchmark. Medians from CUDA events (perf.md 5.4 counts), TFLOP/s by non-zero MACs
# (756,096 MAC per pixel for the ResNet, 92,288 for the U-Net), % of the measured 798 TFLOP/s.
# DIR holds the ONNX exports (tests/gpu/export_models.py writes them when missing); bench_engine
# runs with LD_LIBRARY_PATH=$I2I_ENGINE_LD_LIBRARY_PATH when set (tests/gpu/run sets it).
# --deadline SECONDS stops starting configurations. Not a parity test (tests/gpu/parity.c).
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'tests', 'gpu'))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import export_models as em  # noqa: E402

MACS_PER_PIXEL = {'resnet': 756096, 'unet': 92288}
PEAK_TFLOPS = 798.0   # measured bf16 GEMM rate on the target H100 (perf.md)
CONFIGS = [('resnet9_c64', 256, 256, 1), ('resnet9_c64', 256, 256, 16), ('resnet9_c64', 1024, 1024, 1),
           ('resnet9_c64', 2160, 3840, 1), ('unet8_c64', 256, 256, 1), ('unet8_c64', 1024, 1024, 1)]


def counts(px):
    """(warmup, iterations) as perf.md 5.4: N = 200 at 256^2, 50 at 1024^2, 20 at 4K."""
    if px <= 256 * 256 * 4:
        return 20, 200
    if px <= 1100000 * 2:  # 1024^2 and batch-16 256^2 (1.05 Mpx); 3840x2160 (8.3 Mpx) is the 4K tier
        return 20, 50
    return 3, 20


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ''


def gpu_state():
    return sh(['nvidia-smi', '--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw',
               '--format=csv,noheader'])


def time_torch(fn, xs, warmup, iters):
    for i in range(warmup):
        fn(xs[i % len(xs)])
    torch.cuda.synchronize()
    ts = []
    for i in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn(xs[i % len(xs)])
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e))
    ts.sort()
    return ts[len(ts) // 2], ts[0], ts[int(0.9 * (len(ts) - 1) + 0.5)]


def torch_variant(model, x_shape, best, warmup, iters):
    """Times one PyTorch variant; returns dict with ms, first-call seconds and peak MiB."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = best
    torch.backends.cuda.matmul.allow_tf32 = False
    m = model.cuda()
    fmt = torch.channels_last if best else torch.contiguous_format
    m = m.to(memory_format=fmt)
    g = torch.Generator(device='cuda').manual_seed(0)
    nbuf = 4 if x_shape[2] * x_shape[3] * x_shape[0] <= 1 << 20 else 1
    xs = [(torch.rand(x_shape, device='cuda', generator=g) * 2 - 1).contiguous(memory_format=fmt)
          for _ in range(nbuf)]

    def fn(x):
        with torch.no_grad():
            if best:
                with torch.autocast('cuda', dtype=torch.float16):
                    return m(x)
            return m(x)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    fn(xs[0])
    torch.cuda.synchronize()
    first = time.time() - t0
    med, mn, p90 = time_torch(fn, xs, warmup, iters)
    peak = torch.cuda.max_memory_allocated() / 2 ** 20
    model.cpu()
    xs.clear()
    torch.cuda.empty_cache()
    return dict(ms=med, min=mn, p90=p90, first_s=first, peak_mib=peak)


def engine(exe, onnx, w, h, batch, prec, extra=()):
    cmd = [exe, onnx, '--size', '%dx%d' % (w, h), '--batch', str(batch), '--precision', prec] + list(extra)
    env = dict(os.environ)
    if os.environ.get('I2I_ENGINE_LD_LIBRARY_PATH'):   # the engine's libraries (tests/gpu/run), not PyTorch's
        env['LD_LIBRARY_PATH'] = os.environ['I2I_ENGINE_LD_LIBRARY_PATH']
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    line = (r.stdout.strip().splitlines() or ['{}'])[-1]
    try:
        d = json.loads(line)
    except ValueError:
        d = {'error': (r.stdout + r.stderr).strip()[-300:]}
    if r.returncode and 'error' not in d:
        d['error'] = 'exit %d: %s' % (r.returncode, r.stderr.strip()[-300:])
    return d


def rel_l2(a, b):
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-30))


def save_npy_nchw(path, x):
    np.save(path, np.ascontiguousarray(x.astype(np.float32)))


def gate(exe, models_dir, work, tag, family):
    """Relative L2 and max |err| against PyTorch fp32 (TF32 off) at 256x256."""
    model = em.build(tag)
    g = torch.Generator().manual_seed(7)
    x = torch.rand((1, 3, 256, 256), generator=g) * 2 - 1
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        m = model.cuda()
        ref = m(x.cuda()).float().cpu().numpy()
        with torch.autocast('cuda', dtype=torch.float16):
            best = m.to(memory_format=torch.channels_last)(
                x.cuda().contiguous(memory_format=torch.channels_last)).float().cpu().numpy()
    model.cpu()
    rows = [('PyTorch fp16 (autocast)', rel_l2(best, ref), float(np.abs(best - ref).max()))]
    inp = os.path.join(work, 'gate_in_%s.npy' % tag)
    save_npy_nchw(inp, x.numpy())
    for prec in ('fp32', 'fp16'):
        out = os.path.join(work, 'gate_out_%s_%s.npy' % (tag, prec))
        d = engine(exe, os.path.join(models_dir, tag + '.onnx'), 256, 256, 1, prec,
                   ['--input', inp, '--dump', out, '--iters', '1', '--warmup', '0', '--h2h', '0'])
        if 'error' in d:
            rows.append(('engine ' + prec, float('nan'), float('nan')))
            print('gate: engine %s failed: %s' % (prec, d['error']))
            continue
        y = np.load(out)
        rows.append(('engine ' + prec, rel_l2(y, ref), float(np.abs(y - ref).max())))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--engine', required=True, help='bench_engine executable')
    ap.add_argument('--models', required=True, help='folder of the ONNX exports')
    ap.add_argument('--out', default='bench_gpu.md')
    ap.add_argument('--quick', action='store_true', help='256x256 and 1024x1024 only, fewer iterations')
    ap.add_argument('--deadline', type=float, default=420, help='stop starting configurations after SECONDS')
    a = ap.parse_args(argv)
    t_start = time.time()
    if not torch.cuda.is_available():
        print('bench: no CUDA device for PyTorch; skipped')
        return 77
    os.makedirs(a.models, exist_ok=True)
    if not all(os.path.exists(os.path.join(a.models, t + '.onnx')) for t in ('resnet9_c64', 'unet8_c64')):
        em.main([a.models])
    work = os.path.join(os.path.dirname(os.path.abspath(a.out)), 'bench-work')
    os.makedirs(work, exist_ok=True)
    lines = []

    def out(s=''):
        print(s)
        sys.stdout.flush()
        lines.append(s)
    state0 = gpu_state()
    out('# bench/gpu: i2i CUDA backend vs PyTorch, %s' % time.strftime('%Y-%m-%d %H:%M:%S'))
    out()
    out('GPU (name, driver, SM clock, max SM clock, temperature, power) before: %s' % state0)
    out('torch %s, CUDA %s, cuDNN %s (PyTorch); device %s' % (torch.__version__, torch.version.cuda,
                                                            torch.backends.cudnn.version(),
                                                            torch.cuda.get_device_name(0)))
    out()
    out('## Correctness gate (256x256, against PyTorch fp32 with TF32 off)')
    out()
    out('| model | variant | rel. L2 | max abs |')
    out('|---|---|---|---|')
    for tag in ('resnet9_c64', 'unet8_c64'):
        for name, r, m in gate(a.engine, a.models, work, tag, em.SPECS[tag][0]):
            out('| %s | %s | %.3g | %.3g |' % (tag, name, r, m))
    out()
    out('## Latency and throughput')
    out()
    out('Device-resident medians from CUDA events; host-to-host (h2h) wall-clock medians beside them.')
    out('TFLOP/s by non-zero MACs (ResNet 756,096 MAC/pixel, U-Net 92,288). Ratio = PyTorch best / this row.')
    out()
    out('| model | size | batch | variant | median ms | min ms | p90 ms | TFLOP/s | % of 798 | vs PyTorch best | '
        'peak MiB | first call s |')
    out('|---|---|---|---|---|---|---|---|---|---|---|---|')
    raw = []
    configs = [c for c in CONFIGS if not a.quick or (c[1] * c[2] <= 1024 * 1024 and c[3] == 1)]
    for tag, h, w, b in configs:
        if time.time() - t_start > a.deadline:
            out('| %s | %dx%d | %d | skipped: deadline | | | | | | | | |' % (tag, w, h, b))
            continue
        family = em.SPECS[tag][0]
        flops = 2.0 * MACS_PER_PIXEL[family] * w * h * b
        warm, iters = counts(w * h * b)
        if a.quick:
            iters = max(10, iters // 4)
        rows = []
        model = em.build(tag)
        for best in (False, True):
            name = 'PyTorch fp16 channels_last autocast' if best else 'PyTorch fp32 (TF32 off)'
            try:
                r = torch_variant(model, (b, 3, h, w), best, warm, iters)
            except Exception as e:  # noqa: BLE001 - OOM or a missing kernel: report, go on
                r = {'error': str(e)[:120]}
                torch.cuda.empty_cache()
            rows.append((name, r))
        del model
        onnx = os.path.join(a.models, tag + '.onnx')
        for prec in ('fp32', 'fp16'):
            if prec == 'fp32' and w * h * b > 1024 * 1024:
                continue   # the fp32 CUDA-core path at 4K only costs time here
            h2h = '3' if w * h * b > 1024 * 1024 else '5'
            extra = ['--warmup', str(warm), '--iters', str(iters), '--h2h', h2h]
            if prec == 'fp16':
                extra.append('--graph')
            d = engine(a.engine, onnx, w, h, b, prec, extra)
            raw.append(d)
            if 'error' in d:
                rows.append(('engine ' + prec, {'error': d['error'][:120]}))
                continue
            rows.append(('engine %s (device)' % prec,
                         dict(ms=d['device_ms'], min=d['device_min_ms'], p90=d['device_p90_ms'],
                              peak_mib=d['peak_device_mib'], first_s=d['first_run_s'])))
            if d.get('graph_ms', -1) > 0 and d.get('graphs', 0) > 0 and not d.get('graph_failures', 0):
                rows.append(('engine %s CUDA graph (device)' % prec,
                             dict(ms=d['graph_ms'], min=d['graph_min_ms'], p90=float('nan'))))
            rows.append(('engine %s h2h i2i_run' % prec, dict(ms=d['h2h_run_ms'])))
            rows.append(('engine %s h2h image path' % prec, dict(ms=d['h2h_images_ms'])))
        best_ms = dict(rows).get('PyTorch fp16 channels_last autocast', {}).get('ms')
        for name, r in rows:
            if 'error' in r:
                out('| %s | %dx%d | %d | %s | error: %s | | | | | | | |' % (tag, w, h, b, name, r['error']))
                continue
            ms = r['ms']
            tf = flops / (ms * 1e-3) / 1e12 if ms and ms > 0 else float('nan')
            ratio = best_ms / ms if best_ms and ms and ms > 0 else float('nan')
            out('| %s | %dx%d | %d | %s | %.3f | %s | %s | %.1f | %.1f%% | %.2fx | %s | %s |' % (
                tag, w, h, b, name, ms, '%.3f' % r['min'] if 'min' in r else '',
                '%.3f' % r['p90'] if r.get('p90') == r.get('p90') and 'p90' in r else '',
                tf, 100 * tf / PEAK_TFLOPS, ratio,
                '%.0f' % r['peak_mib'] if 'peak_mib' in r else '',
                '%.2f' % r['first_s'] if 'first_s' in r else ''))
    out()
    out('GPU after: %s' % gpu_state())
    out('bench time %.0f s' % (time.time() - t_start))
    with open(a.out, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    with open(os.path.splitext(a.out)[0] + '.json', 'w') as f:
        json.dump(raw, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
