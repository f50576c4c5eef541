#!/usr/bin/python3
"""tests/imageio/gen_images.py: fixtures and independent decodings for test_imageio.

Writes PIL-made images with PIL's decodings as float RGBA .npy references, decodes files the
tests wrote (PIL, or the small PNG/TIFF readers below for 16-bit and float files PIL cannot
hold), reads the ICC profile PIL sees in a file, and checks .npy files with numpy. Also makes
EXIF/TIFF-oriented, CMYK TIFF, forged-size ("bomb") and highly compressible fixtures. Run with
/usr/bin/python3. Not an image library."""
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image, ImageOps

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
    return pil_array(Image.open(path))


def pil_array(im):
    """A PIL image (RGB, RGBA, L, LA, P, CMYK, 16-bit gray) as float32 RGBA in [0,1]."""
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
        raise SystemExit('unexpected PIL mode %s' % mode)
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

def png_write(path, vals, depth, ctype, w, h, level=6):
    """Writes uint values (H, W*chans) as a filter-0 PNG at zlib `level`; uint8 or uint16."""
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
        f.write(chunk(b'IDAT', zlib.compress(raw, level)))
        f.write(chunk(b'IEND', b''))


def tiff_write(path, w, h, bps, spp, photometric, strips, compression=1, extra=None,
               rows_per_strip=None):
    """A little-endian TIFF: IFD first, then out-of-line values, then the strips (a list of
    byte strings). extra: the ExtraSamples value (2: unassociated alpha) or None."""
    entries = [(256, 4, [w]), (257, 4, [h]), (258, 3, [bps] * spp), (259, 3, [compression]),
               (262, 3, [photometric]), (273, 4, [0] * len(strips)), (277, 3, [spp]),
               (278, 4, [rows_per_strip or h]), (279, 4, [len(x) for x in strips]),
               (284, 3, [1])]
    if extra is not None:
        entries.append((338, 3, [extra]))
    entries.sort()
    pos = 8 + 2 + 12 * len(entries) + 4
    layout = []
    for tag, typ, vals in entries:
        size = (2 if typ == 3 else 4) * len(vals)
        layout.append((tag, typ, vals, pos if size > 4 else None))
        if size > 4:
            pos += size
    offsets = []
    for x in strips:
        offsets.append(pos)
        pos += len(x)
    out = bytearray(b'II*\x00' + struct.pack('<I', 8) + struct.pack('<H', len(entries)))
    blobs = []
    for tag, typ, vals, at in layout:
        if tag == 273:
            vals = offsets
        body = struct.pack('<%d%s' % (len(vals), 'H' if typ == 3 else 'I'), *vals)
        if at is None:
            out += struct.pack('<HHI', tag, typ, len(vals)) + body.ljust(4, b'\x00')
        else:
            out += struct.pack('<HHII', tag, typ, len(vals), at)
            blobs.append(body)
    out += struct.pack('<I', 0)
    for b in blobs + strips:
        out += b
    open(path, 'wb').write(bytes(out))


def gray_icc():
    """A minimal ICC v2 gray display profile (gamma 2.2): header, desc, wtpt, kTRC."""
    def s15(v):
        return struct.pack('>i', int(round(v * 65536)))
    desc_text = b'i2i test gray\x00'
    desc = (b'desc' + bytes(4) + struct.pack('>I', len(desc_text)) + desc_text +
            bytes(4 + 4) + bytes(2 + 1 + 67))
    wtpt = b'XYZ ' + bytes(4) + s15(0.9642) + s15(1.0) + s15(0.8249)
    ktrc = b'curv' + bytes(4) + struct.pack('>IH', 1, 0x0233) + bytes(2)
    tags = [(b'desc', desc), (b'wtpt', wtpt), (b'kTRC', ktrc)]
    at = 128 + 4 + 12 * len(tags)
    table, body = b'', b''
    for sig, data in tags:
        table += sig + struct.pack('>II', at + len(body), len(data))
        body += data + bytes(-len(data) % 4)
    size = at + len(body)
    head = (struct.pack('>I', size) + b'lcms' + struct.pack('>I', 0x02100000) + b'mntr' +
            b'GRAY' + b'XYZ ' + bytes(12) + b'acsp' + b'APPL' + bytes(4) + bytes(4) +
            bytes(4) + bytes(8) + struct.pack('>I', 0) + s15(0.9642) + s15(1.0) +
            s15(0.8249) + b'lcms' + bytes(16) + bytes(28))
    assert len(head) == 128
    return head + struct.pack('>I', len(tags)) + table + body


# PIL's transposition for each EXIF orientation (as ImageOps.exif_transpose)
TRANSPOSE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
             6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}


def upright(im, o):
    return im.transpose(TRANSPOSE[o]) if TRANSPOSE[o] is not None else im


