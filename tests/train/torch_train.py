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

Why two ways of running: a free run is ill-conditioned. Adam moves every weight by about lr
whatever the size of its gradient (its first step is lr g / (|g| + 1e-8)), so the rounding of
tiny gradients becomes lr-sized moves, and a ReLU/LeakyReLU input or L1 residual within rounding
of zero (a kink) passes or blocks one pixel's gradient by its last bits, which moves whole weight
gradients of these small networks by up to 10%; the next steps feed both back. PyTorch's own
float32 run differs from its float64 run after 5 steps by up to 0.23 (pix2pix_d6_b1_64) and 0.07
(cyclegan_b1_32) in per-tensor rms(change difference) / rms(change). So the strict checks are
per step: before step k the reference takes the engine's exact state after step k-1 (weights,
running statistics, Adam moments; its pool follows its own fakes, which equal the engine's to
float rounding; the Adam step count, learning rate and dropout counter are its own). When a
gradient of that step still differs from the engine's by more than GRAD_LIMIT, the step is
retaken with up to MAX_FLIPS elements within KINK_TAU of a kink on the other side
(forced_step), and kept so only if then every gradient is within GRAD_LIMIT.

CLI:
  torch_train.py OUTDIR CASE [--float32]
      writes OUTDIR/CASE/: ckpt.pth (the initial networks, mmagic layout, RGB), images.bin
      (float32 RGBA in [0,1], steps x batch x (a, b) x S x S x 4), choices.txt (domain iteration
      image choice), case.json, init.npz (ROLE/value/KEY of the initial networks) and
      free_step<k>.npz (a free run).
  torch_train.py OUTDIR CASE --forced ENGINE_DIR
      writes OUTDIR/CASE/forced_step<k>.npz: step k from the engine's state after step k-1
      (ENGINE_DIR/step<k-1>.txt/.bin, written by train_parity), with the kinks taken on the
      engine's side (`kinks`, JSON) and ROLE/adam_step/KEY: the values that PyTorch's Adam gives
      from the engine's state after step k-1 and its gradients of step k (ENGINE_DIR/step<k>).
