"""A memory cgroup as an outside reader sees it, cgroup v2 and v1.

:func:`of_pid` finds the memory cgroup of a process, :func:`at` the one a path
names; :func:`read` reads its charge into a :class:`Charge`. Everything is read
from the cgroup filesystem, nothing is written. Sources: the kernel's
Documentation/admin-guide/cgroup-v2.rst and cgroup-v1/memory.rst (6.x),
cAdvisor's libcontainer handler and the kubelet's cgroup manager for the
working set and the path conventions of container runtimes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Tuple

from .._errors import NoSuchCgroup, ParseError
from . import procfs

__all__ = ["Cgroup", "Charge", "Mount", "of_pid", "at", "read", "container", "parse_flat", "parse_pressure",
           "memory_mounts"]

# v1 reports "no limit" as PAGE_COUNTER_MAX rounded down to a page:
# 9223372036854771712 with 4 KiB pages. Anything this large is no limit.
_V1_UNLIMITED = 1 << 62


class Mount(NamedTuple):
    """A cgroup filesystem: ``root`` is the mount's root inside the reader's
    cgroup namespace (mountinfo field 4), ``point`` where it is mounted."""

    version: int
    root: str
    point: str


@dataclass(frozen=True)
class Cgroup:
    """One memory cgroup: ``path`` inside its hierarchy, ``directory`` on disk.
    ``pressure_dir``: the cgroup2 directory holding PSI when the memory
    controller is on v1 (a hybrid host keeps PSI per v2 cgroup)."""

    version: int
    path: str
    directory: str
    pressure_dir: Optional[str] = None


@dataclass
class Charge:
    """What a memory cgroup is charged, in bytes; None where the kernel does
    not say. ``kernel`` is all kernel memory (v2 ``kernel``, v1
    ``memory.kmem.usage_in_bytes``); ``slab``, ``kernel_stack``,
    ``pagetables`` and ``sock`` are its parts where given (v2 only)."""

    version: int
    path: str
    limit: Optional[int]
    high: Optional[int]
    usage: int
    peak: Optional[int]
    anon: Optional[int]
    file: Optional[int]
    file_active: Optional[int]
    file_inactive: Optional[int]
    file_dirty: Optional[int]
    shmem: Optional[int]
    kernel: Optional[int]
    slab: Optional[int]
    kernel_stack: Optional[int]
    pagetables: Optional[int]
    sock: Optional[int]
    swap: Optional[int]
    events: Dict[str, int]
    pressure: Optional[Dict[str, Dict[str, float]]]
    pids: List[int]
    container: Dict[str, str] = field(default_factory=dict)

    @property
    def headroom(self) -> Optional[int]:
        """Bytes left below the limit (0 when usage overshot it)."""
        return None if self.limit is None else max(0, self.limit - self.usage)

    @property
    def working_set(self) -> int:
        """usage - inactive_file, floored at 0: what cAdvisor reports and the
        kubelet evicts on (cAdvisor setMemoryStats)."""
        return max(0, self.usage - (self.file_inactive or 0))

    def to_dict(self) -> Dict[str, object]:
        out: Dict[str, object] = {k: v for k, v in self.__dict__.items() if k != "pids"}
        out["headroom"] = self.headroom
        out["working_set"] = self.working_set
        out["pids"] = list(self.pids)
        return out


def parse_flat(text: str, path: str) -> Dict[str, int]:
    """``key value`` lines (memory.stat, memory.events, memory.oom_control)."""
    out: Dict[str, int] = {}
    offset = 0
    for line in text.splitlines(keepends=True):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ParseError(f"expected 'key value', got {line.strip()!r}", offset, path)
        out[parts[0]] = int(parts[1])
        offset += len(line.encode())
    return out


def parse_pressure(text: str, path: str) -> Dict[str, Dict[str, float]]:
    """PSI: ``some avg10=0.00 avg60=0.00 avg300=0.00 total=0`` and ``full ...``
    (Documentation/accounting/psi.rst); ``total`` is microseconds stalled."""
    out: Dict[str, Dict[str, float]] = {}
    offset = 0
    for line in text.splitlines(keepends=True):
        kind, *pairs = line.split()
        try:
            out[kind] = {k: float(v) for k, v in (p.split("=", 1) for p in pairs)}
        except ValueError:
            raise ParseError(f"expected 'some|full key=value...', got {line.strip()!r}", offset, path) from None
        if kind not in ("some", "full") or set(out[kind]) != {"avg10", "avg60", "avg300", "total"}:
            raise ParseError(f"expected 'some|full key=value...', got {line.strip()!r}", offset, path)
        offset += len(line.encode())
    return out


def memory_mounts(mountinfo: str) -> Tuple[Optional[Mount], Optional[Mount]]:
    """The v1 mount carrying the memory controller and the cgroup2 mount, from
    /proc/self/mountinfo text (proc(5): the fields after ' - ' are fstype,
    source and super options). Of several mounts of one hierarchy, the one
    showing the most of it (the shortest root) wins: a container's own
    /sys/fs/cgroup shows its subtree only, a host's bind-mounted one all."""
    found: Dict[int, Mount] = {}
    for line in mountinfo.splitlines():
        fields, sep, tail = line.partition(" - ")
        parts, rest = fields.split(), tail.split()
        if not sep or len(parts) < 5 or len(rest) < 3:
            continue
        root, point = _unescape(parts[3]), _unescape(parts[4])
        if rest[0] == "cgroup2":
            mount = Mount(2, root, point)
        elif rest[0] == "cgroup" and "memory" in rest[2].split(","):
            mount = Mount(1, root, point)
        else:
            continue
        if mount.version not in found or len(root) < len(found[mount.version].root):
            found[mount.version] = mount
    return found.get(1), found.get(2)


