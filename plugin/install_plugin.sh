#!/bin/sh
# install_plugin.sh: meson's install step for the GIMP plug-in (meson.add_install_script).
# Usage (by meson): install_plugin.sh BINARY GIMP_PREFIX SYSTEM_PLUGIN_DIR API   (API: 2 or 3)
# Puts BINARY where GIMP finds it, as plug-ins/i2i/i2i (the folder name must equal the binary's;
# GIMP 3 only looks in such subfolders):
#   system: SYSTEM_PLUGIN_DIR/i2i/i2i (under $DESTDIR) when the install prefix is GIMP's own prefix,
#           or whenever DESTDIR is set (packaging);
#   user:   <profile>/plug-ins/i2i/i2i, profile = $GIMP2_DIRECTORY or $XDG_CONFIG_HOME/GIMP/2.10
#           (API 2), $GIMP3_DIRECTORY or $XDG_CONFIG_HOME/GIMP/3.0 (API 3).
# I2I_PLUGIN_INSTALL=user|system overrides the choice. It never creates a missing profile itself
# (GIMP would then skip its first-start setup, gimp.md P3): it starts gimp-console once to let
# GIMP create it. The new binary always gets a newer mtime than the old one (pluginrc, P5).
set -eu

bin=$1
gimp_prefix=$2
sysdir=$3
api=${4:-2}
prefix=${MESON_INSTALL_PREFIX:-}
destdir=${DESTDIR:-}
# `meson install --destdir X` shows in MESON_INSTALL_DESTDIR_PREFIX = X + prefix
dprefix=${MESON_INSTALL_DESTDIR_PREFIX:-$prefix}
if [ -z "$destdir" ] && [ "$dprefix" != "$prefix" ]; then destdir=${dprefix%"$prefix"}; fi

mode=${I2I_PLUGIN_INSTALL:-auto}
case $mode in
  auto)
    if [ -n "$destdir" ] || [ "$prefix" = "$gimp_prefix" ]; then mode=system; else mode=user; fi ;;
  user|system) ;;
  *) echo "install_plugin.sh: I2I_PLUGIN_INSTALL must be user or system, not '$mode'" >&2; exit 1 ;;
esac

if [ "$mode" = system ]; then
  dest="$destdir$sysdir/i2i"
else
  config=${XDG_CONFIG_HOME:-${HOME:?HOME is not set}/.config}
  if [ "$api" = 3 ]; then
    pdir=${GIMP3_DIRECTORY:-}; pdefault="$config/GIMP/3.0"; console=gimp-console-3.0; gname="GIMP 3"
    penv=GIMP3_DIRECTORY
  else
    pdir=${GIMP2_DIRECTORY:-}; pdefault="$config/GIMP/2.10"; console=gimp-console-2.10; gname="GIMP 2.10"
    penv=GIMP2_DIRECTORY
  fi
  case $pdir in
    "") profile=$pdefault ;;
    /*) profile=$pdir ;;
    *) profile="$config/$pdir" ;;
  esac
  if [ ! -d "$profile" ]; then
    if command -v "$console" >/dev/null 2>&1; then
      echo "GIMP profile $profile does not exist yet: starting $console once to let GIMP create it"
      log=$(mktemp)
      if [ "$api" = 3 ]; then
        # GIMP 3 runs a batch command only with the interpreter named; --quit ends it (gimp.md B1.9)
        (unset DISPLAY WAYLAND_DISPLAY; export "$penv=$profile"; timeout 300 "$console" -i \
           --batch-interpreter=plug-in-script-fu-eval -b '(gimp-message "profile created")' --quit) \
          >"$log" 2>&1 </dev/null || true
      else
        (unset DISPLAY; export "$penv=$profile"; timeout 300 "$console" -i -d -f -b '(gimp-quit 0)') \
          >"$log" 2>&1 </dev/null || true
      fi
      if [ ! -d "$profile" ]; then
        cat "$log" >&2
      fi
      rm -f "$log"
    fi
    if [ ! -d "$profile" ]; then
      echo "install_plugin.sh: the GIMP profile $profile does not exist. Start $gname once (it creates" >&2
      echo "its profile on the first start), then run 'meson install' again; or install system-wide" >&2
      echo "with a /usr prefix (or I2I_PLUGIN_INSTALL=system)." >&2
      exit 1
    fi
  fi
  dest="$profile/plug-ins/i2i"
fi

mkdir -p "$dest"
tmp="$dest/.i2i.tmp.$$"
cp "$bin" "$tmp"
chmod 755 "$tmp"
# pluginrc stores the binary's mtime in seconds: make sure it changes even for two installs
# within one second, or GIMP keeps the old registration.
now=$(date +%s)
if [ -e "$dest/i2i" ]; then
  old=$(stat -c %Y "$dest/i2i")
  if [ "$old" -ge "$now" ]; then now=$((old + 1)); fi
fi
touch -d "@$now" "$tmp"
mv -f "$tmp" "$dest/i2i"
echo "Installed the GIMP plug-in: $dest/i2i"
