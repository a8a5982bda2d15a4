"""Process set-up on a CPU host: optionally keep freed memory for reuse.

XLA:CPU allocates a step's temporary buffer (activations kept for the
backward pass, gradients, optimizer temporaries: 420 MB for the
ConvNeXt-V2-nano step at 96×128, batch 8) afresh at every execution. glibc
serves a block that large with `mmap` and unmaps it when it is freed, so
every step page-faults all of it again and the kernel zeroes every page:
110k page faults per step (bench/profile_step.py prints them).

`JAXSEG_MALLOC=keep` (or `--malloc keep` for the benchmarks) makes glibc serve
large blocks from one heap and keep them when freed (`mallopt`: one arena, no
`mmap` for large blocks, no trimming), so later steps reuse mapped pages:
no page faults at all. Measured on the 2-core development host (README,
"Speed on CPU"), it is not a win, hence opt-in, for diagnosis and for
executables loaded from the persistent compilation cache:

* loaded from the cache: 96×128 step ~750 ms with `keep` against ~970 ms;
* compiled in the same process (the first run of a command): slower, 856 /
  1,187 / 1,303 ms with `keep` against 951 / 820 / 971 ms without (alternating
  runs); the depthwise kernel gradient's row loop is what slows down, for
  reasons not yet found.

The price: the process's resident memory stays at its peak, and threads
share one malloc arena. It must be applied before JAX, numpy or torch start
a thread (threads pick their arena on their first allocation):
`python -m jaxseg.main` and the benchmarks call `configure()` first thing.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import sys

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

POLICIES = ("default", "keep")
_applied: bool | None = None


def keep_freed_memory() -> bool:
  """mallopt(M_ARENA_MAX=1, M_MMAP_MAX=0, M_TRIM_THRESHOLD=max) on glibc;
  False (and nothing changed) elsewhere."""
  if not sys.platform.startswith("linux"):
    return False
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
  except (OSError, AttributeError):  # a C library without mallopt (musl)
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return all(mallopt(option, value) == 1 for option, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))


def malloc_flag() -> argparse.ArgumentParser:
  """The `--malloc default|keep` flag, as a parent parser for scripts'
  argument parsers (`argparse.ArgumentParser(parents=[host.malloc_flag()])`)."""
  p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  p.add_argument("--malloc", choices=POLICIES, default=None,
                 help="host allocator policy (jaxseg/host.py; default: $JAXSEG_MALLOC, "
                 "else default)")
  return p


def argv_policy(argv: list[str]) -> str | None:
  """`--malloc` in `argv` (scripts read it before importing JAX), else None."""
  return malloc_flag().parse_known_args(argv[1:])[0].malloc


def configure(policy: str | None = None) -> bool:
  """Applies `policy` (default $JAXSEG_MALLOC, else "default": leave malloc
  alone) once per process; returns whether freed memory is kept."""
  global _applied
  policy = policy or os.environ.get("JAXSEG_MALLOC") or "default"
  if policy not in POLICIES:
    raise ValueError(f"JAXSEG_MALLOC / --malloc = {policy!r}: choose from {POLICIES}")
  if _applied is None:
    _applied = policy == "keep" and keep_freed_memory()
  return _applied
