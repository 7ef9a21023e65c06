"""Peak resident memory of one call on the CPU (Linux): what the benchmark runner and the examples measure.

Writing 5 to /proc/self/clear_refs resets the process's high-water mark (VmHWM) to its current resident size,
so the peak of ONE call can be read after any number of earlier calls (a warm-up, a compilation). glibc is
told first to serve every block of 128 KiB or more by mmap and to hand it back when freed (`mallopt`):
by default it raises its mmap threshold after large frees and keeps later blocks in the heap, where freed
memory stays resident and a later call reuses it without raising the resident size. With fixed thresholds
the resident size follows the live tensors to within about a MiB of allocator and library noise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from pathlib import Path

__all__ = ["fix_malloc_thresholds", "peak_extra_bytes", "supported"]

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def supported() -> bool:
    """Whether this process can reset and read its peak resident size (Linux with /proc)."""
    return _CLEAR_REFS.exists() and _STATUS.exists()


def _status_bytes(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{_STATUS} has no {field}")


def fix_malloc_thresholds() -> None:
    """Makes glibc return every freed block of 128 KiB or more to the system at once (see the module doc).

    Call it after the timed calls: a fresh mmap per large block costs page faults on every call.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 128 * 1024)
    libc.mallopt(m_trim_threshold, 128 * 1024)
    libc.malloc_trim(0)


def peak_extra_bytes(fn: Callable[[], object]) -> int:
    """Peak resident memory while `fn()` runs, minus the resident memory just before it (Linux).

    Raises:
        RuntimeError: /proc/self/clear_refs or /proc/self/status is missing (not Linux).
    """
    if not supported():
        raise RuntimeError("peak_extra_bytes needs Linux's /proc/self/clear_refs and /proc/self/status")
    gc.collect()
    _CLEAR_REFS.write_text("5")
    before = _status_bytes("VmRSS")
    fn()
    return _status_bytes("VmHWM") - before
