"""Point SAPIEN at a working Vulkan driver before it is imported.

On a GPU-less machine SAPIEN needs Mesa >= 24.3 lavapipe; `tools/setup_vulkan.sh` (run by `make install`)
unpacks one into the project's `.vulkan/` folder without touching the system. This module makes that
driver visible to the current process: it sets `VK_ICD_FILENAMES` (read by the Vulkan loader when SAPIEN
creates its instance, i.e. after this call) and preloads the newer libdrm from the same folder, because
`LD_LIBRARY_PATH` is only read at process start and lavapipe 25 needs libdrm >= 2.4.121.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[2]
_configured = False


# What `import sapien` warns when no system libvulkan is found (sapien/_vulkan_tricks.py).
SAPIEN_LOADER_WARNING = "Failed to find system libvulkan. Fallback to SAPIEN builtin libvulkan."


class VulkanDriverMissingError(RuntimeError):
    """No Vulkan device SAPIEN can use."""


def vulkan_dir() -> Path:
    return Path(os.environ.get("WVL_VULKAN_DIR", _REPO_ROOT / ".vulkan"))


def _has_gpu_icd() -> bool:
    return any(Path(p).exists() for p in ("/usr/share/vulkan/icd.d/nvidia_icd.json", "/etc/vulkan/icd.d/nvidia_icd.json"))


def configure_vulkan() -> str:
    """Make a Vulkan driver available to this process; returns which one ("gpu", "env", "lavapipe")."""
    global _configured
    root = vulkan_dir()
    icd = root / "icd.json"
    chosen = os.environ.get("VK_ICD_FILENAMES") or os.environ.get("VK_DRIVER_FILES")
    if chosen and Path(chosen) != icd:
        _configured = True
        return "env"
    if not chosen and _has_gpu_icd():
        _configured = True
        return "gpu"
    if not icd.exists():
        raise VulkanDriverMissingError(
            f"no Vulkan driver for the simulator: {icd} does not exist and no GPU driver is installed. "
            "Run `make vulkan` (or tools/setup_vulkan.sh) to unpack Mesa's software driver into .vulkan/, "
            "or set VK_ICD_FILENAMES to a working ICD json."
        )
    if not _configured:
        for lib in ("libdrm.so.2", "libdrm_amdgpu.so.1", "libvulkan.so.1"):
            path = root / "lib" / lib
            if path.exists():
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        os.environ["VK_ICD_FILENAMES"] = str(icd)
        _configured = True
        log.debug("using project-local lavapipe from %s", root)
    # SAPIEN looks for libvulkan only on LD_LIBRARY_PATH and in /usr/lib*, so on import it warns that it falls back
    # to its builtin loader; that loader runs the project-local driver chosen above, so the warning is noise.
    warnings.filterwarnings("ignore", message=re.escape(SAPIEN_LOADER_WARNING), category=UserWarning)
    return "lavapipe"
