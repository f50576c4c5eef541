#!/usr/bin/env python3
"""weights/embed.py: writes the manifest as a C string (libi2i compiles the manifest in).

Usage: embed.py MANIFEST OUT.c  -- defines `const char i2i_manifest_text[]`.
"""
import sys

src, out = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
with open(out, "w") as f:
    f.write("/* Generated from weights/manifest by weights/embed.py; do not edit. */\n")
    f.write("const char i2i_manifest_text[] =\n")
    for line in data.splitlines(keepends=True):
        esc = "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\?' else "\\%03o" % b
                      for b in line)
        f.write('  "%s"\n' % esc)
    f.write("  ;\n")
