"""memscan.elf against real files: Go builds, python, libc, gcc-made ELFs.

readelf (binutils) is the oracle for program headers, notes and DT_NEEDED;
``go version`` for the expected Go version.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Tuple

import pytest
from elftools.elf.elffile import ELFFile

import memscan
from memscan import elf as elfinfo
from memscan.elf import buildinfo
from memscan.elf import module as elfmodule

from helpers.processes import stop

GO = shutil.which("go")
READELF = shutil.which("readelf")
GCC = shutil.which("gcc")

needs_readelf = pytest.mark.skipif(READELF is None, reason="readelf (binutils) not installed")
needs_gcc = pytest.mark.skipif(GCC is None, reason="gcc not installed")

MAIN_GO = """\
package main

import (
	"fmt"
	"os"
)

var big [1 << 20]byte

func main() {
	big[0] = 1
	if len(os.Args) > 1 && os.Args[1] == "wait" {
		fmt.Println("ready")
		buf := make([]byte, 1)
		os.Stdin.Read(buf)
		return
	}
	fmt.Println("hi", big[0])
}
"""

# Excluded automatically when CGO_ENABLED=0 (it imports "C").
EXPORT_GO = """\
package main

import "C"

//export Add
func Add(a, b C.int) C.int { return a + b }
"""

# name -> (CGO_ENABLED, extra go build args, extra env)
BUILDS: Dict[str, Tuple[str, List[str], Dict[str, str]]] = {
    "nocgo": ("0", [], {}),
    "cgo": ("1", [], {}),
    "stripped": ("0", ["-ldflags=-s -w"], {}),
    "cshared": ("1", ["-buildmode=c-shared"], {}),
    "pie": ("0", ["-buildmode=pie"], {}),
    "norand": ("0", [], {"GOEXPERIMENT": "norandomizedheapbase64"}),
    "race": ("1", ["-race"], {}),
}

# name -> (cgo, buildmode, race, experiments, randomized_heap)
EXPECTED_GO = {
    "nocgo": (False, "exe", False, (), True),
    "cgo": (True, "exe", False, (), True),
    "stripped": (False, "exe", False, (), True),
    "cshared": (True, "c-shared", False, (), True),
    "pie": (False, "pie", False, (), True),
    "norand": (False, "exe", False, ("norandomizedheapbase64",), False),
    "race": (True, "exe", True, (), False),
}


def _go_env(cgo: str, extra: Dict[str, str]) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("GOEXPERIMENT", None)
    env.update(GOTOOLCHAIN="local", GOPROXY="off", GOFLAGS="-mod=mod", CGO_ENABLED=cgo)
    env.update(extra)
    return env


def _write_module(src: str) -> None:
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "go.mod"), "w") as f:
        f.write("module example.com/elfinfotest\n\ngo 1.21\n")
    with open(os.path.join(src, "main.go"), "w") as f:
        f.write(MAIN_GO)
    with open(os.path.join(src, "export.go"), "w") as f:
        f.write(EXPORT_GO)


@pytest.fixture(scope="session")
def go_version() -> str:
    if GO is None:
        pytest.skip("no go command on PATH")
    out = subprocess.run([GO, "version"], capture_output=True, text=True, check=True,
                         env=_go_env("0", {})).stdout
    # "go version go1.27.3 linux/amd64"
    return out.split()[2]


@pytest.fixture(scope="session")
def go_binaries(tmp_path_factory: pytest.TempPathFactory, go_version: str) -> Dict[str, str]:
    """Every build of BUILDS, made once per session, in parallel (Go's build
    cache makes later runs fast)."""
    root = str(tmp_path_factory.mktemp("elfinfo-go"))
    src = os.path.join(root, "src")
    _write_module(src)
    procs = {}
    for name, (cgo, args, extra) in BUILDS.items():
        out = os.path.join(root, name + (".so" if name == "cshared" else ""))
        cmd = [GO, "build", "-o", out, *args, "."]
        procs[name] = (out, subprocess.Popen(cmd, cwd=src, env=_go_env(cgo, extra),
                                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                             text=True))
    paths = {}
    errors = []
    for name, (out, proc) in procs.items():
        log, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            errors.append(f"{name}: {log}")
        paths[name] = out
    if errors:
        pytest.fail("go build failed:\n" + "\n".join(errors))
    return paths


# --------------------------------------------------------------------------
# readelf oracle


def _readelf(*args: str) -> str:
    return subprocess.run([READELF, "-W", *args], capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C"}).stdout


def readelf_loads(path: str) -> List[Tuple[int, int, int, int, str]]:
    """(offset, vaddr, filesz, memsz, flags) of each LOAD in ``readelf -lW``."""
    loads = []
    for line in _readelf("-l", path).splitlines():
        fields = line.split()
        if not fields or fields[0] != "LOAD":
            continue
        # LOAD Offset VirtAddr PhysAddr FileSiz MemSiz Flg... Align ("R E" is 2 tokens)
        off, vaddr, _paddr, filesz, memsz = (int(x, 16) for x in fields[1:6])
        flags = "".join(fields[6:-1])
        loads.append((off, vaddr, filesz, memsz, flags))
    return loads


def expected_bss(path: str) -> Tuple[Tuple[int, int], ...]:
    page = elfinfo.PAGE_SIZE

    def up(x: int) -> int:
        return -(-x // page) * page

    out = []
    for _off, vaddr, filesz, memsz, flags in readelf_loads(path):
        if "W" in flags and memsz > filesz:
            start = up(vaddr + filesz) if filesz else vaddr // page * page
            end = up(vaddr + memsz)
            if end > start:
                out.append((start, end))
    return tuple(out)


def expected_min_vaddr(path: str) -> int:
    loads = readelf_loads(path)
    return min(v for _o, v, _f, _m, _fl in loads) // elfinfo.PAGE_SIZE * elfinfo.PAGE_SIZE


def expected_elf_type(path: str) -> str:
    m = re.search(r"^\s*Type:\s+(\w+)", _readelf("-h", path), re.M)
    assert m
    return m.group(1)


def expected_needed(path: str) -> Tuple[str, ...]:
    return tuple(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", _readelf("-d", path)))


def expected_build_id(path: str) -> str:
    m = re.search(r"Build ID: ([0-9a-f]+)", _readelf("-n", path))
    return m.group(1) if m else ""


def check_against_readelf(info: "elfinfo.ModuleInfo", path: str) -> None:
    assert info.bss == expected_bss(path)
    assert info.min_vaddr == expected_min_vaddr(path)
    assert info.elf_type == expected_elf_type(path)
    assert info.needed == expected_needed(path)
    assert info.build_id == expected_build_id(path)


def _self_maps() -> List[Tuple[int, int, str]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            name = parts[5].strip() if len(parts) > 5 else ""
            out.append((start, end, name))
    return out


def _libc_path() -> str:
    for _s, _e, name in _self_maps():
        if os.path.basename(name) == "libc.so.6" or re.match(r"libc-[\d.]+\.so$", os.path.basename(name)):
            return name
    pytest.skip("no glibc in this process")


# --------------------------------------------------------------------------
# Go builds


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_go_build_info(go_binaries: Dict[str, str], go_version: str, name: str) -> None:
    info = elfinfo.module_info(go_binaries[name])
    assert info is not None
    go = info.go
    assert go is not None
    cgo, buildmode, race, experiments, randomized = EXPECTED_GO[name]
    assert go.version == go_version == "go1.27.3"
    assert go.cgo is cgo
    assert go.buildmode == buildmode
    assert go.race is race
    assert go.experiments == experiments
    assert go.randomized_heap is randomized
    assert "decoratemappings=0" in go.godebug  # go.mod says go 1.21
    # Every Go build carries the Go build id note (also when stripped).
    assert info.go_build_id.count("/") >= 1


@pytest.mark.slow
@needs_readelf
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_go_layout_matches_readelf(go_binaries: Dict[str, str], name: str) -> None:
    path = go_binaries[name]
    info = elfinfo.module_info(path)
    assert info is not None
    check_against_readelf(info, path)
    assert info.bss  # Go's .bss/.noptrbss always spills past the file part
    assert info.elf_type == ("DYN" if name in ("cshared", "pie") else "EXEC")
    assert info.min_vaddr == (0 if name == "cshared" else 0x400000)
    assert ("libc.so.6" in info.needed) is EXPECTED_GO[name][0]


@pytest.mark.slow
def test_read_module_equals_module_info(go_binaries: Dict[str, str]) -> None:
    for path in go_binaries.values():
        assert elfinfo.read_module(path) == elfinfo.module_info(path)


@pytest.mark.slow
@needs_readelf
def test_stripped_keeps_buildinfo_section(go_binaries: Dict[str, str]) -> None:
    # -s -w keeps the section headers and .go.buildinfo.
    for name, path in go_binaries.items():
        assert ".go.buildinfo" in _readelf("-S", path), name


def _strip_section_headers(src: str, dst: str) -> None:
    """Copy ``src`` with e_shoff/e_shnum/e_shstrndx zeroed (like sstrip), the
    header rebuilt with pyelftools' own struct."""
    with open(src, "rb") as f:
        data = bytearray(f.read())
        f.seek(0)
        elf = ELFFile(f)
        hdr = elf.header
        hdr["e_shoff"] = 0
        hdr["e_shnum"] = 0
        hdr["e_shstrndx"] = 0
        raw = elf.structs.Elf_Ehdr.build(hdr)
    data[: len(raw)] = raw
    with open(dst, "wb") as f:
        f.write(data)
    os.chmod(dst, 0o755)


