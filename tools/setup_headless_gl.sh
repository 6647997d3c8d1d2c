#!/usr/bin/env bash
# Headless OpenGL for MuJoCo (LIBERO renders its cameras off-screen with MUJOCO_GL=egl, set by robot/sim/libero.py).
# EGL through glvnd: libEGL.so.1 plus a vendor library: NVIDIA's on a GPU box, else Mesa's (libEGL_mesa + the
# llvmpipe software rasteriser in libgl1-mesa-dri). Skips when present; installs Debian's packages with apt-get
# when run as root; otherwise prints the command. Usage: tools/setup_headless_gl.sh
set -euo pipefail
PKGS=(libegl1 libegl-mesa0 libgl1-mesa-dri libgles2)
if ldconfig -p | grep -q 'libEGL.so.1 ' && ldconfig -p | grep -Eq 'libEGL_(mesa|nvidia).so.0 '; then
  echo "headless GL: EGL present ($(ldconfig -p | grep -Eo 'libEGL_(mesa|nvidia)' | sort -u | tr '\n' ' '))"; exit 0
fi
command -v apt-get >/dev/null || { echo "headless GL: no EGL found and no apt-get; install libEGL + Mesa (or your GPU's EGL) with your package manager" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
  echo "headless GL: EGL missing; run: sudo apt-get install -y --no-install-recommends ${PKGS[*]}" >&2; exit 1
fi
apt-get -q update >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "${PKGS[@]}" >/dev/null
echo "headless GL: installed ${PKGS[*]}"