Each .npz holds loss.* and, per network role and tensor, ROLE/value/KEY (after the step),
ROLE/grad/KEY (of the step), ROLE/adam_m/KEY and ROLE/adam_v/KEY.
"""
import copy
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
GRAD_LIMIT = 1e-3  # per tensor max |g - g_ref| / max |g_ref| (issue 9)
# A pre-activation (or L1 residual) whose float64 value is within KINK_TAU of zero may land on
# the other side of the kink in float32: a float32 forward of the same step (torch's own, from
# the same state) moves the pre-activations of these networks by up to 2.6e-5, and those within
# 1e-4 of zero by up to 7.7e-6 (cyclegan_b1_32 step 3, cyclegan_b2_64 step 4, pix2pix_d6_b4_64
# step 2). MAX_FLIPS: at most that many such elements per step may take the engine's side.
KINK_TAU = 1e-5
MAX_FLIPS = 2
NEAREST = 16  # candidates tried per flip, nearest to zero first (each try is one more step)


def inert_keys(c):
    """ROLE/KEY of the biases whose exact gradient is zero: each conv bias in front of an
    InstanceNorm (the mean subtraction removes it). Both sides hold rounding noise there."""
    inert = set()
    if c['kind'] == 'cyclegan':
        for role in ('G', 'G_REV'):
            for i in range(c['blocks'] + 5):
                inert.add('%s/model.%d.conv.bias' % (role, i))
                for j in (0, 1):
                    inert.add('%s/model.%d.block.%d.conv.bias' % (role, i, j))
        for role in ('D', 'D_REV'):
            for i in range(1, 4):
                inert.add('%s/model.%d.conv.bias' % (role, i))
    return inert


def grad_error(c, ref, tensors):
    """(worst per-tensor max |g - g_ref| / max |g_ref| over the gradients that are not inert, key)."""
    inert, worst = inert_keys(c), (0.0, '')
    for k in ref:
        role, kind, key = k.split('/', 2) if '/' in k else ('', '', '')
        if kind != 'grad' or role + '/' + key in inert or k not in tensors:
            continue
        b = np.asarray(ref[k], np.float64).reshape(-1)
        e = float(np.abs(tensors[k].astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30))
        if e >= worst[0]:
            worst = (e, k)
    return worst


class Kinks:
    """The kinks of one step: every ReLU/LeakyReLU input and L1 residual (a site, named by module
    and call number within the step) is searched for elements within KINK_TAU of zero (`near`:
    [(|x|, site, index, x, the derivative on the other side)]), and `force`
    ({site: {index: derivative}}) sets the derivative of chosen elements, the forward staying as
    it is (the value there is within rounding of 0). Only for the per-step reference: the free
    run and bench/train use the plain modules."""

    def __init__(self):
        self.begin()

    def begin(self, force=None):
        self.calls, self.near, self.force = {}, [], force or {}

    def site(self, name, x, below, above):
        """below/above: the derivative on either side of the kink."""
        n = self.calls.get(name, 0)
        self.calls[name] = n + 1
        key = '%s#%d' % (name, n)
        flat = x.detach().reshape(-1)
        for i in torch.nonzero(flat.abs() < KINK_TAU).reshape(-1).tolist():
            v = float(flat[i])
            self.near.append((abs(v), key, i, v, below if v > 0 else above))
        return key


class _KinkFn(torch.autograd.Function):
    """In-place ReLU/LeakyReLU (like mmcv's) whose derivative may be forced per element."""

    @staticmethod
    def forward(ctx, x, slope, force):
        pos = x > 0
        d = torch.where(pos, torch.ones_like(x), torch.full_like(x, slope))
        if force:
            flat = d.view(-1)
            for i, v in force.items():
                flat[i] = v
        if slope == 0:
            x.clamp_(min=0)
        else:
            x.mul_(torch.where(pos, torch.ones_like(x), torch.full_like(x, slope)))
        ctx.mark_dirty(x)
        ctx.save_for_backward(d)
        return x

    @staticmethod
    def backward(ctx, g):
        d, = ctx.saved_tensors
        return g * d, None, None


class KinkAct(torch.nn.Module):
    def __init__(self, name, slope, kinks):
        super().__init__()
        self.name, self.slope, self.kinks = name, slope, kinks

    def forward(self, x):
        key = self.kinks.site(self.name, x, self.slope, 1.0)
        return _KinkFn.apply(x, self.slope, self.kinks.force.get(key))


class _L1Fn(torch.autograd.Function):
    """F.l1_loss (mean) whose sign may be forced per element."""

    @staticmethod
    def forward(ctx, a, b, force):
        s = torch.sign(a - b)
        if force:
            flat = s.view(-1)
            for i, v in force.items():
                flat[i] = v
        ctx.save_for_backward(s)
        return F.l1_loss(a, b)

    @staticmethod
    def backward(ctx, g):
        s, = ctx.saved_tensors
        ga = g * s / s.numel()
        return ga, (-ga if ctx.needs_input_grad[1] else None), None


def instrument(nets, kinks):
    """Replaces every ReLU/LeakyReLU of the networks by a KinkAct (same values, same gradients)."""
    def swap(parent, prefix):
        for name, child in parent.named_children():
            full = prefix + name
            if isinstance(child, torch.nn.ReLU):
                setattr(parent, name, KinkAct(full, 0.0, kinks))
            elif isinstance(child, torch.nn.LeakyReLU):
                setattr(parent, name, KinkAct(full, child.negative_slope, kinks))
            else:
                swap(child, full + '.')
    for role, net in nets.items():
        swap(net, role + '/')


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

    def __init__(self, c, nets, table, kinks=None):
        self.c, self.nets, self.kinks = c, nets, kinks
        if kinks is not None:
            instrument(nets, kinks)
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

    def save_state(self):
        """Everything a step changes: values, running statistics, Adam state, pools."""
        return ({r: copy.deepcopy(n.state_dict()) for r, n in self.nets.items()},
                copy.deepcopy(self.opt_g.state_dict()), copy.deepcopy(self.opt_d.state_dict()),
                [list(p.images) for p in self.pools])

    def restore_state(self, st):
        nets, og, od, pools = st
        with torch.no_grad():
            for r, n in self.nets.items():
                n.load_state_dict(nets[r])
        self.opt_g.load_state_dict(copy.deepcopy(og))
        self.opt_d.load_state_dict(copy.deepcopy(od))
        for p, imgs in zip(self.pools, pools):
            p.images = list(imgs)

    def adam_from(self, tensors, it):
        """PyTorch's Adam step applied to the given gradients (ROLE/grad/KEY, e.g. the engine's)
        from the current state: {ROLE/adam_step/KEY: value after}."""
        lr = lr_at(self.c, it)
        for o in (self.opt_g, self.opt_d):
            for pg in o.param_groups:
                pg['lr'] = lr
            o.zero_grad(set_to_none=True)
        for role, net in self.nets.items():
            for k, p in net.named_parameters():
                g = tensors['%s/grad/%s' % (role, k)].astype(np.float64)
                p.grad = torch.from_numpy(g).reshape(p.shape).to(DTYPE)
        self.opt_d.step()
        self.opt_g.step()
        return {'%s/adam_step/%s' % (role, k): p.detach().numpy().copy()
                for role, net in self.nets.items() for k, p in net.named_parameters()}

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

    def _l1(self, a, b):
        if self.kinks is None:
            return F.l1_loss(a, b)
        key = self.kinks.site('L1', a - b, -1.0, 1.0)
        return _L1Fn.apply(a, b, self.kinks.force.get(key))

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
        cyc_a = lam_c * self._l1(rec_a, real_a)
        cyc_b = lam_c * self._l1(rec_b, real_b)
        loss_g = gan_a + gan_b + cyc_a + cyc_b
        id_a = id_b = torch.zeros(())
        if lam_id > 0:
            id_b = lam_id * self._l1(g(real_b), real_b)
            id_a = lam_id * self._l1(gr(real_a), real_a)
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
        l1 = 100.0 * self._l1(fake, real)
        loss_g = gan + l1
        loss_g.backward()
        self.opt_g.step()
        self._freeze_d(False)
        return dict(d_fake=l_f.item(), d_real=l_r.item(), gan=gan.item(), l1=l1.item(), d=loss_d.item(),
                    g=loss_g.item())


def forced_step(tt, kinks, it, a, b, engine):
    """Step `it` from the trainer's current state (the engine's after step it-1), the reference
    for the engine's step `it` (`engine`: its dump). The plain float64 step; or, when a gradient
    differs from the engine's by more than GRAD_LIMIT, the same step with up to MAX_FLIPS elements
    within KINK_TAU of a kink given the derivative of the other side (the engine's), chosen
    greedily among the NEAREST nearest to zero; flips that do not bring every gradient within
    GRAD_LIMIT are dropped. Returns the snapshot, with `kinks` (JSON: [[site, index, float64
    value, derivative taken]]) and ROLE/adam_step/KEY (PyTorch's Adam on the engine's gradients)."""
    before = tt.save_state()
    adam = tt.adam_from(engine, it)
    tt.restore_state(before)
    kinks.begin()
    snap = tt.snapshot(tt.step(it, a, b))
    plain, plain_state, near = snap, tt.save_state(), sorted(kinks.near)[:NEAREST]
    err, chosen = grad_error(tt.c, snap, engine)[0], []
    while err > GRAD_LIMIT and len(chosen) < MAX_FLIPS:
        best = None
        for _, key, i, x, other in near:
            if any(f[0] == key and f[1] == i for f in chosen):
                continue
            flip = chosen + [[key, i, x, other]]
            force = {}
            for fk, fi, _, fd in flip:
                force.setdefault(fk, {})[fi] = fd
            tt.restore_state(before)
            kinks.begin(force)
            trial = tt.snapshot(tt.step(it, a, b))
            e = grad_error(tt.c, trial, engine)[0]
            if best is None or e < best[0]:
                best = (e, flip, trial, tt.save_state())
            if e <= GRAD_LIMIT:
                break
        if best is None or best[0] >= err:
            break
        err, chosen, snap, state = best
        tt.restore_state(state)
    if err > GRAD_LIMIT:  # not explained by kinks: the plain reference, for the report
        snap, chosen = plain, []
        tt.restore_state(plain_state)
    snap.update(adam)
    snap['kinks'] = np.array(json.dumps(chosen))
    return snap


def main():
    global DTYPE
    outdir, name = sys.argv[1], sys.argv[2]
    if '--float32' in sys.argv[3:]:
        DTYPE = torch.float32
    forced = sys.argv[sys.argv.index('--forced') + 1] if '--forced' in sys.argv else None
    c = CASES[name]
    out = os.path.join(outdir, name)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    nets, imgs, table = build_case(c, None if forced else out)
    if not forced:
        np.savez(os.path.join(out, 'init.npz'), **{'%s/value/%s' % (r, k): v.detach().numpy().copy()
                                                    for r, n in nets.items() for k, v in n.state_dict().items()
                                                    if not k.endswith('num_batches_tracked')})
    kinks = Kinks() if forced else None
    tt = TorchTrainer(c, nets, table, kinks)
    for it in range(c['steps']):
        a, b = to_tensor(imgs[it, :, 0]), to_tensor(imgs[it, :, 1])
        if not forced:
            np.savez(os.path.join(out, 'free_step%d.npz' % it), **tt.snapshot(tt.step(it, a, b)))
            continue
        if it > 0:
            _, tensors = read_engine(os.path.join(forced, 'step%d.txt' % (it - 1)),
                                     os.path.join(forced, 'step%d.bin' % (it - 1)))
            tt.load(tensors, it)
        _, engine = read_engine(os.path.join(forced, 'step%d.txt' % it), os.path.join(forced, 'step%d.bin' % it))
        np.savez(os.path.join(out, 'forced_step%d.npz' % it), **forced_step(tt, kinks, it, a, b, engine))
    if not forced:
        json.dump(dict(c, seed=SEED, lr=LR), open(os.path.join(out, 'case.json'), 'w'), indent=1)


if __name__ == '__main__':
    main()