@pytest.mark.slow
@needs_readelf
@pytest.mark.parametrize("name", ["nocgo", "cgo", "cshared", "pie"])
def test_without_section_headers(go_binaries: Dict[str, str], tmp_path, name: str) -> None:
    """No section headers: .go.buildinfo is found by scanning the writable
    PT_LOAD (at its start for internal linking, inside it for cgo)."""
    dst = str(tmp_path / name)
    _strip_section_headers(go_binaries[name], dst)
    assert "no sections" in _readelf("-S", dst)
    want = elfinfo.module_info(go_binaries[name])
    got = elfinfo.module_info(dst)
    assert got is not None and want is not None
    assert got.go == want.go
    assert got.go_build_id == want.go_build_id  # PT_NOTE covers .note.go.buildid
    assert got.needed == want.needed  # from PT_DYNAMIC
    assert (got.bss, got.min_vaddr, got.elf_type) == (want.bss, want.min_vaddr, want.elf_type)


@pytest.mark.slow
def test_go121_not_randomized(tmp_path) -> None:
    from helpers import gotoolchain

    GO121_ROOT = gotoolchain.goroot("1.21.13")
    src = str(tmp_path / "src")
    _write_module(src)
    out = str(tmp_path / "app121")
    env = _go_env("0", {"GOROOT": GO121_ROOT})
    subprocess.run([os.path.join(GO121_ROOT, "bin", "go"), "build", "-o", out, "."],
                   cwd=src, env=env, check=True, capture_output=True)
    info = elfinfo.module_info(out)
    assert info is not None and info.go is not None
    assert info.go.version == "go1.21.13"
    assert info.go.randomized_heap is False
    assert info.go.cgo is False and info.go.buildmode == "exe"