def _unescape(text: str) -> str:
    # mountinfo octal-escapes space, tab, newline and backslash.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _join(mount: Mount, path: str) -> Optional[str]:
    """The directory of ``path`` (as /proc/PID/cgroup shows it) under ``mount``;
    None when it lies outside the mount's root (a path starting with /.. is
    outside the reader's cgroup namespace)."""
    if path.startswith("/.."):
        return None
    root = mount.root.rstrip("/")
    if root and path != root and not path.startswith(root + "/"):
        return None
    return os.path.join(mount.point, path[len(root):].lstrip("/")).rstrip("/") or "/"


def _has_memory(version: int, directory: str) -> bool:
    # The root of a v2 hierarchy has memory.stat but no memory.current.
    names = ("memory.stat",) if version == 2 else ("memory.usage_in_bytes",)
    return all(os.path.exists(os.path.join(directory, n)) for n in names)


def _mounts() -> Tuple[Optional[Mount], Optional[Mount]]:
    with open(os.path.join(procfs.PROCFS_PATH, "self", "mountinfo")) as f:
        return memory_mounts(f.read())


def _v2_memory(v2: Optional[Mount]) -> bool:
    """The cgroup2 hierarchy has the memory controller (not so on a hybrid
    host, where systemd mounts a controller-less cgroup2 at .../unified)."""
    if v2 is None:
        return False
    try:
        with open(os.path.join(v2.point, "cgroup.controllers")) as f:
            return "memory" in f.read().split()
    except OSError:
        return False


def of_pid(pid: int) -> Cgroup:
    """The memory cgroup of process ``pid``, from /proc/PID/cgroup: the v1
    line listing ``memory`` when v1 has the controller, else the ``0::`` line."""
    name = "cgroup"
    with procfs.translated(pid, name):
        with open(procfs.path(pid, name)) as f:
            text = f.read()
    v1, v2 = _mounts()
    v1_path = v2_path = None
    offset = 0
    for line in text.splitlines(keepends=True):
        parts = line.rstrip("\n").split(":", 2)
        if len(parts) != 3:
            raise ParseError(f"expected 'id:controllers:path', got {line.strip()!r}", offset, procfs.path(pid, name))
        if parts[0] == "0" and not parts[1]:
            v2_path = parts[2]
        elif "memory" in parts[1].split(","):
            v1_path = parts[2]
        offset += len(line.encode())
    pressure = None
    if v2 is not None and v2_path is not None:
        pressure = _join(v2, v2_path.removesuffix(" (deleted)"))
    if v1 is not None and v1_path is not None:
        version, mount, cg_path = 1, v1, v1_path
    elif v2 is not None and _v2_memory(v2) and v2_path is not None:
        version, mount, cg_path, pressure = 2, v2, v2_path, None
    else:
        raise NoSuchCgroup(f"process {pid} is in no memory cgroup (no memory controller is mounted)")
    if cg_path.endswith(" (deleted)"):
        raise NoSuchCgroup(f"the memory cgroup of process {pid} was removed: {cg_path}")
    directory = _join(mount, cg_path)
    if directory is None:
        raise NoSuchCgroup(f"the memory cgroup of process {pid}, {cg_path}, lies outside this cgroup namespace")
    if not _has_memory(version, directory):
        raise NoSuchCgroup(f"{directory}: no memory controller in the cgroup of process {pid}")
    return Cgroup(version, cg_path, directory, pressure)


