"""Whether this CPU computes bfloat16 natively, read from the kernel's /proc/cpuinfo flags.

The TripoSR forward pass in bfloat16 takes about half the float32 time on a CPU with native
bfloat16 (avx512_bf16 or AMX; issue 16), and is slower than float32 on one without, where
oneDNN emulates it. ``dtype = "auto"`` (recond/config.py) decides with this.
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# Linux's names (arch/x86/include/asm/cpufeatures.h) for bfloat16 dot products in AVX-512 and
# for AMX's bfloat16 tile multiply.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16_flags() -> list[str]:
    """The NATIVE_BF16_FLAGS this CPU has; [] where /proc/cpuinfo is missing (not Linux)."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            flags.update(value.split())
    return [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
