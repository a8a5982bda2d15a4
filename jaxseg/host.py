"""Process set-up on a CPU host: optionally 2 MB pages or kept freed memory for malloc.

XLA:CPU allocates a step's temporary buffer (activations kept for the
backward pass, gradients, optimizer temporaries: 420 MB for the
ConvNeXt-V2-nano step at 96×128, batch 8) afresh at every execution. glibc
serves a block that large with `mmap` and unmaps it when it is freed, so
every step page-faults all of it again and the kernel zeroes every page:
110k page faults per step (bench/profile_step.py prints them).

On a VM with free page reporting (Firecracker here: freed 2 MB blocks are
handed back to the host, `/sys/module/page_reporting`), each such fault may
also make the host map the page again.

`JAXSEG_MALLOC=hugepages` (`--malloc hugepages`) is the measured win: glibc
backs large blocks with 2 MB transparent huge pages (its `hugetlb=1`
tunable, which needs a restart of the process: `huge_pages` re-executes it
with the tunable set), so faulting in the temp buffer takes 512× fewer
faults and freed blocks are reused by the next step before they are
reported. ConvNeXt-V2-nano + 1×1 head against PyTorch in the same process,
interleaved (README, "Speed on CPU"): 96×128 b8 1.01× / 1.01× PyTorch's
speed against 0.74× / 0.81× without; 512² b2 1.01× / 1.08× against 0.94× /
0.92×. After ≥ 1 s idle the next step can take 2–2.5× (its freed blocks were
reported meanwhile); steps run back to back in training. It is opt-in
because it restarts the interpreter.

`JAXSEG_MALLOC=keep` (or `--malloc keep`) makes glibc serve large blocks
from one heap and keep them when freed (`mallopt`: one arena, no `mmap` for
large blocks, no trimming): no page faults at all, but the executor threads
contend for the one arena's lock (~4,000 voluntary context switches per step
against ~300), so steps are slower than with `hugepages` (96×128: ~530
against ~390 ms); with more arenas glibc unmaps per-thread heaps when they
empty and the faults return. Kept for diagnosis; the process's resident
memory then stays at its peak. It must be applied before JAX, numpy or torch
start a thread (threads pick their arena on their first allocation):
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

POLICIES = ("default", "keep", "hugepages")
_HUGETLB = "glibc.malloc.hugetlb=1"
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"
_applied: bool | None = None


def thp_mode(path: str = _THP) -> str | None:
  """The kernel's transparent-huge-page mode (always | madvise | never), None if unknown."""
  try:
    text = open(path, encoding="ascii").read()
  except OSError:
    return None
  return text[text.index("[") + 1:text.index("]")] if "[" in text else None


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the running glibc, None for another C library."""
  version = (os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else "") or ""
  if not version.startswith("glibc "):
    return None
  major, minor = version.split()[1].split(".")[:2]
  return int(major), int(minor)


def huge_pages() -> bool:
  """Makes glibc back its heap and large blocks with 2 MB transparent huge
  pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, glibc >= 2.35).

  Tunables are read when a process starts, so unless they are already in the
  environment this re-executes the process (`sys.orig_argv`, same pid) with
  them added: call it before anything else happens. True if in effect, False
  (nothing changed) where the kernel's THP mode is "never" or unknown, or
  glibc is older or absent.
  """
  if not sys.platform.startswith("linux") or thp_mode() not in ("always", "madvise"):
    return False
  if (glibc_version() or (0, 0)) < (2, 35):
    return False
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  if _HUGETLB in tunables.split(":"):
    return True
  if not getattr(sys, "orig_argv", None):
    raise RuntimeError("JAXSEG_MALLOC=hugepages needs to restart Python; start it with "
                       f"GLIBC_TUNABLES={_HUGETLB} instead.")
  env = dict(os.environ, GLIBC_TUNABLES=":".join(t for t in (tunables, _HUGETLB) if t))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)  # does not return


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
  alone; "keep": `keep_freed_memory`; "hugepages": `huge_pages`) once per
  process; returns whether it is in effect."""
  global _applied
  policy = policy or os.environ.get("JAXSEG_MALLOC") or "default"
  if policy not in POLICIES:
    raise ValueError(f"JAXSEG_MALLOC / --malloc = {policy!r}: choose from {POLICIES}")
  if _applied is None:
    _applied = {"default": lambda: False, "keep": keep_freed_memory,
                "hugepages": huge_pages}[policy]()
  return _applied


def describe(policy: str | None = None) -> str:
  """'POLICY (in effect|not available here)' of `configure(policy)`, for logs."""
  name = policy or os.environ.get("JAXSEG_MALLOC") or "default"
  if name == "default":
    return "default"
  return f"{name} ({'in effect' if configure(policy) else 'not available here'})"