# --------------------------------------------------------------------------
# Non-Go files


@needs_readelf
def test_proc_self_exe_python() -> None:
    info = elfinfo.module_info("/proc/self/exe")
    assert info is not None
    assert info.go is None
    assert info.go_build_id == ""
    check_against_readelf(info, os.path.realpath(sys.executable))
    # Same inode through another path: same answer (from the cache).
    assert elfinfo.module_info(os.path.realpath("/proc/self/exe")) == info


@needs_readelf
def test_libc_has_bss() -> None:
    # python's own RW PT_LOAD may end inside its last file page (a
    # shared-libpython build has no separate .bss page), libc's does not.
    path = _libc_path()
    info = elfinfo.module_info(path)
    assert info is not None and info.go is None
    assert info.elf_type == "DYN" and info.min_vaddr == 0
    assert info.bss
    check_against_readelf(info, path)


def test_map_files_of_self() -> None:
    path = _libc_path()
    mappings = [(s, e) for s, e, n in _self_maps() if n == path]
    start, end = mappings[0]
    cands = elfinfo.mapped_path(os.getpid(), start, end, path)
    assert cands[0] == f"/proc/{os.getpid()}/map_files/{start:x}-{end:x}"
    want = elfinfo.module_info(path)
    got = [elfinfo.module_info(c) for c in cands]
    # map_files needs CAP_SYS_ADMIN: None without it, never an exception.
    assert got[0] in (None, want)
    assert got[1] == want and got[2] == want
    if os.geteuid() == 0:
        assert got[0] == want