def make_extra(out, rgb):
    """Orientation, CMYK TIFF, size-check and ICC fixtures. Writes OUT/extra.txt, a line a
    file: "file reference tolerance orientation has_alpha bits" (reference '-': only that it
    loads), OUT/icc.icc, the profile the icc.* files hold (when PIL has littlecms), and
    OUT/gicc.icc, the gray profile of gicc.jpg."""
    man = []
    lvl8 = 1.0 / 255 + 1e-6

    def line(name, arr, tol, orient, alpha, bits):
        ref = '-'
        if arr is not None:
            ref = name + '.ref.npy'
            np.save(os.path.join(out, ref), arr)
        man.append('%s %s %.9g %d %d %d' % (name, ref, tol, orient, alpha, bits))

    small = rgb[:32, :48].copy()  # not square, no symmetry: every orientation differs
    for o in range(1, 9):
        ex = Image.Exif()
        ex[0x0112] = o
        # JPEG: PIL decodes the stored pixels (it ignores EXIF); the reference turns them
        name = 'orient%d.jpg' % o
        p = os.path.join(out, name)
        Image.fromarray(small).save(p, exif=ex.tobytes(), quality=95, subsampling=0)
        line(name, pil_array(ImageOps.exif_transpose(Image.open(p))), lvl8, o, 0, 8)
        # TIFF tag 274, read by GEGL as stored (RGB) or through libtiff's RGBA interface
        # (palette). References from the array: PIL turns TIFFs itself as it loads them.
        name = 'orient%d.tif' % o
        Image.fromarray(small).save(os.path.join(out, name), tiffinfo={274: o})
        line(name, pil_array(upright(Image.fromarray(small), o)), lvl8, o, 0, 8)
        name = 'orientp%d.tif' % o
        pal = Image.fromarray(small).quantize(16)
        pal.save(os.path.join(out, name), tiffinfo={274: o})
        line(name, pil_array(upright(pal.convert('RGB'), o)), lvl8, o, 1, 8)
        if o in (2, 6, 7):
            for ext, kw in (('png', {}), ('webp', {'lossless': True})):
                name = 'orient%d.%s' % (o, ext)
                Image.fromarray(small).save(os.path.join(out, name), exif=ex.tobytes(), **kw)
                line(name, pil_array(upright(Image.fromarray(small), o)), lvl8, o, 0, 8)

    # CMYK TIFF: 8-bit from PIL; 16-bit and 8-bit with alpha written here, their references
    # as PIL computes CMYK -> RGB: R = (1 - C)(1 - K)
    h, w = 60, 80
    yy, xx = np.mgrid[0:h, 0:w]
    grad = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) % 256], -1)
    name = 'cmyk.tif'
    Image.fromarray(grad.astype(np.uint8)).convert('CMYK').save(os.path.join(out, name))
    line(name, pil_decode(os.path.join(out, name)), lvl8, 1, 0, 8)
    c16 = np.stack([xx * 65535 // (w - 1), yy * 65535 // (h - 1),
                    (xx * 811 + yy * 997) % 65536, (xx * 97 + yy * 89) * 8], -1)
    c16 = c16.astype(np.uint16)
    name = 'cmyk16.tif'
    tiff_write(os.path.join(out, name), w, h, 16, 4, 5, [c16.astype('<u2').tobytes()])
    f = c16.astype(np.float64) / 65535
    ref = np.ones((h, w, 4))
    ref[:, :, :3] = (1 - f[:, :, :3]) * (1 - f[:, :, 3:4])
    line(name, ref.astype('<f4'), 1.0 / 65535 + 1e-6, 1, 0, 16)
    c8 = np.dstack([grad, (xx * 2) % 256, (yy * 37) % 256]).astype(np.uint8)
    name = 'cmyka.tif'
    tiff_write(os.path.join(out, name), w, h, 8, 5, 5, [c8.tobytes()], extra=2)
    f = c8.astype(np.float64) / 255
    ref = np.empty((h, w, 4))
    ref[:, :, :3] = (1 - f[:, :, :3]) * (1 - f[:, :, 3:4])
    ref[:, :, 3] = f[:, :, 4]
    line(name, ref.astype('<f4'), 1e-6, 1, 1, 8)

    # Highly compressible but genuine: flat images near deflate's greatest ratio must load.
    fh, fw = 1500, 2000
    png_write(os.path.join(out, 'flat9.png'), np.zeros((fh, fw * 3), np.uint8), 8, 2, fw, fh,
              level=9)
    line('flat9.png', None, 0, 1, 0, 8)
    im = Image.fromarray(np.full((fh, fw, 3), 200, np.uint8))
    im.save(os.path.join(out, 'flat_opt.png'), optimize=True)
    line('flat_opt.png', None, 0, 1, 0, 8)
    for comp in ('tiff_adobe_deflate', 'tiff_lzw', 'packbits'):
        name = 'flat_%s.tif' % comp
        im.save(os.path.join(out, name), compression=comp)
        line(name, None, 0, 1, 0, 8)
    im.save(os.path.join(out, 'flat.jpg'), quality=95)
    line('flat.jpg', None, 0, 1, 0, 8)
    im.save(os.path.join(out, 'flat_prog.jpg'), quality=50, progressive=True,
            subsampling=2)
    line('flat_prog.jpg', None, 0, 1, 0, 8)

    # Forged sizes: a 74-byte PNG declaring 20000 x 20000, TIFFs declaring 23000 x 23000
    # over one tiny strip (uncompressed, deflate, LZW), a JPEG frame of 20000 x 20000.
    def chunk(kind, payload):
        return (struct.pack('>I', len(payload)) + kind + payload +
                struct.pack('>I', zlib.crc32(kind + payload) & 0xffffffff))
    with open(os.path.join(out, 'bomb.png'), 'wb') as fp:
        fp.write(b'\x89PNG\r\n\x1a\n' +
                 chunk(b'IHDR', struct.pack('>IIBBBBB', 20000, 20000, 8, 2, 0, 0, 0)) +
                 chunk(b'IDAT', zlib.compress(bytes(1000))) + chunk(b'IEND', b''))
    tiff_write(os.path.join(out, 'bomb.tif'), 23000, 23000, 8, 3, 2, [bytes(64)])
    tiff_write(os.path.join(out, 'bomb_deflate.tif'), 23000, 23000, 8, 3, 2,
               [zlib.compress(bytes(69000))], compression=8, rows_per_strip=1)
    tiff_write(os.path.join(out, 'bomb_lzw.tif'), 23000, 23000, 8, 3, 2, [bytes(64)],
               compression=5)
    data = bytearray(open(os.path.join(out, 'orient1.jpg'), 'rb').read())
    i = 2
    while i + 9 < len(data):
        if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 9] = struct.pack('>HH', 20000, 20000)
            break
        i += 2 + struct.unpack('>H', data[i + 2:i + 4])[0]
    open(os.path.join(out, 'bomb.jpg'), 'wb').write(bytes(data))

    # ICC profiles: lcms' sRGB (not babl's) in each format, and CMYK files that carry it
    try:
        from PIL import ImageCms
        icc = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()
    except ImportError:
        icc = None
    if icc:
        open(os.path.join(out, 'icc.icc'), 'wb').write(icc)
        im = Image.fromarray(small)
        im.save(os.path.join(out, 'icc.png'), icc_profile=icc)
        im.save(os.path.join(out, 'icc.jpg'), icc_profile=icc, quality=95)
        im.save(os.path.join(out, 'icc.tif'), icc_profile=icc)
        im.save(os.path.join(out, 'icc.webp'), icc_profile=icc, lossless=True)
        im.convert('CMYK').save(os.path.join(out, 'icc_cmyk.jpg'), icc_profile=icc)
        im.convert('CMYK').save(os.path.join(out, 'icc_cmyk.tif'), icc_profile=icc)
    gicc = gray_icc()
    open(os.path.join(out, 'gicc.icc'), 'wb').write(gicc)
    Image.fromarray(small).convert('L').save(os.path.join(out, 'gicc.jpg'), icc_profile=gicc,
                                             quality=95)

    with open(os.path.join(out, 'extra.txt'), 'w') as fp:
        fp.write('\n'.join(man) + '\n')


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

    make_extra(out, rgb)

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


def icc_of(src, dst):
    """Writes the ICC profile PIL finds in src to dst (an empty file when there is none)."""
    im = Image.open(src)
    im.load()
    open(dst, 'wb').write(im.info.get('icc_profile') or b'')


USAGE = """usage: gen_images.py make OUTDIR | decode IN OUT.npy | npycheck IN OUT.npy | icc IN OUT
  make OUTDIR          PIL-made images (from GIMP's splash photo when installed, else a
                       texture), their PIL decodings as .npy, numpy .npy variants, and
                       OUTDIR/manifest.txt ("file reference tolerance" per line)
  decode IN OUT.npy    decode IN without GEGL into float32 RGBA (H, W, 4)
  npycheck IN OUT.npy  load IN with numpy, check 64-byte alignment, re-save with numpy
  icc IN OUT           write the ICC profile PIL reads from IN to OUT (empty: none)"""


def main():
    if len(sys.argv) == 3 and sys.argv[1] == 'make':
        make(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == 'decode':
        np.save(sys.argv[3], decode(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == 'npycheck':
        npycheck(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == 'icc':
        icc_of(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(USAGE)


if __name__ == '__main__':
    main()