def at(target: str) -> Cgroup:
    """The memory cgroup ``target`` names: a directory of the memory hierarchy
    (absolute), or a path inside that hierarchy (``/kubepods/...`` or
    ``kubepods/...``)."""
    v1, v2 = _mounts()
    mount: Optional[Mount] = v1 if v1 is not None else (v2 if _v2_memory(v2) else None)
    if mount is None:
        raise NoSuchCgroup("no memory controller is mounted (neither cgroup v1 memory nor cgroup2 with memory)")
    point = mount.point.rstrip("/")
    target = os.path.normpath(target) if target else "/"
    if target == point or target.startswith(point + "/"):
        directory = target
    else:
        directory = os.path.normpath(os.path.join(point, target.lstrip("/")))
    if not os.path.isdir(directory) or not (directory == point or directory.startswith(point + "/")):
        raise NoSuchCgroup(f"no such cgroup: {target} (under {point})")
    if not _has_memory(mount.version, directory):
        raise NoSuchCgroup(f"{directory}: no memory controller in this cgroup")
    path = "/" + os.path.relpath(directory, point).removeprefix(".").lstrip("/")
    return Cgroup(mount.version, path, directory)


def _text(directory: str, name: str) -> Optional[str]:
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise NoSuchCgroup(f"{os.path.join(directory, name)}: {err.strerror}") from err


def _number(directory: str, name: str, unlimited: str = "max") -> Optional[int]:
    """A one-number file; None when absent or ``unlimited``."""
    text = _text(directory, name)
    if text is None or text.strip() == unlimited:
        return None
    if not text.strip().isdigit():
        raise ParseError(f"expected a number, got {text.strip()!r}", 0, os.path.join(directory, name))
    return int(text)


def _flat(directory: str, name: str) -> Dict[str, int]:
    text = _text(directory, name)
    return {} if text is None else parse_flat(text, os.path.join(directory, name))


def _pids(directory: str) -> List[int]:
    """The processes of the cgroup and its descendants: cgroup.procs lists a
    cgroup's own only, while usage and memory.stat cover the subtree."""
    out = []
    for sub, _, _ in os.walk(directory):
        name = os.path.join(sub, "cgroup.procs")
        offset = 0
        for line in (_text(sub, "cgroup.procs") or "").splitlines(keepends=True):
            if not line.strip().isdigit():
                raise ParseError(f"expected a pid, got {line.strip()!r}", offset, name)
            out.append(int(line))
            offset += len(line.encode())
    return sorted(out)


def _pressure(directory: Optional[str]) -> Optional[Dict[str, Dict[str, float]]]:
    if directory is None:
        return None
    text = _text(directory, "memory.pressure")
    # PSI exists only with CONFIG_PSI and, with CONFIG_PSI_DEFAULT_DISABLED, psi=1.
    return None if text is None else parse_pressure(text, os.path.join(directory, "memory.pressure"))


def read(cg: Cgroup) -> Charge:
    """The cgroup's charge now. Raises NoSuchCgroup if it went away."""
    if not os.path.isdir(cg.directory):
        raise NoSuchCgroup(f"no such cgroup: {cg.directory}")
    return _read_v2(cg) if cg.version == 2 else _read_v1(cg)


def _read_v2(cg: Cgroup) -> Charge:
    d = cg.directory
    stat = _flat(d, "memory.stat")
    usage = _number(d, "memory.current")
    if usage is None:
        # The root cgroup has no memory.current: sum what memory.stat says
        # it holds, as cAdvisor does for the root on v2.
        usage = sum(stat.get(k, 0) for k in ("anon", "file", "kernel", "sock"))
    return Charge(
        version=2, path=cg.path, limit=_number(d, "memory.max"), high=_number(d, "memory.high"), usage=usage,
        # memory.peak since Linux 5.19.
        peak=_number(d, "memory.peak"),
        anon=stat.get("anon"), file=stat.get("file"), file_active=stat.get("active_file"),
        file_inactive=stat.get("inactive_file"), file_dirty=stat.get("file_dirty"), shmem=stat.get("shmem"),
        # "kernel" since about 5.18; older kernels give only its parts.
        kernel=stat.get("kernel"), slab=stat.get("slab"), kernel_stack=stat.get("kernel_stack"),
        pagetables=stat.get("pagetables"), sock=stat.get("sock"), swap=_number(d, "memory.swap.current"),
        events=_flat(d, "memory.events"), pressure=_pressure(d), pids=_pids(d), container=container(cg.path),
    )


