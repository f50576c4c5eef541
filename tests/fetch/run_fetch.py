#!/usr/bin/python3
"""tests/fetch/run_fetch.py: `i2i fetch` against a local HTTP server, without the internet.

Generates with Debian's torch one narrow CycleGAN checkpoint in the exact mmagic layout (the
fixtures' replica), saved under the published summer2winter file name, and a manifest override
(I2I_MANIFEST) whose URL points at tests/fetch/range_server.py on 127.0.0.1 and whose sha256 is
the file's real prefix. Checks: download, verify, convert, install, and `i2i translate` finding
the model (equal to the torch module on BGR input); idempotence and --force; resume within a run
(a cut connection), across runs (a .part), against a server that ignores Range or answers a bad
206, and a .part already complete (416); a corrupted download refused and kept aside; HTTP 404
and 503, connection refused, an unresolvable host, a redirect, a redirect loop, an absurd
Content-Length, a stalled server, a full disk (/dev/full); --from FILE|DIR and I2I_FETCH_FROM
offline, with their hash check; unwritable model folders. Not a test of the real URLs.

Usage: run_fetch.py BUILD_DIR SOURCE_DIR WORK_DIR. Ends with "N passed, N failed".
"""
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np

build, src, work = [os.path.abspath(p) for p in sys.argv[1:4]]
i2i = os.path.join(build, 'converter', 'i2i')
fixtures = os.path.join(src, 'tests', 'fixtures')
sys.path.insert(0, fixtures)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from range_server import RangeServer  # noqa: E402
from fetch_fixture import PUBLISHED, make_checkpoint, sha256_prefix, write_manifest  # noqa: E402,E501

passed = failed = 0
t_start = time.time()


def check(ok, name, detail='', show=False):
    """Counts one check; the detail is printed on failure (or always with show)."""
    global passed, failed
    passed += bool(ok)
    failed += not ok
    print('%s %s%s' % ('ok  ' if ok else 'FAIL', name,
                       (': ' + detail) if detail and (show or not ok) else ''), flush=True)
    return ok


class Env:
    """Fresh XDG folders and a manifest for one scenario."""

    def __init__(self, name, url, sha):
        self.root = os.path.join(work, name)
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root)
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, 'data')
        self.cache = os.path.join(self.root, 'cache')
        self.models = os.path.join(self.data, 'i2i', 'models')
        self.downloads = os.path.join(self.cache, 'i2i', 'downloads')
        self.manifest = os.path.join(self.root, 'manifest')
        write_manifest(self.manifest, url, sha, src)
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ('I2I_MODEL_PATH', 'I2I_FETCH_FROM', 'http_proxy', 'https_proxy',
                                 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'all_proxy')}
        self.env.update({'XDG_DATA_HOME': self.data, 'XDG_CACHE_HOME': self.cache,
                         'HOME': self.root, 'I2I_MANIFEST': self.manifest,
                         'I2I_NO_PROGRESS': '1', 'NO_PROXY': '127.0.0.1,localhost',
                         'no_proxy': '127.0.0.1,localhost'})

    def run(self, *args, env=None, prefix=(), timeout=120):
        e = dict(self.env)
        e.update(env or {})
        t0 = time.time()
        r = subprocess.run(list(prefix) + [i2i] + list(args), capture_output=True, text=True,
                           env=e, timeout=timeout)
        r.seconds = time.time() - t0
        r.all = r.stdout + r.stderr
        return r

    def onnx(self):
        if not os.path.isdir(self.models):
            return []
        return sorted(f for f in os.listdir(self.models) if f.endswith('.onnx'))

    def leftovers(self):
        """Staging folders or temporaries left in the model folder."""
        if not os.path.isdir(self.models):
            return []
        return sorted(f for f in os.listdir(self.models) if not f.endswith('.onnx'))


def tail(r, n=600):
    return (r.stdout + r.stderr)[-n:].replace('\n', ' | ')


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    return p


ALL4 = ['summer2winter.D.onnx', 'summer2winter.onnx', 'winter2summer.D.onnx',
        'winter2summer.onnx']


