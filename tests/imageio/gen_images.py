#!/usr/bin/python3
"""tests/imageio/gen_images.py: fixtures and independent decodings for test_imageio.

Writes PIL-made images with PIL's decodings as float RGBA .npy references, decodes files the
tests wrote (PIL, or the small PNG/TIFF readers below for 16-bit and float files PIL cannot
hold), and checks .npy files with numpy. Run with /usr/bin/python3. Not an image library."""
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

PHOTO = '/usr/share/gimp/2.0/images/gimp-splash.png'


def photo(w, h):
    """A w x h RGB uint8 crop of GIMP's splash photo (mushrooms on moss), or a texture."""
    if os.path.exists(PHOTO):
        im = Image.open(PHOTO).convert('RGB')
        return np.asarray(im.crop((60, 110, 60 + w, 110 + h)))
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(7)
    r = 0.5 + 0.4 * np.sin(x / 7.0) * np.cos(y / 11.0)
    g = np.clip(x / w + 0.1 * rng.standard_normal((h, w)), 0, 1)
    b = ((x // 16 + y // 16) % 2) * 0.6 + 0.2
    return (np.stack([r, g, b], -1) * 255 + 0.5).astype(np.uint8)


def alpha_mask(h, w):
    """Alpha with exact 0 and 255 regions, a ramp, and scattered mid values."""
    y, x = np.mgrid[0:h, 0:w]
    a = (x * 255 // max(w - 1, 1)).astype(np.uint8)
    a[: h // 4, :] = 0
    a[h // 4: h // 2, : w // 3] = 255
    a[(x * 7 + y * 3) % 13 == 0] = 128
    return a


def to_rgba_float(arr, maxval):
    """uint array (H,W), (H,W,2), (H,W,3) or (H,W,4) -> float32 RGBA in [0,1]."""
    a = arr.astype(np.float64) / maxval
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, c = a.shape
    out = np.ones((h, w, 4), np.float64)
    if c in (1, 2):
        out[:, :, 0:3] = a[:, :, 0:1]
        if c == 2:
            out[:, :, 3] = a[:, :, 1]
    else:
        out[:, :, 0:3] = a[:, :, 0:3]
        if c == 4:
            out[:, :, 3] = a[:, :, 3]
    return out.astype('<f4')


def pil_decode(path):
    im = Image.open(path)
    im.load()
    mode = im.mode
    if mode in ('I;16', 'I;16B', 'I;16L'):
        return to_rgba_float(np.asarray(im).astype(np.uint16), 65535.0)
    if mode == 'I':
        return to_rgba_float(np.asarray(im).astype(np.uint32), 65535.0)
    if mode == 'P':
        im = im.convert('RGBA')
    elif mode == 'CMYK':
        im = im.convert('RGB')
    elif mode not in ('RGB', 'RGBA', 'L', 'LA'):
        raise SystemExit('unexpected PIL mode %s for %s' % (mode, path))
    return to_rgba_float(np.asarray(im), 255.0)


# ---- a small PNG reader (non-interlaced, 8/16-bit gray, gray+alpha, RGB, RGBA) ----------

def png_chunks(data):
    pos = 8
    while pos + 8 <= len(data):
        n, kind = struct.unpack('>I4s', data[pos:pos + 8])
        yield kind, data[pos + 8:pos + 8 + n]
        pos += 12 + n


def png_decode(path):
    data = open(path, 'rb').read()
    idat = b''
    for kind, body in png_chunks(data):
        if kind == b'IHDR':
            w, h, depth, ctype, _, _, interlace = struct.unpack('>IIBBBBB', body)
        elif kind == b'IDAT':
            idat += body
    assert interlace == 0 and depth in (8, 16) and ctype in (0, 2, 4, 6)
    chans = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    bpp = chans * depth // 8
    stride = w * bpp
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, stride + 1)
    out = np.zeros((h, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 1:
            cur = (np.cumsum(line.reshape(w, bpp), axis=0) % 256).reshape(stride)
        elif f == 2:
            cur = (line + prev) % 256
        else:
            cur = np.zeros(stride, np.int32)
            for x in range(0, stride, bpp):
                a = cur[x - bpp:x] if x else np.zeros(bpp, np.int32)
                b = prev[x:x + bpp]
                if f == 3:
                    cur[x:x + bpp] = (line[x:x + bpp] + (a + b) // 2) % 256
                else:
                    c = prev[x - bpp:x] if x else np.zeros(bpp, np.int32)
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
                    cur[x:x + bpp] = (line[x:x + bpp] + pred) % 256
        out[y] = cur
        prev = cur
    px = out.astype(np.uint8).reshape(h, w * bpp)
    if depth == 16:
        px = px.reshape(h, w * chans, 2)
        vals = px[:, :, 0].astype(np.uint32) * 256 + px[:, :, 1]
        return to_rgba_float(vals.reshape(h, w, chans), 65535.0)
    return to_rgba_float(px.reshape(h, w, chans), 255.0)


# ---- a small TIFF reader (uncompressed, chunky strips, 8/16-bit int or 32-bit float) -----

def tiff_tags(data):
    end = '<' if data[:2] == b'II' else '>'
    end = '<' if data[:2] == b'II' else '>'
    (ifd,) = struct.unpack(end + 'I', data[4:8])
    (n,) = struct.unpack(end + 'H', data[ifd:ifd + 2])
    sizes = {1: 1, 3: 2, 4: 4, 11: 4, 12: 8, 2: 1, 5: 8, 7: 1}
    codes = {1: 'B', 3: 'H', 4: 'I', 11: 'f', 12: 'd', 2: 'B', 7: 'B'}
    tags = {}
    for i in range(n):
        e = data[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
        tag, typ, count = struct.unpack(end + 'HHI', e[:8])
        size = sizes.get(typ, 1) * count
        body = e[8:12] if size <= 4 else data[struct.unpack(end + 'I', e[8:12])[0]:][:size]
        if typ in codes:
            tags[tag] = struct.unpack(end + codes[typ] * count, body[:sizes[typ] * count])
    return end, tags


def tiff_decode(path):
    data = open(path, 'rb').read()
    end, tags = tiff_tags(data)
    w, h = tags[256][0], tags[257][0]
    bps, spp = tags[258][0], tags.get(277, (1,))[0]
    fmt = tags.get(339, (1,))[0]
    assert tags.get(259, (1,))[0] == 1 and tags.get(284, (1,))[0] == 1
    raw = b''.join(data[o:o + c] for o, c in zip(tags[273], tags[279]))
    if fmt == 3 and bps == 32:
        arr = np.frombuffer(raw, end + 'f4')[: w * h * spp].reshape(h, w, spp)
        return to_rgba_float(arr.astype(np.float64), 1.0)
    dtype = {8: np.uint8, 16: np.dtype(end + 'u2')}[bps]
    arr = np.frombuffer(raw, dtype)[: w * h * spp].reshape(h, w, spp)
    return to_rgba_float(arr, 255.0 if bps == 8 else 65535.0)


def decode(path):
    head = open(path, 'rb').read(32)
    if head[:8] == b'\x89PNG\r\n\x1a\n' and head[24] == 16:
        return png_decode(path)
    if head[:2] in (b'II', b'MM'):
        _, tags = tiff_tags(open(path, 'rb').read())
        if tags[258][0] == 8:
            return pil_decode(path)
        return tiff_decode(path)
    return pil_decode(path)


# ---- writers for fixtures PIL cannot make ------------------------------------------------

def png_write(path, vals, depth, ctype, w, h):
    """Writes uint values (H, W*chans) as a filter-0 PNG; vals uint8 or uint16."""
    if depth == 16:
        body = vals.astype('>u2').tobytes()
        row = w * {0: 1, 2: 3, 4: 2, 6: 4}[ctype] * 2
    else:
        body = vals.astype(np.uint8).tobytes()
        row = w * {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = b''.join(b'\x00' + body[y * row:(y + 1) * row] for y in range(h))

    def chunk(kind, payload):
        return (struct.pack('>I', len(payload)) + kind + payload +
                struct.pack('>I', zlib.crc32(kind + payload) & 0xffffffff))
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n')
        f.write(chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, depth, ctype, 0, 0, 0)))
        f.write(chunk(b'IDAT', zlib.compress(raw, 6)))
        f.write(chunk(b'IEND', b''))


def make(out):
    os.makedirs(out, exist_ok=True)
    man = []

    def ref(name, arr, tol):
        np.save(os.path.join(out, name + '.ref.npy'), arr)
        man.append('%s %s.ref.npy %.9g' % (name, name, tol))

    w, h = 320, 240
    rgb = photo(w, h)
    a = alpha_mask(h, w)
    rgba = np.dstack([rgb, a])
    gray = np.asarray(Image.fromarray(rgb).convert('L'))
    lvl8 = 1.0 / 255 + 1e-6

    def pil_fixture(name, im, tol=lvl8, **kw):
        p = os.path.join(out, name)
        im.save(p, **kw)
        ref(name, pil_decode(p), tol)

    pil_fixture('pil_rgb.png', Image.fromarray(rgb))
    pil_fixture('pil_rgba.png', Image.fromarray(rgba, 'RGBA'))
    pil_fixture('pil_l.png', Image.fromarray(gray))
    pil_fixture('pil_la.png', Image.fromarray(np.dstack([gray, a]), 'LA'))
    pil_fixture('pil_p.png', Image.fromarray(rgb).quantize(64))
    pil_fixture('pil_q90.jpg', Image.fromarray(rgb), quality=90)
    pil_fixture('pil_q95_444.jpg', Image.fromarray(rgb), quality=95, subsampling=0)
    pil_fixture('pil_progressive.jpg', Image.fromarray(rgb), quality=85, progressive=True)
    pil_fixture('pil_gray.jpg', Image.fromarray(gray), quality=92)
    pil_fixture('pil_cmyk.jpg', Image.fromarray(rgb).convert('CMYK'), tol=2.0 / 255 + 1e-6,
                quality=95)
    pil_fixture('pil_rgb.tif', Image.fromarray(rgb))
    pil_fixture('pil_rgba.tif', Image.fromarray(rgba, 'RGBA'))
    pil_fixture('pil_l.tif', Image.fromarray(gray))
    pil_fixture('pil_lzw.tif', Image.fromarray(rgb), compression='tiff_lzw')
    pil_fixture('pil_lossless.webp', Image.fromarray(rgb), lossless=True)
    pil_fixture('pil_rgba_lossless.webp', Image.fromarray(rgba, 'RGBA'), lossless=True,
                exact=True)
    pil_fixture('pil_lossy.webp', Image.fromarray(rgb), quality=90)

    # 16-bit gray through PIL, 16-bit RGB/RGBA through the small writer above.
    yy, xx = np.mgrid[0:h, 0:w]
    g16 = (gray.astype(np.uint32) * 257 + (xx * 7 + yy * 13) % 257).astype(np.uint16)
    p = os.path.join(out, 'pil_l16.png')
    Image.fromarray(g16.astype(np.uint16), 'I;16').save(p)
    ref('pil_l16.png', pil_decode(p), 1.0 / 65535 + 1e-7)
    rgb16 = rgb.astype(np.uint32) * 257 + ((xx * 5 + yy * 3) % 251)[:, :, None]
    rgb16 = np.minimum(rgb16, 65535).astype(np.uint16)
    png_write(os.path.join(out, 'raw_rgb16.png'), rgb16.reshape(h, w * 3), 16, 2, w, h)
    ref('raw_rgb16.png', to_rgba_float(rgb16, 65535.0), 1.0 / 65535 + 1e-7)
    rgba16 = np.dstack([rgb16, (a.astype(np.uint32) * 257).astype(np.uint16)])
    png_write(os.path.join(out, 'raw_rgba16.png'), rgba16.reshape(h, w * 4), 16, 6, w, h)
    ref('raw_rgba16.png', to_rgba_float(rgba16, 65535.0), 1.0 / 65535 + 1e-7)

    # A PNG header that claims 30000 x 20000 pixels (600 MP) over one tiny IDAT.
    png_write(os.path.join(out, 'huge_header.png'), np.zeros((1, 1), np.uint8), 8, 0, 1, 1)
    data = bytearray(open(os.path.join(out, 'huge_header.png'), 'rb').read())
    data[16:24] = struct.pack('>II', 30000, 20000)
    data[29:33] = struct.pack('>I', zlib.crc32(bytes(data[12:29])) & 0xffffffff)
    open(os.path.join(out, 'huge_header.png'), 'wb').write(bytes(data))

    # .npy variants of one (H, W, 3) array, all equal to float32 'npy_f4.npy'.
    arr = to_rgba_float(rgb, 255.0)[:, :, :3].copy()
    arr[0, 0, 0] = 0.123456789
    np.save(os.path.join(out, 'npy_f4.npy'), arr.astype('<f4'))
    np.save(os.path.join(out, 'npy_be.npy'), arr.astype('>f4'))
    np.save(os.path.join(out, 'npy_f8.npy'), arr.astype('<f8'))
    np.save(os.path.join(out, 'npy_f8be.npy'), arr.astype('>f8'))
    for ver in ((2, 0), (3, 0)):
        with open(os.path.join(out, 'npy_v%d.npy' % ver[0]), 'wb') as f:
            np.lib.format.write_array(f, arr.astype('<f4'), version=ver)
    np.save(os.path.join(out, 'npy_rgba.npy'), to_rgba_float(rgba, 255.0))
    np.save(os.path.join(out, 'npy_fortran.npy'), np.asfortranarray(arr.astype('<f4')))
    np.save(os.path.join(out, 'npy_u8.npy'), rgb)
    np.save(os.path.join(out, 'npy_gray.npy'), arr[:, :, 0].astype('<f4'))

    with open(os.path.join(out, 'manifest.txt'), 'w') as f:
        f.write('\n'.join(man) + '\n')


def npycheck(src, dst):
    with open(src, 'rb') as f:
        major, minor = np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f) if major == 1 else None
        if f.tell() % 64 != 0:
            raise SystemExit('header of %s ends at %d, not 64-aligned' % (src, f.tell()))
    arr = np.load(src)
    if arr.dtype != np.dtype('<f4') or arr.ndim != 3:
        raise SystemExit('unexpected array %s %s' % (arr.dtype, arr.shape))
    np.save(dst, arr)


USAGE = """usage: gen_images.py make OUTDIR | decode IN OUT.npy | npycheck IN OUT.npy
  make OUTDIR          PIL-made images (from GIMP's splash photo when installed, else a
                       texture), their PIL decodings as .npy, numpy .npy variants, and
                       OUTDIR/manifest.txt ("file reference tolerance" per line)
  decode IN OUT.npy    decode IN without GEGL into float32 RGBA (H, W, 4)
  npycheck IN OUT.npy  load IN with numpy, check 64-byte alignment, re-save with numpy"""


def main():
    if len(sys.argv) == 3 and sys.argv[1] == 'make':
        make(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == 'decode':
        np.save(sys.argv[3], decode(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == 'npycheck':
        npycheck(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(USAGE)


if __name__ == '__main__':
    main()
