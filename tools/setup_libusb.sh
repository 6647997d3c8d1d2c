#!/usr/bin/env bash
# Project-local libusb for pyrealsense2 (it needs libusb-1.0.so.0 at import, even with no camera attached).
# Skips when the system already has it; otherwise downloads Debian's libusb-1.0-0 with apt-get (no root
# needed for `apt-get download`) and unpacks the library into DEST/lib, where robot/cameras/realsense.py
# preloads it from. Usage: tools/setup_libusb.sh [DEST]   (default: .libusb)
set -euo pipefail
DEST=$(realpath -m "${1:-.libusb}")
if ldconfig -p | grep -q 'libusb-1.0.so.0 '; then echo "libusb: system library present"; exit 0; fi
if [ -f "$DEST/lib/libusb-1.0.so.0" ]; then echo "libusb: project-local copy already in $DEST"; exit 0; fi
command -v apt-get >/dev/null || { echo "libusb: apt-get not found; install libusb-1.0 with your package manager" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && apt-get -q download libusb-1.0-0 >/dev/null 2>&1) || { echo "libusb: apt-get download libusb-1.0-0 failed (run apt-get update?)" >&2; exit 1; }
dpkg -x "$WORK"/libusb-1.0-0_*.deb "$WORK/x"
mkdir -p "$DEST/lib"
cp -a "$WORK"/x/usr/lib/x86_64-linux-gnu/libusb-1.0.so* "$DEST/lib/" 2>/dev/null || cp -a "$WORK"/x/lib/*/libusb-1.0.so* "$DEST/lib/"
echo "libusb: unpacked into $DEST/lib"
