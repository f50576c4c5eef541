"""tests/gimp/gimptest.py: helpers shared by the GIMP tests (run, safety, interactive, bench; tests/gimp3).

What it is: the throw-away GIMP profile and `meson install` of the plug-in from an empty HOME,
the fixture models (make_models.py + `i2i convert`), structured test photographs cut from the
GIMP splash photo (Debian gimp-data), a small PNG reader/writer for 8- and 16-bit files (PIL
reads 16-bit RGB as 8-bit), a 32-bit float TIFF reader/writer and the sRGB curve, the checks of
the clamp of float layers (a ramp picture, the overrange model's expected samples; shared by the
2.10 and 3 tests), gimp-console batch calls with per-command markers, and the "N passed, N
failed" bookkeeping. What it is not: a GIMP binding; everything goes through gimp-console's
Script-Fu batch mode, as a user's script would.
"""
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, '..', '..'))
SPLASH = '/usr/share/gimp/2.0/images/gimp-splash.png'
GIMP_CONSOLE = 'gimp-console-2.10'
PY = '/usr/bin/python3'


# ------------------------------------------------------------------------------------------
# bookkeeping


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def check(self, name, ok, detail=''):
        if ok:
            self.passed += 1
            print('PASS %s%s' % (name, (': ' + detail) if detail else ''), flush=True)
        else:
            self.failed += 1
            self.failures.append(name)
            print('FAIL %s%s' % (name, (': ' + detail) if detail else ''), flush=True)
        return ok

    def summary(self):
        if self.failures:
            print('failed: ' + ', '.join(self.failures))
        print('%d passed, %d failed' % (self.passed, self.failed), flush=True)
        return 0 if self.failed == 0 else 1


def log(msg):
    print('# ' + msg, flush=True)


# ------------------------------------------------------------------------------------------
# PNG (8/16-bit gray, gray+alpha, RGB, RGBA; no palette, no interlace)


def png_write(path, arr):
    """Writes HxW, HxWx2, HxWx3 or HxWx4 uint8 or uint16 as PNG."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, c = a.shape
    depth = 16 if a.dtype == np.uint16 else 8
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = a.astype('>u2' if depth == 16 else 'u1').reshape(h, -1).tobytes()
    stride = w * c * depth // 8
    rows = b''.join(b'\0' + raw[y * stride:(y + 1) * stride] for y in range(h))

    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)

    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n')
        f.write(chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, depth, ctype, 0, 0, 0)))
        f.write(chunk(b'IDAT', zlib.compress(rows, 6)))
        f.write(chunk(b'IEND', b''))


def png_read(path):
    """Returns (array HxWxC uint8/uint16, bit depth)."""
    data = open(path, 'rb').read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n', path
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        n, t = struct.unpack('>I4s', data[pos:pos + 8])
        d = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if t == b'IHDR':
            hdr = struct.unpack('>IIBBBBB', d)
        elif t == b'IDAT':
            idat.append(d)
        elif t == b'IEND':
            break
    w, h, depth, ctype, _, _, interlace = hdr
    if depth == 8 and ctype != 3:
        from PIL import Image
        a = np.asarray(Image.open(path), dtype=np.uint8)
        return (a[:, :, None] if a.ndim == 2 else a).copy(), 8
    if ctype == 3 or interlace:
        raise ValueError('%s: palette or interlaced PNG' % path)
    c = {0: 1, 4: 2, 2: 3, 6: 4}[ctype]
    bpp = max(1, c * depth // 8)
    stride = w * c * depth // 8
    raw = zlib.decompress(b''.join(idat))
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 255
        else:
            cur = line.copy()
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                b = prev[x]
                if f == 1:
                    p = a
                elif f == 3:
                    p = (a + b) >> 1
                else:
                    cc = prev[x - bpp] if x >= bpp else 0
                    pa, pb, pc = abs(b - cc), abs(a - cc), abs(a + b - 2 * cc)
                    p = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
                cur[x] = (cur[x] + p) & 255
        out[y] = cur
        prev = cur
    if depth == 16:
        arr = out.view('>u2').astype(np.uint16).reshape(h, w, c)
    else:
        arr = out.reshape(h, w, c)
    return arr, depth


# ------------------------------------------------------------------------------------------
# TIFF, 32-bit float RGB only (what `i2i translate` reads and writes for float pictures):
# uncompressed and interleaved, one strip on writing, any strips on reading


def tiff_write_float(path, arr):
    """Writes HxWx3 float32 values as they are (R'G'B', no colour profile)."""
    a = np.ascontiguousarray(arr, dtype='<f4')
    h, w, c = a.shape
    data = a.tobytes()
    ifd_at = 8 + len(data)
    n = 11
    extra = ifd_at + 2 + 12 * n + 4          # BitsPerSample and SampleFormat values follow the IFD
    tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, c, extra), (259, 3, 1, 1), (262, 3, 1, 2), (273, 4, 1, 8),
            (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1), (339, 3, c, extra + 2 * c)]
    ifd = struct.pack('<H', n)
    for tag, typ, cnt, v in tags:
        ifd += struct.pack('<HHI', tag, typ, cnt) + (struct.pack('<HH', v, 0) if typ == 3 and cnt == 1
                                                     else struct.pack('<I', v))
    ifd += struct.pack('<I', 0) + struct.pack('<%dH' % c, *[32] * c) + struct.pack('<%dH' % c, *[3] * c)
    with open(path, 'wb') as f:
        f.write(b'II*\0' + struct.pack('<I', ifd_at) + data + ifd)


