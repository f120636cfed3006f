"""pointworld.heap: glibc heap thresholds, checked by what the kernel reports (resident memory) in a
fresh process, so the test process's own heap is left alone."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from pointworld import heap

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Allocates 256 MiB with malloc, touches every page, frees it and reports resident memory (MiB) before
# and after the free, and after a second allocation of the same size.
_PROBE = r"""
import ctypes, json, os, sys
from pointworld.heap import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
page = os.sysconf("SC_PAGE_SIZE")
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page / 2**20
n = 256 * 2**20
p = libc.malloc(n); libc.memset(p, 1, n)
held = rss_mib(); libc.free(p); freed = rss_mib()
p = libc.malloc(n); libc.memset(p, 2, n); again = rss_mib(); libc.free(p)
print(json.dumps({"applied": applied, "held": held, "freed": freed, "again": again}))
"""


def _probe(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in heap.USER_VARIABLES + (heap.OPT_OUT_VARIABLE,)}
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt thresholds are a glibc feature")
def test_default_heap_unmaps_a_freed_block_and_retained_heap_keeps_it() -> None:
    default = _probe("default")
    retained = _probe("retain")
    assert not default["applied"] and retained["applied"]
    # glibc's default: the 256 MiB block had its own mapping, so freeing it gives the pages back.
    assert default["held"] - default["freed"] > 200
    # Retained: the block came from the heap and stays resident after free ...
    assert retained["held"] - retained["freed"] < 16
    # ... and the next allocation of that size reuses it instead of mapping (and faulting in) new pages.
    assert retained["again"] - retained["freed"] < 16


@pytest.mark.parametrize("value", [0, -1, 2**31, 1.5, True, "1024"])
@pytest.mark.parametrize("name", ["mmap_threshold_bytes", "trim_threshold_bytes"])
def test_bad_thresholds_name_the_argument(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        heap.retain_freed_memory(**{name: value})


@pytest.mark.parametrize("variable, value", [("POINTWORLD_RETAIN_FREED_MEMORY", "0"),
                                             ("MALLOC_MMAP_THRESHOLD_", "131072"),
                                             ("MALLOC_TRIM_THRESHOLD_", "131072")])
def test_user_choice_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    assert heap.retain_freed_memory() is False


def test_default_policy_reaches_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(heap.OPT_OUT_VARIABLE, "1")  # not an opt-out; monkeypatch restores the variable after
    assert heap.set_heap_policy(False) is False
    assert os.environ[heap.OPT_OUT_VARIABLE] == "0"
    probe = subprocess.run([sys.executable, "-c", "from pointworld.heap import retain_freed_memory as r; print(r())"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "False"