def main():
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o755)
    if not os.access(i2i, os.X_OK):
        check(False, 'the i2i tool is built', i2i)
        return
    if importlib.util.find_spec('torch') is None:
        print('no torch in %s (Debian python3-torch): skipping' % sys.executable)
        print('0 passed, 0 failed')
        sys.exit(77)
    ckdir = os.path.join(work, 'ckpt')
    shutil.rmtree(ckdir, ignore_errors=True)
    os.makedirs(ckdir)
    os.chmod(ckdir, 0o755)
    ck = os.path.join(ckdir, PUBLISHED)
    t0 = time.time()
    g_ws = make_checkpoint(ck)
    data = open(ck, 'rb').read()
    size = len(data)
    sha = sha256_prefix(ck)
    print('checkpoint: %s, %d bytes, sha256 %s (%.1f s)' % (PUBLISHED, size, sha, time.time() - t0))
    srv = RangeServer({PUBLISHED: data}, cut=int(size * 0.4), stall=6.0)
    try:
        scenarios(srv, ck, data, size, sha, g_ws)
    finally:
        srv.close()


def scenarios(srv, ck, data, size, sha, g_ws):
    # ---- download, verify, convert, install; the model lookup finds it
    E = Env('download', srv.url('ok', PUBLISHED), sha)
    r = E.run('fetch', 'winter2summer')
    reqs = srv.requests()
    check(r.returncode == 0, 'fetch winter2summer downloads and installs', tail(r))
    check(E.onnx() == ALL4, 'both generators and both discriminators installed', str(E.onnx()))
    check(E.leftovers() == [], 'no staging folder or temporary left', str(E.leftovers()))
    check(len(reqs) == 1 and reqs[0]['range'] is None and reqs[0]['status'] == 200
          and reqs[0]['sent'] == size, 'one plain GET of the whole file', str(reqs))
    check(not os.path.exists(os.path.join(E.downloads, PUBLISHED)) and
          not os.path.exists(os.path.join(E.downloads, PUBLISHED + '.part')),
          'the download is removed once installed, no .part left',
          str(os.listdir(E.downloads) if os.path.isdir(E.downloads) else None))
    check('container:      zip' in r.stdout, 'reports the container format', tail(r))
    check('collections.OrderedDict' in r.stdout and 'torch._utils._rebuild_tensor_v2' in r.stdout,
          'reports the pickle globals', tail(r))
    check('discriminators: present' in r.stdout, 'reports the discriminators', tail(r))
    check('sha256:         ' + sha in r.stdout, 'reports the verified sha256', tail(r))
    check('colour order bgr' in r.stdout, 'reports the colour order', tail(r))
    # translate through the engine's lookup (XDG_DATA_HOME), equal to torch on BGR input
    import fixture_common as fc
    import mmagic_replica as mr
    img, _ = fc.test_image(64, 48, 1)
    inp, out = os.path.join(E.root, 'in.npy'), os.path.join(E.root, 'out.npy')
    np.save(inp, img)
    r = E.run('translate', 'winter2summer', inp, out, '--backend', 'cpu')
    ok = check(r.returncode == 0 and os.path.exists(out), 'i2i translate winter2summer finds it',
               tail(r))
    if ok:
        y = np.load(out)
        mult, min_side = mr.size_multiple(g_ws)
        want = fc.run_image(g_ws.eval(), np.ascontiguousarray(img[:, :, ::-1]), mult,
                            min_side)[:, :, ::-1]
        d = float(np.abs(y - want).max())
        check(d <= 1e-4, 'the installed winter2summer equals torch on BGR input', 'max |diff| %.2g' % d, show=True)
    r = E.run('fetch', '--list')
    line = [ln for ln in r.stdout.splitlines() if ln.startswith('winter2summer ')]
    check(r.returncode == 0 and line and line[0].rstrip().endswith('installed'),
          'fetch --list shows it installed', str(line))
    # the same bytes as `i2i convert`
    cdir = os.path.join(E.root, 'convert')
    r = E.run('convert', ck, '-o', cdir)
    same = r.returncode == 0 and all(
        open(os.path.join(cdir, f), 'rb').read() == open(os.path.join(E.models, f), 'rb').read()
        for f in ALL4)
    check(same, 'installed files equal `i2i convert` output byte for byte', tail(r))

    # ---- idempotence, then --force
    srv.clear()
    r = E.run('fetch', 'winter2summer', 'summer2winter')
    check(r.returncode == 0 and 'installed already' in r.stdout and srv.requests() == [],
          'a second fetch downloads nothing (0 bytes)', tail(r) + ' ' + str(srv.requests()))
    srv.clear()
    r = E.run('fetch', 'winter2summer', '--force', '--keep-download')
    reqs = srv.requests()
    check(r.returncode == 0 and len(reqs) == 1 and reqs[0]['sent'] == size,
          '--force downloads again', tail(r) + ' ' + str(reqs))
    kept = os.path.join(E.downloads, PUBLISHED)
    check(os.path.exists(kept) and open(kept, 'rb').read() == data,
          '--keep-download keeps the verified .pth in the cache')
    srv.clear()
    shutil.rmtree(E.models)
    r = E.run('fetch', 'summer2winter')
    check(r.returncode == 0 and srv.requests() == [] and 'downloaded before' in r.stdout and
          E.onnx() == ALL4, 'a kept download is reused (verified) without a request', tail(r))

    # ---- an interrupted download resumes within the run
    srv.clear()
    E = Env('cut', srv.url('cut', PUBLISHED), sha)
    r = E.run('fetch', 'winter2summer')
    reqs = srv.requests()
    cut = int(size * 0.4)
    sent = sum(q['sent'] for q in reqs)
    check(r.returncode == 0 and E.onnx() == ALL4, 'a cut download is resumed and installed',
          tail(r))
    check(len(reqs) == 2 and reqs[0]['sent'] == cut and reqs[1]['range'] == 'bytes=%d-' % cut,
          'the second request is Range: bytes=%d-' % cut, str(reqs))
    check(len(reqs) == 2 and reqs[1]['status'] == 206, 'the server answered 206', str(reqs))
    check(sent < 1.1 * size, 'fewer than 1.1x the file sent in total',
          '%d of %d bytes (%.3fx)' % (sent, size, sent / size), show=True)

    # ---- resume across runs: a .part from an earlier run
    srv.clear()
    E = Env('part', srv.url('ok', PUBLISHED), sha)
    os.makedirs(E.downloads)
    n = size // 3
    with open(os.path.join(E.downloads, PUBLISHED + '.part'), 'wb') as f:
        f.write(data[:n])
    r = E.run('fetch', 'winter2summer')
    reqs = srv.requests()
    check(r.returncode == 0 and E.onnx() == ALL4 and len(reqs) == 1 and
          reqs[0]['range'] == 'bytes=%d-' % n and reqs[0]['status'] == 206 and
          reqs[0]['sent'] == size - n, 'a .part from an earlier run is resumed (206, the rest only)',
          tail(r) + ' ' + str(reqs))
    check('resuming at' in r.stdout, 'says it resumes', tail(r))

    # ---- a .part that already holds everything: 416, nothing transferred
    srv.clear()
    E = Env('complete', srv.url('ok', PUBLISHED), sha)
    os.makedirs(E.downloads)
    with open(os.path.join(E.downloads, PUBLISHED + '.part'), 'wb') as f:
        f.write(data)
    r = E.run('fetch', 'winter2summer')
    reqs = srv.requests()
    check(r.returncode == 0 and E.onnx() == ALL4 and len(reqs) == 1 and reqs[0]['status'] == 416,
          'a complete .part is finished after a 416, nothing sent again', tail(r) + ' ' + str(reqs))

    # ---- a server that ignores Range: 200 restarts the .part
    srv.clear()
    E = Env('norange', srv.url('norange', PUBLISHED), sha)
    os.makedirs(E.downloads)
    with open(os.path.join(E.downloads, PUBLISHED + '.part'), 'wb') as f:
        f.write(b'\xff' * (size // 2))
    r = E.run('fetch', 'winter2summer')
    reqs = srv.requests()
    check(r.returncode == 0 and E.onnx() == ALL4 and len(reqs) == 1 and reqs[0]['range'] and
          reqs[0]['status'] == 200 and 'ignored a resume' in r.stdout,
          'a 200 to a Range request restarts the file', tail(r) + ' ' + str(reqs))

    # ---- a 206 that does not continue the .part: start over
    srv.clear()
    E = Env('badrange', srv.url('badrange', PUBLISHED), sha)
    os.makedirs(E.downloads)
    with open(os.path.join(E.downloads, PUBLISHED + '.part'), 'wb') as f:
        f.write(data[:1000])
    r = E.run('fetch', 'winter2summer')
    reqs = srv.requests()
    check(r.returncode == 0 and E.onnx() == ALL4 and len(reqs) == 2 and reqs[1]['range'] is None,
          'a 206 at the wrong offset is refused and the download starts over',
          tail(r) + ' ' + str(reqs))

    # ---- a corrupted download: refused, kept aside, nothing installed
    srv.clear()
    E = Env('flip', srv.url('flip', PUBLISHED), sha)
    r = E.run('fetch', 'winter2summer')
    bad = os.path.join(E.downloads, PUBLISHED + '.bad')
    check(r.returncode == 1 and 'sha256 mismatch' in r.stderr, 'a flipped byte fails the hash check',
          tail(r))
    check(os.path.exists(bad) and os.path.getsize(bad) == size, 'kept aside as NAME.bad')
    check(E.onnx() == [] and E.leftovers() == [] and
          not os.path.exists(os.path.join(E.downloads, PUBLISHED)) and
          not os.path.exists(os.path.join(E.downloads, PUBLISHED + '.part')),
          'nothing converted or installed, no .part left', str(E.onnx() + E.leftovers()))

    # ---- HTTP errors, no network
    for code, words in ((404, 'HTTP 404'), (503, 'HTTP 503')):
        E = Env('http%d' % code, srv.url('status%d' % code, PUBLISHED), sha)
        url = srv.url('status%d' % code, PUBLISHED)
        r = E.run('fetch', 'winter2summer')
        check(r.returncode == 1 and words in r.stderr and url in r.stderr and E.onnx() == [],
              'HTTP %d gives its status and the URL' % code, tail(r))
    url = 'http://127.0.0.1:%d/ok/%s' % (free_port(), PUBLISHED)
    E = Env('refused', url, sha)
    r = E.run('fetch', 'winter2summer')
    check(r.returncode == 1 and 'cannot connect to ' + url in r.stderr and E.onnx() == [],
          'connection refused: a clear message with the URL', tail(r))
    url = 'http://i2i-fetch-test.invalid/%s' % PUBLISHED
    E = Env('noresolve', url, sha)
    r = E.run('fetch', 'winter2summer', timeout=90)
    check(r.returncode == 1 and 'cannot resolve the host of ' + url in r.stderr,
          'an unresolvable host: a clear message with the URL', tail(r))

    # ---- redirects, a loop, an absurd size, a stall, a full disk
    srv.clear()
    E = Env('redirect', srv.url('redirect', PUBLISHED), sha)
    r = E.run('fetch', 'winter2summer')
    check(r.returncode == 0 and E.onnx() == ALL4 and len(srv.requests()) == 2,
          'a redirect is followed', tail(r))
    E = Env('loop', srv.url('loop', PUBLISHED), sha)
    r = E.run('fetch', 'winter2summer')
    check(r.returncode == 1 and 'redirects' in r.stderr, 'a redirect loop is cut', tail(r))
    E = Env('huge', srv.url('huge', PUBLISHED), sha)
    r = E.run('fetch', 'winter2summer')
    part = os.path.join(E.downloads, PUBLISHED + '.part')
    check(r.returncode == 1 and 'limit' in r.stderr and
          (not os.path.exists(part) or os.path.getsize(part) <= 65536),
          'an absurd Content-Length is refused', tail(r))
    E = Env('stall', srv.url('stall', PUBLISHED), sha)
    r = E.run('fetch', 'winter2summer', '--timeout', '1', '--retries', '0')
    check(r.returncode == 1 and 'stalled' in r.stderr and r.seconds < 5.5,
          'a stalled server is given up (--timeout)', '%.1f s: %s' % (r.seconds, tail(r)) if r.returncode != 1 else '%.1f s' % r.seconds, show=True)
    E = Env('diskfull', srv.url('ok', PUBLISHED), sha)
    os.makedirs(E.downloads)
    os.symlink('/dev/full', os.path.join(E.downloads, PUBLISHED + '.part'))
    r = E.run('fetch', 'winter2summer')
    check(r.returncode == 1 and 'no disk space' in r.stderr and E.onnx() == [],
          'a full disk (ENOSPC) is reported', tail(r))

    # ---- --from and I2I_FETCH_FROM, offline (the URL points at a closed port)
    offline = 'http://127.0.0.1:%d/none/%s' % (free_port(), PUBLISHED)
    E = Env('from-dir', offline, sha)
    r = E.run('fetch', 'winter2summer', '--from', os.path.dirname(ck))
    check(r.returncode == 0 and E.onnx() == ALL4 and 'yours, left untouched' in r.stdout and
          os.path.exists(ck), '--from DIR installs offline', tail(r))
    check(not os.path.isdir(E.downloads) or os.listdir(E.downloads) == [],
          '--from downloads nothing')
    E = Env('from-env', offline, sha)
    r = E.run('fetch', 'summer2winter', env={'I2I_FETCH_FROM': os.path.dirname(ck)})
    check(r.returncode == 0 and E.onnx() == ALL4, 'I2I_FETCH_FROM=DIR installs offline', tail(r))
    E = Env('from-file', offline, sha)
    mine = os.path.join(E.root, 'mine.pth')
    shutil.copy(ck, mine)
    r = E.run('fetch', '--from', mine)
    check(r.returncode == 0 and E.onnx() == ALL4, '--from FILE under another name: found by its hash',
          tail(r))
    E = Env('from-bad', offline, '0badc0de')
    r = E.run('fetch', 'winter2summer', '--from', os.path.dirname(ck))
    check(r.returncode == 1 and 'sha256 mismatch' in r.stderr and E.onnx() == [] and
          open(ck, 'rb').read() == data, '--from still verifies the hash (file left as it was)',
          tail(r))
    E = Env('from-missing', offline, sha)
    empty = os.path.join(E.root, 'empty')
    os.makedirs(empty)
    r = E.run('fetch', 'winter2summer', '--from', empty)
    check(r.returncode == 1 and 'is not in ' + empty in r.stderr, '--from DIR without the file',
          tail(r))
    E = Env('from-wrongfile', offline, sha)
    r = E.run('fetch', '--from', E.manifest)
    check(r.returncode == 1 and 'not a published checkpoint' in r.stderr,
          '--from FILE that is no published checkpoint', tail(r))

    # ---- unwritable model folders: refused before anything is downloaded
    srv.clear()
    E = Env('notdir', srv.url('ok', PUBLISHED), sha)
    blocker = os.path.join(E.root, 'a-file')
    open(blocker, 'w').close()
    r = E.run('fetch', 'winter2summer', '-o', os.path.join(blocker, 'models'))
    check(r.returncode == 1 and 'cannot create the model folder' in r.stderr and
          srv.requests() == [], 'a model folder that cannot be made: message, no download', tail(r))
    srv.clear()
    E = Env('readonly', srv.url('ok', PUBLISHED), sha)
    os.makedirs(E.models)
    os.chmod(E.models, 0o555)
    prefix = ()
    if os.geteuid() == 0:   # root writes anywhere: run the tool as nobody
        os.makedirs(E.cache, exist_ok=True)
        os.chmod(E.cache, 0o777)
        prefix = ('setpriv', '--reuid=65534', '--regid=65534', '--clear-groups')
        # nobody must be able to run the tool and read the manifest (a private parent folder,
        # such as mktemp -d's, stops it)
        can = shutil.which('setpriv') and E.run('fetch', '--list', prefix=prefix).returncode == 0
    if prefix and not can:
        print('skip an unwritable model folder (root, and nobody cannot run %s or read its '
              'manifest)' % i2i)
    else:
        r = E.run('fetch', 'winter2summer', prefix=prefix)
        check(r.returncode == 1 and 'cannot write into the model folder' in r.stderr and
              srv.requests() == [] and E.onnx() == [],
              'an unwritable model folder: message, no download', tail(r))

    # ---- usage
    E = Env('usage', srv.url('ok', PUBLISHED), sha)
    r = E.run('fetch', 'winter2sumer')
    check(r.returncode == 2 and 'unknown model' in r.stderr, 'an unknown task name', tail(r))
    r = E.run('fetch')
    check(r.returncode == 2 and '--all' in r.stderr, 'no task named', tail(r))


if __name__ == '__main__':
    try:
        main()
    except Exception as ex:  # a crash of the harness is a failure, not a pass
        import traceback
        traceback.print_exc()
        check(False, 'the test harness ran to the end', repr(ex))
    print('total %.1f s' % (time.time() - t_start))
    print('%d passed, %d failed' % (passed, failed))
    sys.exit(1 if failed else 0)
