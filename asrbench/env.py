"""The environment recorded with every result: versions, git commit, device, CPU/GPU name."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from pathlib import Path
from typing import Literal

import torch

import asrbench
from asrbench.errors import AsrbenchError
from asrbench.version import git_commit  # noqa: F401 - re-exported: export.py records it


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The instruction-set flags that decide what runs fast here (Linux /proc/cpuinfo names): recorded
# with every result, as the same code's speed ratios differ between CPU kinds.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def cpu_flags() -> list[str]:
    """Which of :data:`CPU_FLAGS` this CPU has ([] where /proc/cpuinfo cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def bf16_hardware(device: torch.device) -> str | None:
    """What computes bf16 on ``device``: "amx" or "avx512_bf16" (native on a CPU), "cuda" (a GPU
    with bf16), "emulated" (converted to and from float32 around each op: slower than float32 on
    a CPU), or None where the CPU's flags are unknown (not Linux)."""
    if device.type == "cuda":
        return "cuda" if torch.cuda.is_bf16_supported() else "emulated"
    flags = cpu_flags()
    if not flags:
        return None
    if "amx_bf16" in flags:
        return "amx"
    return "avx512_bf16" if "avx512_bf16" in flags else "emulated"


CORES_VARIABLE = "ASRBENCH_CORES"  # caps the cores asrbench counts as its own (set by bench --jobs)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask), capped by ``$ASRBENCH_CORES``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cap = os.environ.get(CORES_VARIABLE, "")
    if cap.isdigit() and int(cap) > 0:
        cores = min(cores, int(cap))
    return cores


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; anything else, or a GPU torch cannot see, is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AsrbenchError(f"device '{name}': use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise AsrbenchError(f"device '{name}': use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AsrbenchError(f"device '{name}' requested but torch sees no CUDA GPU (use --set train.device=cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AsrbenchError(f"device '{name}': only {torch.cuda.device_count()} CUDA GPUs visible")
    return device


def environment(device: torch.device | None = None) -> dict:
    device = device or resolve_device()
    info = {
        "asrbench_version": asrbench.__version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def resident_mb() -> float | None:
    """This process's resident set size now, in MB (Linux ``/proc/self/statm``; None elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory_mb(device: torch.device) -> dict:
    """Peak memory so far: GPU memory allocated by torch on CUDA; the process's peak resident set
    size on CPU (data, features and Python included, so an upper bound for the model's share)."""
    if device.type == "cuda":
        return {"kind": "cuda_max_allocated", "mb": torch.cuda.max_memory_allocated(device) / 2**20}
    try:
        import resource

        return {"kind": "process_max_rss", "mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    except (ImportError, OSError):  # not on Linux/macOS
        return {"kind": "unavailable", "mb": None}


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``; elsewhere nothing).

    CPU tensors come from malloc. glibc raises its mmap threshold after large frees, so later
    batch-sized tensors of varying shapes are carved from the heap, and the freed gaps stay
    resident: the trainer's RSS crept up ~10% per epoch on AN4 until this ran at every epoch end.
    A fixed low threshold avoids that too, but made training 2-3x slower (a page fault per fresh
    tensor page).
    """
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c") if platform.system() == "Linux" else None
        try:
            _libc = ctypes.CDLL(name) if name else False
        except OSError:
            _libc = False
    if _libc and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


_libc: ctypes.CDLL | Literal[False] | None = None  # None: not looked up yet; False: no libc to trim
