"""The environment every ROS 2 process this project starts runs in: one private DDS domain, loopback only.

rclpy-free (tests, benchmarks and `wvl loop robot.kind=ros` build the environment, the node processes use it):

- ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``: rmw_fastrtps (Jazzy) disables multicast and discovers peers by
  unicast to 127.0.0.1 only;
- ``ROS_DOMAIN_ID``: a private domain per graph (`private_domain_id`), so two graphs (two tests, a test and a
  benchmark, another engineer's run) never see each other's topics;
- ``FASTRTPS_DEFAULT_PROFILES_FILE`` (Fast DDS 2.x, Jazzy) and ``FASTDDS_DEFAULT_PROFILES_FILE`` (Fast DDS 3.x):
  ``robot/conf/fastdds_loopback.xml``, a participant profile whose UDPv4 transport is restricted to the loopback
  interface (interface allowlist 127.0.0.1), with unicast-only discovery to 127.0.0.1.

What was measured with ros-jazzy-rclpy 7.1 / Fast DDS 2.14 from PyPI (strace of a talker/listener pair, ``ss``):
the LOCALHOST range alone sends every datagram to 127.0.0.1 but binds its sockets on 0.0.0.0 and on the
machine's eth0 address; the profile alone binds 127.0.0.1 only but (range SUBNET, the default) still announces
to the multicast group 239.255.0.1. With both, every datagram goes to 127.0.0.1 and the profile's transport
binds 127.0.0.1; rmw_fastrtps's LOCALHOST mode still adds its own (unrestricted) UDPv4 transport, whose
sockets bind 0.0.0.0 and send to 127.0.0.1 peers only. `inet_sockets` / `outside_loopback` read a process's
sockets from /proc (the graph tests check them while a graph runs).

The logs of rcl go to ``ROS_LOG_DIR`` (not ~/.ros) when a ``log_dir`` is given.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Mapping

PROFILE = Path(__file__).resolve().parent / "conf" / "fastdds_loopback.xml"
DOMAIN_RANGE = (1, 101)  # private domains: 7400 + 250 * id stays well inside the port range for every id here


def private_domain_id(salt: int = 0) -> int:
    """A DDS domain id in 1..101 derived from this process's pid (and ``salt`` for several graphs per process)."""
    lo, hi = DOMAIN_RANGE
    return lo + (os.getpid() * 7 + salt * 13) % (hi - lo + 1)


def ros_env(domain_id: int, log_dir: str | os.PathLike | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the loopback-only DDS settings and ``domain_id``."""
    lo, hi = DOMAIN_RANGE
    if not lo <= int(domain_id) <= hi:
        raise ValueError(f"domain_id: {domain_id} is outside the private range {lo}..{hi}")
    env = dict(os.environ if base is None else base)
    for k in ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS", "ROS_DISCOVERY_SERVER", "RMW_FASTRTPS_USE_QOS_FROM_XML"):
        env.pop(k, None)  # each of these would change discovery away from the profile's
    env.update({
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_DOMAIN_ID": str(int(domain_id)),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "FASTRTPS_DEFAULT_PROFILES_FILE": str(PROFILE),
        "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
    })
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        env["ROS_LOG_DIR"] = str(log_dir)
    return env


def apply_ros_env(domain_id: int, log_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Set the variables of `ros_env` in this process (before its first rclpy participant: Fast DDS reads its
    profile file once per process); returns the previous values (None = unset) for `restore_env`."""
    new = ros_env(domain_id, log_dir)
    keys = [k for k in new if os.environ.get(k) != new[k]] + ["ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS", "ROS_DISCOVERY_SERVER"]
    old = {k: os.environ.get(k) for k in keys}
    for k in ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS", "ROS_DISCOVERY_SERVER"):
        os.environ.pop(k, None)
    for k, v in new.items():
        if os.environ.get(k) != v:
            os.environ[k] = v
    return old


def restore_env(old: Mapping[str, str | None]) -> None:
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# ---------------------------------------------------------------------------------------------- socket check
_SOCKET_RE = re.compile(r"socket:\[(\d+)\]")


def _hex_addr(text: str, v6: bool) -> tuple[str, int]:
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    if v6:  # four little-endian 32-bit words
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        return str(ipaddress.IPv6Address(raw)), int(port, 16)
    return str(ipaddress.IPv4Address(raw[::-1])), int(port, 16)


def inet_sockets(pid: int) -> list[dict[str, object]]:
    """The IPv4/IPv6 TCP and UDP sockets a process holds: [{proto, local, local_port, remote, remote_port}]."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            m = _SOCKET_RE.match(os.readlink(fd))
        except OSError:  # closed while we looked
            continue
        if m:
            inodes.add(m.group(1))
    out = []
    for proto in ("tcp", "udp", "tcp6", "udp6"):
        path = Path(f"/proc/{pid}/net/{proto}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) > 9 and cols[9] in inodes:
                (la, lp), (ra, rp) = _hex_addr(cols[1], proto.endswith("6")), _hex_addr(cols[2], proto.endswith("6"))
                out.append({"proto": proto, "local": la, "local_port": lp, "remote": ra, "remote_port": rp})
    return out


def _loopback_or_any(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def outside_loopback(sockets: list[dict[str, object]]) -> list[dict[str, object]]:
    """Sockets connected to (TCP, connected UDP) a peer outside 127.0.0.0/8 / ::1: what must never exist."""
    return [s for s in sockets if not _loopback_or_any(str(s["remote"]))]


def bound_outside_loopback(sockets: list[dict[str, object]]) -> list[dict[str, object]]:
    """Sockets bound to a specific non-loopback address (the eth0 address): reported, see the module docstring."""
    return [s for s in sockets if not ipaddress.ip_address(str(s["local"])).is_loopback
            and not ipaddress.ip_address(str(s["local"])).is_unspecified]