def tiff_read_float(path):
    """Reads an uncompressed, interleaved 32-bit float TIFF; returns HxWxC float32."""
    d = open(path, 'rb').read()
    e = '<' if d[:2] == b'II' else '>'
    at = struct.unpack(e + 'I', d[4:8])[0]
    size = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 11: 4, 12: 8}
    fmt = {1: 'B', 2: 'B', 3: 'H', 4: 'I', 5: 'I', 7: 'B', 11: 'f', 12: 'd'}
    t = {}
    for i in range(struct.unpack(e + 'H', d[at:at + 2])[0]):
        tag, typ, cnt = struct.unpack(e + 'HHI', d[at + 2 + 12 * i:at + 10 + 12 * i])
        if typ not in size:
            continue
        nb = size[typ] * cnt
        raw = d[at + 10 + 12 * i:at + 14 + 12 * i]
        src = raw if nb <= 4 else d[struct.unpack(e + 'I', raw)[0]:][:nb]
        t[tag] = struct.unpack(e + '%d%s' % (cnt * (2 if typ == 5 else 1), fmt[typ]), src[:nb])
    w, h, c = t[256][0], t[257][0], t.get(277, (1,))[0]
    if t.get(259, (1,))[0] != 1 or t.get(284, (1,))[0] != 1 or set(t[258]) != {32} or set(t.get(339, (1,))) != {3}:
        raise ValueError('%s: not an uncompressed interleaved 32-bit float TIFF' % path)
    data = b''.join(d[o:o + n] for o, n in zip(t[273], t[279]))
    return np.frombuffer(data, e + 'f4', w * h * c).reshape(h, w, c).astype(np.float32)


def srgb_encode(v):
    """Linear light -> sRGB-encoded (perceptual) values, float64 (the sRGB curve babl uses)."""
    v = np.asarray(v, np.float64)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(np.maximum(v, 0.0031308), 1 / 2.4) - 0.055)


def srgb_decode(v):
    """sRGB-encoded -> linear light, float64."""
    v = np.asarray(v, np.float64)
    return np.where(v <= 0.04045, v / 12.92, np.power((np.maximum(v, 0.04045) + 0.055) / 1.055, 2.4))


# ------------------------------------------------------------------------------------------
# images


def photo(w, h, x0=0, y0=0):
    """A w x h RGB crop (uint8) of the GIMP splash photo, resized when larger than it."""
    from PIL import Image
    im = Image.open(SPLASH).convert('RGB')
    if w > im.width - x0 or h > im.height - y0:
        f = max(w / (im.width - x0), h / (im.height - y0))
        im = im.resize((int(im.width * f) + 1, int(im.height * f) + 1), Image.LANCZOS)
    return np.asarray(im.crop((x0, y0, x0 + w, y0 + h)), dtype=np.uint8).copy()


def ramp():
    """A 256x6 RGB picture whose every channel runs through all 256 values (R up, G down, B scrambled)."""
    x = np.arange(256)
    a = np.zeros((6, 256, 3), np.uint8)
    for r in range(6):
        a[r, :, 0] = x
        a[r, :, 1] = 255 - x
        a[r, :, 2] = (x * 37 + r * 11) % 256
    return a


