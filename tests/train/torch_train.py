#!/usr/bin/python3
"""tests/train/torch_train.py: mmagic's CycleGAN and Pix2Pix training steps in PyTorch, the oracle
for the engine's trainer (tests/train/run_parity.py) and the PyTorch side of bench/train.

What it is: the replica modules (tests/fixtures/mmagic_replica.py) trained as mmagic 1.x's
CycleGAN.train_step / Pix2Pix.train_step do it: generators forward, the discriminators' update
(CycleGAN: 0.5 (MSE(D(pool(fake)), 0) + MSE(D(real), 1)) per domain, summed; Pix2Pix:
0.5 (BCE(D([src, fake]), 0) + BCE(D([src, real]), 1))), then the generators' update against the
updated discriminators with requires_grad off (CycleGAN: LSGAN + 10 cycle L1 + identity L1;
Pix2Pix: BCE + 100 L1). Two Adam optimisers (2e-4, betas 0.5/0.999); CycleGAN's lr follows
mmagic's LinearLrInterval scaled to the total iterations; GANImageBuffer with the choices forced
from a table (the engine's pool hook gets the same table); Pix2Pix dropout uses the engine's
Philox mask with the step in its counter (mmagic_replica.PhiloxDropout). Networks are initialised
in float32 (the checkpoint the engine converts); the reference runs in float64.
What it is not: mmagic itself, or a data pipeline (images come in ready, no augmentation).

Why two ways of running: a free run of 5 steps is ill-conditioned (Adam moves every weight by
about lr times the sign of its gradient, so rounding-level differences in tiny gradients, and
kinks crossed differently, grow: a 1e-7 relative change of the initial weights changes a
gradient by 13% after one step even in float64). So the strict checks are per step: before step
k the reference takes the engine's exact state after step k-1 (weights, running statistics,
Adam moments; its pool follows its own fakes, which equal the engine's to float rounding).

CLI:
  torch_train.py OUTDIR CASE [--float32]
      writes OUTDIR/CASE/: ckpt.pth (the initial networks, mmagic layout, RGB), images.bin
      (float32 RGBA in [0,1], steps x batch x (a, b) x S x S x 4), choices.txt (domain iteration
      image choice), case.json and free_step<k>.npz (a free run).
  torch_train.py OUTDIR CASE --forced ENGINE_DIR [--probes K]
      writes OUTDIR/CASE/forced_step<k>.npz: step k from the engine's state after step k-1
      (ENGINE_DIR/step<k-1>.txt/.bin, written by train_parity); with --probes, also
      probe<j>_step<k>.npz (j = 1..K): the same with every weight multiplied by 1 + 1e-6 N(0,1)
      first, which tells how far rounding-sized noise moves each gradient at that step.
Each .npz holds loss.* and, per network role and tensor, ROLE/value/KEY (after the step),
ROLE/grad/KEY (of the step), ROLE/adam_m/KEY and ROLE/adam_v/KEY.
"""
import fractions
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'fixtures'))
import mmagic_replica as mr  # noqa: E402

CASES = {
    'cyclegan_b1_32': dict(kind='cyclegan', size=32, batch=1, steps=5, iters=6, blocks=2, base=8, pool=2),
    'cyclegan_b2_64': dict(kind='cyclegan', size=64, batch=2, steps=5, iters=6, blocks=2, base=8, pool=2),
    'cyclegan_id0_32': dict(kind='cyclegan', size=32, batch=1, steps=3, iters=100, blocks=2, base=8, pool=2,
                            identity=0.0),
    'pix2pix_d5_b1_32': dict(kind='pix2pix', size=32, batch=1, steps=5, iters=100, depth=5, base=8),
    'pix2pix_d6_b1_64': dict(kind='pix2pix', size=64, batch=1, steps=5, iters=100, depth=6, base=8),
    'pix2pix_d6_b4_64': dict(kind='pix2pix', size=64, batch=4, steps=5, iters=100, depth=6, base=8),
}
SEED = 20221
LR = 2e-4
DTYPE = torch.float64


def lr_at(c, it):
    """mmagic LinearLrInterval scaled to c['iters'] (CycleGAN); constant for Pix2Pix."""
    if c['kind'] != 'cyclegan':
        return LR
    iters = c['iters']
    begin = iters // 2
    span = iters - begin
    if it < begin or span <= 0:
        return LR
    # mmagic's LinearLrInterval: start + (end_f - start) * floor((it - begin) / interval) /
    # floor((end - begin) / interval), with the published configs' interval = (end - begin) / 100
    # (exact, as a fraction) and start_factor used as the absolute lr, end_factor 0
    interval = fractions.Fraction(span, 100)
    stages = math.floor(span / interval)
    stage = min(math.floor((it - begin) / interval), stages)
    return LR + (0.0 - LR) * stage / stages


