#!/usr/bin/env bash
# tests/gpu/fetch_debs.sh: run HERE (Debian 12) before a GPU session. Downloads with apt-get
# the Debian 12 packages the GPU machine lacks (protobuf-c and protoc-c, GLib, OpenBLAS OpenMP,
# zlib, pkgconf, onnx.proto), unpacks and prunes them into .gpu-carry/prefix.tar.xz (~7 MiB)
# and git-ignores .gpu-carry so the device tool can carry it to tests/gpu/run. No CUDA or
# cuDNN is carried: the GPU machine's nvcc and PyTorch's cuDNN are used.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.gpu-carry
pkgs=(libprotobuf-c1 libprotobuf-c-dev protobuf-c-compiler libprotoc32 libprotobuf32
      libglib2.0-0 libglib2.0-dev libopenblas0-openmp libopenblas-openmp-dev libgfortran5 libquadmath0
      libonnx-dev zlib1g zlib1g-dev pkgconf pkgconf-bin libpkgconf3)
ex=$(git rev-parse --git-path info/exclude 2>/dev/null || echo .git/info/exclude)
mkdir -p "$(dirname "$ex")"
grep -qx '/.gpu-carry/' "$ex" 2>/dev/null || echo '/.gpu-carry/' >>"$ex"
rm -rf "$out" && mkdir -p "$out/debs" "$out/prefix"
(cd "$out/debs" && apt-get download "${pkgs[@]}")
for d in "$out"/debs/*.deb; do dpkg -x "$d" "$out/prefix"; done
p=$out/prefix
ma=x86_64-linux-gnu
rm -rf "$p/usr/share/doc" "$p/usr/share/man" "$p/usr/share/locale" "$p/usr/share/info" "$p/usr/share/lintian" \
  "$p/usr/share/gdb" "$p/usr/share/bash-completion" "$p/usr/share/glib-2.0" "$p/usr/share/aclocal" \
  "$p/usr/share/gettext" "$p/usr/lib/$ma/cmake" "$p/usr/lib/$ma/openblas-openmp/cmake"
find "$p" -name '*.a' -delete
# onnx: only the schema the build compiles with protoc-c
find "$p/usr/include/onnx" -type f ! -name 'onnx.proto' -delete
find "$p/usr/lib/$ma" -maxdepth 1 -name 'libonnx*' -delete
# GIO and the LAPACK / reference BLAS builds are not used
rm -f "$p"/usr/lib/$ma/libgio-2.0* "$p"/usr/lib/$ma/pkgconfig/gio-* "$p"/usr/lib/$ma/openblas-openmp/liblapack* \
  "$p"/usr/lib/$ma/openblas-openmp/libblas* "$p"/usr/lib/$ma/openblas-openmp/pkgconfig/lapack-openblas.pc \
  "$p"/usr/lib/$ma/openblas-openmp/pkgconfig/blas-openblas.pc
rm -rf "$p/usr/include/glib-2.0/gio" "$p/usr/lib/$ma/gio"
find "$p" -xtype l -delete
for f in usr/include/onnx/onnx.proto usr/bin/protoc-c usr/bin/pkgconf usr/lib/$ma/libglib-2.0.so usr/lib/$ma/libgmodule-2.0.so \
         usr/lib/$ma/libprotobuf-c.so usr/lib/$ma/libz.so usr/lib/$ma/openblas-openmp/libopenblas.so \
         usr/include/$ma/openblas-openmp/cblas.h usr/lib/$ma/pkgconfig/glib-2.0.pc; do
  [ -e "$p/$f" ] || { echo "fetch_debs: $f is missing from the unpacked packages" >&2; exit 1; }
done
tar -C "$out" -cJf "$out/prefix.tar.xz" prefix
# cuDNN's headers, used only where the GPU machine's cuDNN wheel has none (tests/gpu/run)
if [ -f /usr/local/cuda/include/cudnn.h ]; then
  mkdir -p "$out/cudnn-include" && cp /usr/local/cuda/include/cudnn*.h "$out/cudnn-include/"
fi
rm -rf "$out/prefix" "$out/debs"
du -sh "$out/prefix.tar.xz"
echo "carry .gpu-carry with tests/gpu/run (see its header)"