def clamp_checks(C, sec, ok_section, clamps, out, shape):
    """The overrange model (2 x input, no tanh) on float layers: the plug-in gives it R'G'B' p, it answers
    2p - 0.5 (0.5 past 0..1 at both ends), and the plug-in clamps it as 8- and 16-bit layers are clamped.
    Every sample is finite and in [0,1]; those whose value is past 0..1 (p < 0.25 or p > 0.75) are exactly
    0 or 1 (babl's curve keeps both ends exactly in a linear layer); the others equal (model output + 1) / 2
    within 1e-6 (perceptual) or 1e-5 (linear: babl's curve both ways, the model doubling its error; 9e-7
    measured). `clamps`: (name, GIMP precision, its enum value, linear), each run as the batch section
    'clamp-NAME' with the layer's samples exported raw to out/NAME.in.raw and out/NAME.out.raw;
    ok_section(section) says whether a section ran to its end without an error."""
    h, w = shape
    for name, prec, value, linear in clamps:
        s = sec('clamp-' + name)
        pin, pout = os.path.join(out, name + '.in.raw'), os.path.join(out, name + '.out.raw')
        n = h * w * 3 * 4
        before = re.search(r'PRECISION-BEFORE (\d+)', s)
        after = re.search(r'PRECISION-AFTER (\d+)', s)
        have = all(os.path.exists(f) and os.path.getsize(f) == n for f in (pin, pout))
        C.check('%s layer, model output past [-1,1]: the run succeeds and the layer keeps its precision (%d)'
                % (prec, value), have and ok_section('clamp-' + name)
                and before is not None and after is not None and int(before.group(1)) == value
                and int(after.group(1)) == value,
                ' '.join(re.findall(r'PRECISION-\w+ \d+', s)) + ('' if have else '; no raw samples: '
                                                                + s.strip()[-300:]))
        if not have:
            continue
        lin = np.fromfile(pin, '<f4').reshape(h, w, 3).astype(np.float64)
        got = np.fromfile(pout, '<f4').reshape(h, w, 3).astype(np.float64)
        p = srgb_encode(lin) if linear else lin
        model = 2.0 * p - 0.5
        high, low = model > 1.0 + 1e-3, model < -1e-3
        inner = ~high & ~low & (model >= 0) & (model <= 1)
        want = np.clip(model, 0, 1)
        if linear:
            want = srgb_decode(want)
        tol = 1e-5 if linear else 1e-6
        C.check('%s layer: every sample finite and within [0,1] (unclamped result %.3g..%.3g)'
                % (prec, model.min(), model.max()), np.isfinite(got).all() and got.min() >= 0 and got.max() <= 1,
                'samples %.9g..%.9g, %d below 0, %d above 1' % (np.nanmin(got), np.nanmax(got), (got < 0).sum(),
                                                                (got > 1).sum()))
        dh = np.abs(got[high] - 1.0).max() if high.any() else np.inf
        dl = np.abs(got[low]).max() if low.any() else np.inf
        C.check('%s layer: samples whose unclamped result is past 1 (%d) are exactly 1, past 0 (%d) exactly 0'
                % (prec, high.sum(), low.sum()), high.sum() > 1000 and low.sum() > 1000 and dh == 0 and dl == 0,
                'max |sample - 1| %.3g, max |sample| %.3g' % (dh, dl))
        d = np.abs(got[inner] - want[inner])
        C.check('%s layer: the other samples (%d) = (model output + 1) / 2 within %g' % (prec, inner.sum(), tol),
                inner.sum() > 1000 and d.max() <= tol, 'max diff %.3g' % d.max())


# ------------------------------------------------------------------------------------------
# processes


def run(cmd, env=None, timeout=600, check=True):
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                       universal_newlines=True)
    if check and r.returncode != 0:
        raise RuntimeError('%s failed (%d):\n%s' % (' '.join(cmd), r.returncode, r.stdout))
    return r


