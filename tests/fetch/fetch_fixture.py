#!/usr/bin/python3
"""tests/fetch/fetch_fixture.py: a stand-in for a published checkpoint, for offline fetch runs.

What it is: one narrow (8-channel) CycleGAN summer2winter checkpoint in the exact mmagic layout
(the fixtures' replica, zip container), saved under the published file name, and a copy of
weights/manifest whose entry for that checkpoint carries the file's real sha256 prefix (and a
URL of your choice). With I2I_MANIFEST=OUTDIR/manifest and I2I_FETCH_FROM=OUTDIR (or the URL
served locally), `i2i fetch winter2summer` runs as on a user's machine. What it is not: the
published weights (its pictures are noise); run with Debian's /usr/bin/python3 (torch).

Usage: fetch_fixture.py OUTDIR [--url URL]   (prints the two environment settings)
"""
import argparse
import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, 'tests', 'fixtures'))

PUBLISHED = ('cyclegan_lsgan_resnet_in_1x1_246200_summer2winter_convert-bgr_'
             '20210902_165932-fcf08dc1.pth')
GROUP = '[checkpoint cyclegan-summer2winter]'


def make_checkpoint(path):
    """Writes the checkpoint; returns the winter -> summer generator (generators.summer)."""
    import make_checkpoints as mc
    import mmagic_replica as mr
    g_sw = mc.new_resnet(8, 9, 31)        # summer -> winter: generators.winter
    g_ws = mc.new_resnet(8, 9, 32)        # winter -> summer: generators.summer
    d_w = mc.new_disc(3, 'IN', 8, 33, 246200)
    d_s = mc.new_disc(3, 'IN', 8, 34, 246200)
    sd = mr.translation_state_dict([('summer', g_ws), ('winter', g_sw)],
                                   [('summer', d_s), ('winter', d_w)])
    meta = mc.make_meta(246200, 'cyclegan_summer2winter', 'cyclegan_summer2winter.py',
                        'Thu Sep  2 16:59:32 2021')
    mc.save_ckpt({'meta': meta, 'state_dict': sd}, path, 'zip')
    return g_ws


def sha256_prefix(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()[:8]


def write_manifest(path, url, sha, src=SRC):
    """weights/manifest with the summer2winter checkpoint's url and sha256 replaced."""
    out, group = [], None
    with open(os.path.join(src, 'weights', 'manifest')) as f:
        for line in f:
            s = line.strip()
            if s.startswith('['):
                group = s
            if group == GROUP and s.startswith('url='):
                line = 'url=%s\n' % url
            elif group == GROUP and s.startswith('sha256='):
                line = 'sha256=%s\n' % sha
            out.append(line)
    with open(path, 'w') as f:
        f.writelines(out)
    os.chmod(path, 0o644)


def main():
    ap = argparse.ArgumentParser(description='a stand-in published checkpoint and manifest')
    ap.add_argument('outdir')
    ap.add_argument('--url', default='http://127.0.0.1:9/' + PUBLISHED,
                    help='the URL the manifest gives (default: a closed local port)')
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    ck = os.path.join(a.outdir, PUBLISHED)
    make_checkpoint(ck)
    man = os.path.join(a.outdir, 'manifest')
    write_manifest(man, a.url, sha256_prefix(ck))
    print('I2I_MANIFEST=%s' % os.path.abspath(man))
    print('I2I_FETCH_FROM=%s' % os.path.abspath(a.outdir))
    return 0


if __name__ == '__main__':
    sys.exit(main())