class ForcedPool:
    """mmagic GANImageBuffer with its random choice replaced by a table lookup."""

    def __init__(self, size, domain, table):
        self.size, self.domain, self.table = size, domain, table
        self.images = []

    def query(self, images, it):
        out = []
        for i, image in enumerate(images):
            image = image.detach().unsqueeze(0).clone()
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
                continue
            choice = self.table.get((self.domain, it, i), -1)
            if choice >= 0:
                tmp = self.images[choice].clone()
                self.images[choice] = image
                out.append(tmp)
            else:
                out.append(image)
        return torch.cat(out, 0)


def smooth_images(rng, n, size):
    """n RGBA float32 images in [0,1]: smooth random colour fields (upsampled noise)."""
    low = rng.random((n, 3, max(size // 8, 2), max(size // 8, 2)), dtype=np.float32)
    t = F.interpolate(torch.from_numpy(low), size=(size, size), mode='bilinear', align_corners=False).numpy()
    t = np.clip(t + 0.05 * rng.standard_normal(t.shape).astype(np.float32), 0, 1)
    rgba = np.ones((n, size, size, 4), np.float32)
    rgba[..., :3] = t.transpose(0, 2, 3, 1)
    return rgba


def to_tensor(rgba):
    """[0,1] RGBA (N,H,W,4) -> [-1,1] NCHW, computed as the engine does (v * 2 - 1 in float32)."""
    x = rgba[..., :3].transpose(0, 3, 1, 2).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x * np.float32(2) - np.float32(1))).to(DTYPE)


def read_engine(path_txt, path_bin):
    """train_parity's dump of one step: ({loss: value}, {ROLE/what/KEY: float32 array})."""
    losses, tensors = {}, {}
    data = np.fromfile(path_bin, dtype='<f4')
    for line in open(path_txt):
        f = line.split()
        if f[0] == 'tensor':
            off, n = int(f[2]), int(f[3])
            tensors[f[1]] = data[off:off + n]
        else:
            losses[f[0]] = float(f[1])
    return losses, tensors


def build_case(c, out):
    """The initial float32 networks (role -> module), written as ckpt.pth, plus the data."""
    if c['kind'] == 'cyclegan':
        nets = {'G': mr.randomize_biases(mr.build_resnet(c['base'], c['blocks'], seed=11), 11),      # x -> y (A -> B)
                'G_REV': mr.randomize_biases(mr.build_resnet(c['base'], c['blocks'], seed=12), 12),  # y -> x
                'D': mr.randomize_biases(mr.build_patch_disc(3, c['base'], 'IN', seed=13), 13),      # judges y (B)
                'D_REV': mr.randomize_biases(mr.build_patch_disc(3, c['base'], 'IN', seed=14), 14)}  # judges x (A)
        sd = mr.translation_state_dict([('y', nets['G']), ('x', nets['G_REV'])], [('y', nets['D']), ('x', nets['D_REV'])])
        seed = 7
    else:
        nets = {'G': mr.randomize_biases(mr.build_unet(c['base'], c['depth'], True, seed=21), 21),
                'D': mr.randomize_biases(mr.build_patch_disc(6, c['base'], 'BN', seed=22), 22)}
        mr.calibrate_bn(nets['G'], 5, passes=1, size=c['size'], batch=2)
        sd = mr.translation_state_dict([('y', nets['G'])], [('y', nets['D'])])
        seed = 9
    if out:
        torch.save({'meta': {'note': 'i2i training parity'}, 'state_dict': sd}, os.path.join(out, 'ckpt.pth'))
    rng = np.random.default_rng(seed)
    S, N, steps = c['size'], c['batch'], c['steps']
    imgs = smooth_images(rng, steps * N * 2, S).reshape(steps, N, 2, S, S, 4)
    table = {}
    if c['kind'] == 'cyclegan':
        for it in range(steps):
            for dom in range(2):
                for i in range(N):
                    ch = [-1, 1, 0, 1, -1, 0][(it + 2 * dom + 3 * i) % 6]
                    table[(dom, it, i)] = ch % c['pool'] if ch >= 0 else -1
    if out:
        imgs.astype('<f4').tofile(os.path.join(out, 'images.bin'))
        with open(os.path.join(out, 'choices.txt'), 'w') as f:
            for (dom, it, i), ch in sorted(table.items()):
                f.write('%d %d %d %d\n' % (dom, it, i, ch))
    return nets, imgs, table


class TorchTrainer:
    """mmagic's training step on the replica networks, in DTYPE."""

    def __init__(self, c, nets, table):
        self.c, self.nets = c, nets
        for n in nets.values():
            n.to(DTYPE).train()
        self.dropout = mr.philox_dropout(nets['G'], SEED, 0) if c['kind'] == 'pix2pix' else None
        gen = [p for r in ('G', 'G_REV') if r in nets for p in nets[r].parameters()]
        dis = [p for r in ('D', 'D_REV') if r in nets for p in nets[r].parameters()]
        self.opt_g = torch.optim.Adam(gen, lr=LR, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(dis, lr=LR, betas=(0.5, 0.999))
        self.pools = [ForcedPool(c.get('pool', 0), 0, table), ForcedPool(c.get('pool', 0), 1, table)]

    def load(self, tensors, steps_done):
        """Takes the engine's state: values, running statistics and Adam moments."""
        with torch.no_grad():
            for role, net in self.nets.items():
                params = dict(net.named_parameters())
                for k, v in net.state_dict().items():
                    key = '%s/value/%s' % (role, k)
                    if key in tensors:
                        v.copy_(torch.from_numpy(tensors[key].reshape(v.shape).astype(np.float64)))
                for k, p in params.items():
                    opt = self.opt_g if role.startswith('G') else self.opt_d
                    m = tensors['%s/adam_m/%s' % (role, k)].reshape(p.shape).astype(np.float64)
                    v = tensors['%s/adam_v/%s' % (role, k)].reshape(p.shape).astype(np.float64)
                    opt.state[p] = {'step': torch.tensor(float(steps_done)),
                                    'exp_avg': torch.from_numpy(m).to(DTYPE).clone(),
                                    'exp_avg_sq': torch.from_numpy(v).to(DTYPE).clone()}

    def perturb(self, rel, seed):
        """Multiplies every weight by (1 + rel N(0, 1)): float32-sized noise, to measure how much
        the step's gradients depend on rounding (kinks crossed the other way)."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for net in self.nets.values():
                for p in net.parameters():
                    p.mul_(1 + rel * torch.randn(p.shape, generator=g, dtype=p.dtype))

    def snapshot(self, losses):
        d = {'loss.' + k: np.float64(v) for k, v in losses.items()}
        for role, net in self.nets.items():
            opt = self.opt_g if role.startswith('G') else self.opt_d
            for k, v in net.state_dict().items():
                if not k.endswith('num_batches_tracked'):
                    d['%s/value/%s' % (role, k)] = v.detach().numpy().copy()
            for k, p in net.named_parameters():
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                d['%s/grad/%s' % (role, k)] = g.detach().numpy().copy()
                st = opt.state.get(p, {})
                if st:
                    d['%s/adam_m/%s' % (role, k)] = st['exp_avg'].numpy().copy()
                    d['%s/adam_v/%s' % (role, k)] = st['exp_avg_sq'].numpy().copy()
        return d

    def step(self, it, a, b):
        lr = lr_at(self.c, it)
        for o in (self.opt_g, self.opt_d):
            for pg in o.param_groups:
                pg['lr'] = lr
        if self.c['kind'] == 'cyclegan':
            losses = self.step_cyclegan(it, a, b)
        else:
            losses = self.step_pix2pix(it, a, b)
        losses['lr'] = lr
        return losses

    def _freeze_d(self, frozen):
        for r in ('D', 'D_REV'):
            if r in self.nets:
                for p in self.nets[r].parameters():
                    p.requires_grad_(not frozen)

    def step_cyclegan(self, it, real_a, real_b):
        g, gr, d, dr = self.nets['G'], self.nets['G_REV'], self.nets['D'], self.nets['D_REV']
        lam_c, lam_id = 10.0, self.c.get('identity', 0.5)
        fake_b = g(real_a)
        rec_a = gr(fake_b)
        fake_a = gr(real_b)
        rec_b = g(fake_a)
        self._freeze_d(False)
        self.opt_d.zero_grad(set_to_none=False)
        pred = d(self.pools[1].query(fake_b, it).detach())
        l_fb = F.mse_loss(pred, torch.zeros_like(pred))
        pred = d(real_b)
        l_rb = F.mse_loss(pred, torch.ones_like(pred))
        pred = dr(self.pools[0].query(fake_a, it).detach())
        l_fa = F.mse_loss(pred, torch.zeros_like(pred))
        pred = dr(real_a)
        l_ra = F.mse_loss(pred, torch.ones_like(pred))
        loss_d_b, loss_d_a = 0.5 * (l_fb + l_rb), 0.5 * (l_fa + l_ra)
        (loss_d_b + loss_d_a).backward()
        self.opt_d.step()
        self._freeze_d(True)
        self.opt_g.zero_grad(set_to_none=False)
        pred_b = d(fake_b)
        gan_b = F.mse_loss(pred_b, torch.ones_like(pred_b))
        pred_a = dr(fake_a)
        gan_a = F.mse_loss(pred_a, torch.ones_like(pred_a))
        cyc_a = lam_c * F.l1_loss(rec_a, real_a)
        cyc_b = lam_c * F.l1_loss(rec_b, real_b)
        loss_g = gan_a + gan_b + cyc_a + cyc_b
        id_a = id_b = torch.zeros(())
        if lam_id > 0:
            id_b = lam_id * F.l1_loss(g(real_b), real_b)
            id_a = lam_id * F.l1_loss(gr(real_a), real_a)
            loss_g = loss_g + id_a + id_b
        loss_g.backward()
        self.opt_g.step()
        self._freeze_d(False)
        return dict(d_a=loss_d_a.item(), d_b=loss_d_b.item(), gan_a=gan_a.item(), gan_b=gan_b.item(),
                    cycle_a=cyc_a.item(), cycle_b=cyc_b.item(), id_a=id_a.item(), id_b=id_b.item(),
                    d=(loss_d_a + loss_d_b).item(), g=loss_g.item())

    def step_pix2pix(self, it, src, real):
        g, d = self.nets['G'], self.nets['D']
        self.dropout['step'] = it
        fake = g(src)
        self._freeze_d(False)
        self.opt_d.zero_grad(set_to_none=False)
        pred = d(torch.cat((src, fake.detach()), 1))
        l_f = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred))
        pred = d(torch.cat((src, real), 1))
        l_r = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred))
        loss_d = 0.5 * (l_f + l_r)
        loss_d.backward()
        self.opt_d.step()
        self._freeze_d(True)
        self.opt_g.zero_grad(set_to_none=False)
        pred = d(torch.cat((src, fake), 1))
        gan = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred))
        l1 = 100.0 * F.l1_loss(fake, real)
        loss_g = gan + l1
        loss_g.backward()
        self.opt_g.step()
        self._freeze_d(False)
        return dict(d_fake=l_f.item(), d_real=l_r.item(), gan=gan.item(), l1=l1.item(), d=loss_d.item(),
                    g=loss_g.item())


def main():
    global DTYPE
    outdir, name = sys.argv[1], sys.argv[2]
    if '--float32' in sys.argv[3:]:
        DTYPE = torch.float32
    forced = sys.argv[sys.argv.index('--forced') + 1] if '--forced' in sys.argv else None
    probes = int(sys.argv[sys.argv.index('--probes') + 1]) if '--probes' in sys.argv else 0
    c = CASES[name]
    out = os.path.join(outdir, name)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    for probe in range(probes + 1):
        torch.manual_seed(0)
        nets, imgs, table = build_case(c, None if forced else out)
        tt = TorchTrainer(c, nets, table)
        for it in range(c['steps']):
            if forced and it > 0:
                _, tensors = read_engine(os.path.join(forced, 'step%d.txt' % (it - 1)),
                                         os.path.join(forced, 'step%d.bin' % (it - 1)))
                tt.load(tensors, it)
            if probe:
                tt.perturb(1e-6, probe * 1000 + it)
            losses = tt.step(it, to_tensor(imgs[it, :, 0]), to_tensor(imgs[it, :, 1]))
            tag = ('probe%d' % probe) if probe else ('forced' if forced else 'free')
            np.savez(os.path.join(out, '%s_step%d.npz' % (tag, it)), **tt.snapshot(losses))
    if not forced:
        json.dump(dict(c, seed=SEED, lr=LR), open(os.path.join(out, 'case.json'), 'w'), indent=1)


if __name__ == '__main__':
    main()