def make_models(work, tool):
    """Fixture checkpoints -> work/models: winter2summer, summer2winter (+ .D), labels2facade,
    winter2summer-id0 (a copy of summer2winter, so the variant is visible); work/bad: broken.onnx
    (truncated), notonnx.onnx (text), overflow.onnx (output inf); work/extra: overrange.onnx (output
    2 x input, past [-1,1]). Returns the models folder."""
    ck = os.path.join(work, 'ckpt')
    models = os.path.join(work, 'models')
    os.makedirs(models, exist_ok=True)
    made = run([PY, os.path.join(HERE, 'make_models.py'), ck]).stdout.split()
    files = [f for f in made if f.endswith('.pth')]
    for f in files:
        run([tool, 'convert', f, '-o', models])
    for n in os.listdir(models):
        if n.startswith('pix2pix_') and not n.endswith('.D.onnx'):
            os.rename(os.path.join(models, n), os.path.join(models, 'labels2facade.onnx'))
        elif n.startswith('pix2pix_'):
            os.rename(os.path.join(models, n), os.path.join(models, 'labels2facade.D.onnx'))
    shutil.copy(os.path.join(models, 'summer2winter.onnx'), os.path.join(models, 'winter2summer-id0.onnx'))
    bad = os.path.join(work, 'bad')
    os.makedirs(bad, exist_ok=True)
    data = open(os.path.join(models, 'winter2summer.onnx'), 'rb').read()
    open(os.path.join(bad, 'broken.onnx'), 'wb').write(data[:len(data) // 3])
    open(os.path.join(bad, 'notonnx.onnx'), 'w').write('this is not an ONNX file\n')
    extra = os.path.join(work, 'extra')
    os.makedirs(extra, exist_ok=True)
    for f in made:
        if f.endswith('overflow.onnx'):
            shutil.copy(f, os.path.join(bad, 'overflow.onnx'))
        elif f.endswith('overrange.onnx'):
            shutil.copy(f, os.path.join(extra, 'overrange.onnx'))
    return models


def gimp_env(home, models):
    env = {k: v for k, v in os.environ.items()
           if k not in ('DISPLAY', 'WAYLAND_DISPLAY', 'XDG_CONFIG_HOME', 'XDG_DATA_HOME', 'XDG_CACHE_HOME',
                        'GIMP2_DIRECTORY', 'I2I_BACKEND', 'I2I_MANIFEST', 'I2I_VERBOSE', 'I2I_PREVIEW_DUMP',
                        'I2I_PLUGIN_INSTALL')}
    env['HOME'] = home
    if models:
        env['I2I_MODEL_PATH'] = models
    return env


def install_plugin(build, home, env):
    """`meson install --tags plugin` from an empty HOME (user install); returns (profile, output)."""
    os.makedirs(home, exist_ok=True)
    e = dict(env)
    e['I2I_PLUGIN_INSTALL'] = 'user'
    r = run(['meson', 'install', '-C', build, '--tags', 'plugin', '--no-rebuild'], env=e, check=False, timeout=600)
    profile = os.path.join(home, '.config', 'GIMP', '2.10')
    if r.returncode != 0:
        raise RuntimeError('meson install failed:\n' + r.stdout)
    return profile, r.stdout


def scm(s):
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'


def gimp_batch(env, commands, logpath, timeout=900):
    """Runs gimp-console once with each command as its own -b (own Script-Fu process), each
    wrapped in @@BEGIN/@@END markers; returns (output, seconds)."""
    args = [GIMP_CONSOLE, '-i', '-d', '-f']
    for name, body in commands:
        args += ['-b', '(begin (gimp-message "@@BEGIN %s") %s (gimp-message "@@END %s"))' % (name, body, name)]
    args += ['-b', '(gimp-quit 0)']
    t0 = time.time()
    r = subprocess.run(['timeout', str(timeout)] + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, stdin=subprocess.DEVNULL)
    dt = time.time() - t0
    with open(logpath, 'w') as f:
        f.write(r.stdout)
    return r.stdout, dt


def sections(text):
    """Splits batch output at the @@BEGIN markers: {name: text up to the next marker}."""
    out, cur, buf = {}, None, []
    for line in text.splitlines():
        if '@@BEGIN ' in line:
            if cur is not None:
                out[cur] = '\n'.join(buf)
            cur, buf = line.split('@@BEGIN ', 1)[1].strip(), []
        elif cur is not None:
            buf.append(line)
    if cur is not None:
        out[cur] = '\n'.join(buf)
    return out


def manifest_directions():
    """(task, label) of the manifest's base directions (no -id0), in file order."""
    dirs, cur, label = [], None, None
    for line in open(os.path.join(SRC, 'weights', 'manifest')):
        line = line.strip()
        if line.startswith('['):
            if cur and not cur.endswith('-id0'):
                dirs.append((cur, label))
            cur = line[len('[direction '):-1] if line.startswith('[direction ') else None
            label = None
        elif cur and line.startswith('label='):
            label = line[len('label='):]
    if cur and not cur.endswith('-id0'):
        dirs.append((cur, label))
    return dirs


# ------------------------------------------------------------------------------------------
# Script-Fu server (gimp.md A6): requests 'G' + uint16 length + text; replies 'G' + status +
# uint16 length + text. (gimp-quit) gets no reply: the socket just closes (P14).


class ScriptFu:
    def __init__(self, port, timeout=60):
        import socket
        t0 = time.time()
        while True:
            try:
                self.sock = socket.create_connection(('127.0.0.1', port), timeout=5)
                break
            except OSError:
                if time.time() - t0 > timeout:
                    raise
                time.sleep(0.3)

    def _recv(self, n):
        buf = b''
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError('Script-Fu server closed the connection')
            buf += chunk
        return buf

    def eval(self, text, timeout=600):
        data = text.encode()
        self.sock.settimeout(timeout)
        self.sock.sendall(b'G' + struct.pack('>H', len(data)) + data)
        hdr = self._recv(4)
        status, n = hdr[1], struct.unpack('>H', hdr[2:4])[0]
        return status, self._recv(n).decode(errors='replace')

    def quit(self):
        try:
            data = b'(gimp-quit 1)'
            self.sock.sendall(b'G' + struct.pack('>H', len(data)) + data)
            self.sock.settimeout(10)
            self.sock.recv(16)
        except (OSError, EOFError):
            pass
        self.sock.close()
