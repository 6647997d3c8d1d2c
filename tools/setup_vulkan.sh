#!/usr/bin/env bash
# Project-local software Vulkan (Mesa >= 24.3 lavapipe) for SAPIEN/ManiSkill on a GPU-less Debian 12 machine.
# Debian 12's own lavapipe (Mesa 22.3) lacks VK_KHR_external_semaphore_fd and SAPIEN rejects it; the
# bookworm-backports build (Mesa 25) works. We unpack it into DEST without touching the system:
# robot/sim/vulkan.py points the Vulkan loader at DEST/icd.json and preloads the newer libdrm from there.
# Usage: tools/setup_vulkan.sh [DEST]   (default: .vulkan). Skips when a real GPU driver is installed.
set -euo pipefail
DEST=$(realpath -m "${1:-.vulkan}")
if [ -f "$DEST/icd.json" ] && [ -f "$DEST/lib/libvulkan_lvp.so" ]; then
  echo "vulkan: project-local lavapipe already in $DEST"; exit 0
fi
for icd in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
  if [ -f "$icd" ]; then echo "vulkan: GPU driver found ($icd); no software driver needed"; exit 0; fi
done
command -v apt-get >/dev/null || { echo "vulkan: apt-get not found; install Mesa >= 24.3 mesa-vulkan-drivers by hand" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial"
cat > "$WORK/sources.list" <<SRC
deb http://deb.debian.org/debian bookworm-backports main
deb http://deb.debian.org/debian bookworm main
SRC
APT=(apt-get -q -o Dir::Etc::SourceList="$WORK/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$WORK/lists" -o Dir::Cache="$WORK/cache" -o APT::Sandbox::User=root)
"${APT[@]}" update >/dev/null
PKGS=(mesa-vulkan-drivers/bookworm-backports libdrm2/bookworm-backports libdrm-amdgpu1/bookworm-backports)
# The Vulkan loader itself, only when the system has none.
ldconfig -p | grep -q 'libvulkan.so.1 ' || PKGS+=(libvulkan1)
(cd "$WORK" && "${APT[@]}" download "${PKGS[@]}" >/dev/null)
mkdir -p "$WORK/x" "$DEST/lib"
for deb in "$WORK"/*.deb; do dpkg -x "$deb" "$WORK/x"; done
cp -a "$WORK"/x/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so "$WORK"/x/usr/lib/x86_64-linux-gnu/libdrm*.so* "$DEST/lib/"
cp -a "$WORK"/x/usr/lib/x86_64-linux-gnu/libvulkan.so* "$DEST/lib/" 2>/dev/null || true
cat > "$DEST/icd.json" <<JSON
{"file_format_version": "1.0.1", "ICD": {"library_path": "$DEST/lib/libvulkan_lvp.so", "api_version": "1.4.305"}}
JSON
echo "vulkan: Mesa $(ls "$WORK"/mesa-vulkan-drivers_*.deb | sed 's/.*_\(.*\)_amd64.deb/\1/') lavapipe unpacked into $DEST"