def _read_v1(cg: Cgroup) -> Charge:
    d = cg.directory
    stat = _flat(d, "memory.stat")
    limit = _number(d, "memory.limit_in_bytes")
    if limit is not None and limit >= _V1_UNLIMITED:
        limit = None
    oom = _flat(d, "memory.oom_control")
    events = {"failcnt": _number(d, "memory.failcnt") or 0}
    # oom_kill in memory.oom_control since Linux 4.13 (commit 8e675f7af507); local to this cgroup.
    if "oom_kill" in oom:
        events["oom_kill"] = oom["oom_kill"]
    events["under_oom"] = oom.get("under_oom", 0)
    memsw = _number(d, "memory.memsw.usage_in_bytes")
    usage = _number(d, "memory.usage_in_bytes") or 0
    # The total_* keys cover the subtree, as usage_in_bytes does.
    return Charge(
        version=1, path=cg.path, limit=limit, high=None, usage=usage, peak=_number(d, "memory.max_usage_in_bytes"),
        anon=stat.get("total_rss"), file=stat.get("total_cache"), file_active=stat.get("total_active_file"),
        file_inactive=stat.get("total_inactive_file"), file_dirty=stat.get("total_dirty"),
        shmem=stat.get("total_shmem"), kernel=_number(d, "memory.kmem.usage_in_bytes"), slab=None,
        kernel_stack=None, pagetables=None, sock=_number(d, "memory.kmem.tcp.usage_in_bytes"),
        # memsw counts memory + swap; with swap accounting off it is absent.
        swap=None if memsw is None else max(0, memsw - usage),
        events=events, pressure=_pressure(cg.pressure_dir), pids=_pids(d), container=container(cg.path),
    )


_HEX64 = r"([0-9a-f]{64})"
_CONTAINER = [
    # systemd driver: cri-containerd-<id>.scope, crio-<id>.scope, docker-<id>.scope.
    (re.compile(r"^(cri-containerd|crio|docker)-" + _HEX64 + r"\.scope$"), None),
    # cgroupfs driver: the bare id (kubelet) or /docker/<id>.
    (re.compile(r"^" + _HEX64 + r"$"), "cgroupfs"),
]
_RUNTIME = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}
# kubepods[-qos]-pod<UID with _>.slice (systemd driver; kubelet's ToSystemd
# turns - into _) or pod<UID> (cgroupfs driver).
_POD = re.compile(r"^(?:kubepods(?:-[a-z]+)?-pod([0-9a-f_]{36})\.slice|pod([0-9a-f-]{36}))$")


def container(path: str) -> Dict[str, str]:
    """Container id, runtime and pod UID read from a cgroup path, where the
    path follows the conventions of the kubelet, containerd, CRI-O or Docker."""
    out: Dict[str, str] = {}
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        pod = _POD.match(part)
        if pod:
            out["pod_uid"] = (pod.group(1) or "").replace("_", "-") or pod.group(2)
        for pattern, runtime in _CONTAINER:
            m = pattern.match(part)
            if m is None:
                continue
            if runtime is None:
                out["runtime"], out["container_id"] = _RUNTIME[m.group(1)], m.group(2)
            else:
                out["container_id"] = m.group(1)
                if i > 0 and parts[i - 1] == "docker":
                    out["runtime"] = "docker"
    return out


def oom_kills(cg: Cgroup) -> Optional[int]:
    """The cgroup's OOM-kill counter (v2 memory.events, hierarchical; v1
    memory.oom_control, local, Linux 4.13+); None once the cgroup is gone
    (container runtimes remove it when the container exits) or without one.
    The kernel counts a kill before it sends the SIGKILL (mm/oom_kill.c
    __oom_kill_process), so a reader that saw the victim die sees the count."""
    try:
        return _flat(cg.directory, "memory.events" if cg.version == 2 else "memory.oom_control").get("oom_kill")
    except NoSuchCgroup:
        return None


def usage_and_limit(cg: Cgroup) -> Tuple[Optional[int], Optional[int]]:
    """The page counter and the hard limit (None: no limit), two small reads."""
    if cg.version == 2:
        return _number(cg.directory, "memory.current"), _number(cg.directory, "memory.max")
    limit = _number(cg.directory, "memory.limit_in_bytes")
    return _number(cg.directory, "memory.usage_in_bytes"), None if limit is None or limit >= _V1_UNLIMITED else limit