def test_not_elf(tmp_path) -> None:
    text = tmp_path / "text"
    text.write_text("hello, not an ELF file\n" * 10)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    short = tmp_path / "short"
    short.write_bytes(b"\x7fELF\x02\x01")
    with open(sys.executable, "rb") as f:
        head = f.read(64)  # a valid ELF header, program headers cut off
    truncated = tmp_path / "truncated"
    truncated.write_bytes(head)
    for p in (text, empty, short, truncated):
        assert elfinfo.module_info(str(p)) is None, p
    for p in (text, empty, short):
        with pytest.raises(ValueError):
            elfinfo.read_module(str(p))
    assert elfinfo.module_info(str(tmp_path)) is None  # a directory
    assert elfinfo.module_info("/dev/null") is None  # not a regular file
    assert elfinfo.module_info(str(tmp_path / "missing")) is None  # ENOENT
    assert elfinfo.module_info("bad\0path") is None
    with pytest.raises(OSError):
        elfinfo.read_module(str(tmp_path / "missing"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unreadable(tmp_path) -> None:
    p = tmp_path / "secret"
    shutil.copy(sys.executable, p)
    os.chmod(p, 0)
    assert elfinfo.module_info(str(p)) is None


# --------------------------------------------------------------------------
# Identity cache


@pytest.mark.slow
def test_cache_replace_by_rename(go_binaries: Dict[str, str], tmp_path) -> None:
    path = str(tmp_path / "app")
    shutil.copy(go_binaries["nocgo"], path)
    assert elfinfo.module_info(path).go.cgo is False
    tmp = path + ".new"
    shutil.copy(go_binaries["cgo"], tmp)
    os.replace(tmp, path)  # what `go build -o path` does: a new inode
    assert elfinfo.module_info(path).go.cgo is True


@pytest.mark.slow
def test_cache_rewrite_in_place(go_binaries: Dict[str, str], tmp_path) -> None:
    path = str(tmp_path / "app")
    shutil.copy(go_binaries["nocgo"], path)
    ino = os.stat(path).st_ino
    assert elfinfo.module_info(path).go.cgo is False
    with open(path, "r+b") as f, open(go_binaries["cgo"], "rb") as g:  # same inode
        f.truncate(0)
        f.write(g.read())
    assert os.stat(path).st_ino == ino
    assert elfinfo.module_info(path).go.cgo is True
    # And back to a non-ELF file.
    with open(path, "wb") as f:
        f.write(b"#!/bin/sh\n")
    assert elfinfo.module_info(path) is None


@pytest.mark.slow
def test_cache_same_size_mtime_restored(go_binaries: Dict[str, str], tmp_path) -> None:
    """Same inode, same size, mtime set back: only ctime tells them apart."""
    path = str(tmp_path / "app")
    shutil.copy(go_binaries["nocgo"], path)
    st = os.stat(path)
    assert elfinfo.module_info(path).go.cgo is False
    with open(path, "rb") as f:
        data = f.read()
    new = data.replace(b"CGO_ENABLED=0", b"CGO_ENABLED=1")  # modinfo is stored twice
    assert new != data and len(new) == len(data)
    time.sleep(0.05)  # let the coarse kernel clock tick so ctime differs
    with open(path, "r+b") as f:
        f.write(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(path)
    assert (st2.st_ino, st2.st_size, st2.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    assert elfinfo.module_info(path).go.cgo is True


def test_cache_hits_and_bound(tmp_path) -> None:
    memscan.clear_caches()
    exe = os.path.realpath(sys.executable)
    a = elfinfo.module_info(exe)
    b = elfinfo.module_info(exe)
    assert a is b
    assert elfinfo.cache_info()[:2] == (1, 1)
    for i in range(elfmodule._CACHE_SIZE + 10):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"x" * (i + 1))
        elfinfo.module_info(str(p))
    assert elfinfo.cache_info()[2] == elfmodule._CACHE_SIZE


@pytest.mark.slow
def test_live_process_binary_replaced(go_binaries: Dict[str, str], tmp_path) -> None:
    """A running Go program whose binary was replaced on disk: map_files and
    /proc/PID/exe still give the mapped (old) binary, the path the new one."""
    path = str(tmp_path / "server")
    shutil.copy(go_binaries["nocgo"], path)
    proc = subprocess.Popen([path, "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        tmp = path + ".new"
        shutil.copy(go_binaries["cgo"], tmp)
        os.replace(tmp, path)
        with open(f"/proc/{proc.pid}/maps") as f:
            lines = [l.split(None, 5) for l in f]
        first = next(l for l in lines if len(l) > 5 and l[5].strip().startswith(path))
        name = first[5].strip()
        assert name == path + " (deleted)"
        start, end = (int(x, 16) for x in first[0].split("-"))
        cands = elfinfo.mapped_path(proc.pid, start, end, name)
        assert cands == [f"/proc/{proc.pid}/map_files/{start:x}-{end:x}",
                         f"/proc/{proc.pid}/root{path}", path]
        assert elfinfo.module_info(f"/proc/{proc.pid}/exe").go.cgo is False
        if os.geteuid() == 0:
            assert elfinfo.module_info(cands[0]).go.cgo is False
        # The other candidates now name the new file: the documented caveat.
        assert elfinfo.module_info(cands[2]).go.cgo is True
    finally:
        proc.stdin.close()  # the program exits at EOF
        stop(proc)


# --------------------------------------------------------------------------
# Pre-1.18 pointer format, made with gcc

OLD_C = r"""
struct gostr { const char *p; unsigned long n; };
static const char ver[] = "go1.16.15";
static const char mod[] =
    "0w\xaf\x0c\x92t\x08\x02\x41\xe1\xc1\x07\xe6\xd6\x18\xe6"
    "path\texample.com/old\n" MODLINES
    "\xf9\x32\x43\x31\x86\x18\x20\x72\x00\x82\x42\x10\x41\x16\xd8\xf2";
static const struct gostr vs = {ver, sizeof(ver) - 1};
static const struct gostr ms = {mod, sizeof(mod) - 1};
struct buildinfo { char magic[14]; unsigned char ptrsize, flags; const struct gostr *v, *m; };
__attribute__((used, section(".go.buildinfo"), aligned(16)))
struct buildinfo bi = {"\xff Go buildinf:", sizeof(void *), 0, &vs, &ms};
int main(void) { return 0; }
"""


@needs_gcc
@pytest.mark.parametrize(
    "modlines, cgo",
    [
        (r'"build\tCGO_ENABLED=0\n"', False),
        # No CGO_ENABLED setting: decided by DT_NEEDED libc (gcc links it).
        ('""', True),
    ],
)
def test_pointer_format(tmp_path, modlines: str, cgo: bool) -> None:
    src = tmp_path / "old.c"
    src.write_text(OLD_C)
    exe = str(tmp_path / "old")
    subprocess.run([GCC, "-O0", "-no-pie", f"-DMODLINES={modlines}", "-o", exe, str(src)],
                   check=True, capture_output=True)
    info = elfinfo.module_info(exe)
    assert info is not None and info.go is not None
    assert info.go.version == "go1.16.15"
    assert info.go.cgo is cgo
    assert info.go.buildmode == "exe"
    assert info.go.randomized_heap is False
    # Without section headers the same blob is found by the segment scan.
    stripped = str(tmp_path / "old-noshdr")
    _strip_section_headers(exe, stripped)
    assert elfinfo.module_info(stripped).go == info.go


# --------------------------------------------------------------------------
# Version strings and modinfo (Go's format)


@pytest.mark.parametrize(
    "raw, version, experiments",
    [
        ("go1.27.3", "go1.27.3", ()),
        ("go1.27.3-X:norandomizedheapbase64", "go1.27.3", ("norandomizedheapbase64",)),
        ("go1.26.6-X:fieldtrack,boringcrypto", "go1.26.6", ("fieldtrack", "boringcrypto")),
        ("devel go1.28-abcdef Tue Jan 1 00:00:00 2026 +0000 X:norandomizedheapbase64",
         "devel go1.28-abcdef Tue Jan 1 00:00:00 2026 +0000", ("norandomizedheapbase64",)),
    ],
)
def test_version_suffix(raw: str, version: str, experiments: tuple) -> None:
    go = buildinfo.go_info(raw, "", True, "EXEC", False, ())
    assert go.version == version
    assert go.experiments == experiments


def test_modinfo_settings() -> None:
    mod = ("path\tx\nbuild\t-buildmode=pie\nbuild\t-ldflags=\"-s -w\"\nbuild\t-msan=true\n"
           "build\tGOEXPERIMENT=arenas,norandomizedheapbase64\nbuild\tDefaultGODEBUG=a=1,b=2\n")
    go = buildinfo.go_info("go1.26.6-X:norandomizedheapbase64", mod, True, "DYN", True, ())
    assert go.buildmode == "pie"
    assert go.experiments == ("norandomizedheapbase64", "arenas")
    assert go.godebug == "a=1,b=2"
    assert go.randomized_heap is False
    assert buildinfo._parse_settings(mod)["-ldflags"] == "-s -w"
    # 1.26+ defaults, 32-bit and msan switch it off; 1.25 is off.
    assert buildinfo.go_info("go1.26.0", "", True, "EXEC", False, ()).randomized_heap is True
    assert buildinfo.go_info("go1.26.0", "", False, "EXEC", False, ()).randomized_heap is False
    assert buildinfo.go_info("go1.26.0", mod, True, "EXEC", False, ()).randomized_heap is False
    assert buildinfo.go_info("go1.25.5", "", True, "EXEC", False, ()).randomized_heap is False
    assert buildinfo.go_info("", "", True, "EXEC", False, ()).randomized_heap is False
    # buildmode inferred when missing
    assert buildinfo.go_info("go1.17", "", True, "DYN", False, ()).buildmode == "c-shared"
    assert buildinfo.go_info("go1.17", "", True, "DYN", True, ()).buildmode == "pie"
    assert buildinfo.go_info("go1.17", "", True, "EXEC", True, ("libc.so.6",)).cgo is True
    assert buildinfo.go_info("go1.17", "", True, "DYN", True, ()).cgo is False


# --------------------------------------------------------------------------
# Names


def test_mapped_path() -> None:
    assert elfinfo.mapped_path(42, 0x400000, 0x49a000, "/usr/bin/app") == [
        "/proc/42/map_files/400000-49a000", "/proc/42/root/usr/bin/app", "/usr/bin/app"]
    assert elfinfo.mapped_path(7, 0x7F00AB000, 0x7F00AC000, "/opt/x.so (deleted)") == [
        "/proc/7/map_files/7f00ab000-7f00ac000", "/proc/7/root/opt/x.so", "/opt/x.so"]
    assert elfinfo.mapped_path(1, 0x1000, 0x2000, "[heap]") == ["/proc/1/map_files/1000-2000"]


@pytest.mark.parametrize(
    "names, want",
    [
        (["/usr/lib/x86_64-linux-gnu/libc.so.6", "ld-linux-x86-64.so.2"], "glibc"),
        (["libc-2.28.so", "ld-2.28.so"], "glibc"),  # glibc < 2.34 maps the real name
        (["/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "libc.so.6"], "jemalloc"),
        (["libc.so.6", "libtcmalloc_minimal.so.4"], "tcmalloc"),
        (["libtcmalloc.so.4 (deleted)", "libc.so.6"], "tcmalloc"),
        (["libmimalloc.so.2.1", "libc.so.6"], "mimalloc"),
        (["/lib/ld-musl-x86_64.so.1"], "musl"),
        (["/usr/lib/libc.musl-x86_64.so.1"], "musl"),
        (["/lib/ld-musl-x86_64.so.1", "libgcompat.so.0", "libc.so.6"], "musl"),
        (["/usr/local/bin/app"], None),  # static Go binary
        ([], None),
        (["libcrypto.so.3", "libc.so.7"], None),
    ],
)
def test_allocator(names: List[str], want) -> None:
    assert elfinfo.allocator(names) == want


@pytest.mark.parametrize(
    "name, want",
    [
        ("libc.so.6", True),
        ("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", True),
        ("/x/_fast.cpython-311-x86_64-linux-gnu.so", True),
        ("libfoo.so", True),
        ("/opt/lib/libbar.so.1.2.3 (deleted)", True),
        ("/run/app.sock", False),
        ("/usr/bin/python3.11", False),
        ("/data/x.so.d/file", False),  # .so in a directory name only
        ("libsomething", False),
        ("[vdso]", False),
        ("", False),
    ],
)
def test_is_shared_object_name(name: str, want: bool) -> None:
    assert elfinfo.is_shared_object_name(name) is want
