"""Where a train step's time goes on XLA:CPU: per-op profiler time, grouped.

    python bench/profile_step.py [--only ROW ...] [--steps N] [--json OUT] [--ops K] [--malloc P]

Each row of bench/train_step.py is compiled, warmed up and run `--steps` times
under `jax.profiler.trace`, with XLA:CPU's per-instruction trace events on
(`--xla_cpu_enable_xprof_traceme`, set by this script before JAX starts). Every
event is one instruction of the compiled program; its name is looked up in the
compiled HLO text, whose metadata carries the source op's name (the flax module
path, `transpose(...)` for the backward pass), and the time is grouped by part
of the model × pass. Times are thread time per step summed over XLA's executor
threads, so the parts can add up to more than the wall time when instructions
overlap; the table also gives the step's median wall time and its page faults.

`--malloc default|keep|hugepages` chooses the host allocator's policy (jaxseg/host.py);
the default is $JAXSEG_MALLOC, else glibc's own behaviour.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import resource
import statistics
import tempfile
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_enable_xprof_traceme=true").strip()

# train_step sets the allocator policy (--malloc) before it imports JAX.
import train_step  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from jaxseg import host  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

# (part, pattern on the op name), first match wins; checked on the module path.
PARTS = (
    ("depthwise 7x7", r"/dwconv\b|depthwise"),
    ("block LayerNorm", r"_block\d+/norm\b"),
    ("pwconv1 (expand)", r"/pwconv1\b"),
    ("GELU", r"gelu"),
    ("GRN", r"/grn\b"),
    ("pwconv2 (project)", r"/pwconv2\b"),
    ("residual / drop path", r"_block\d+"),
    ("stem", r"/stem_"),
    ("downsample", r"/downsample\d"),
    ("neck + head", r"/(fpn|lateral|ppm|aspp|head|classifier|decoder|bottleneck|context)"),
)
PRIORITY = {"convolution": 0, "dot": 1, "reduce": 2, "reduce-window": 2, "scatter": 2}
# (A tuple-shaped result, e.g. a variadic reduce's, holds `/*index=5*/` comments.)
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (?:[^=]|/\*index=\d+\*/)*?\b([a-z][\w\-]*)\(")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_OPNAME = re.compile(r'op_name="([^"]*)"')
_COMP = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")


def part_of(op_name: str) -> tuple[str, str]:
  """(part, pass) of one source op name."""
  if "jvp(" not in op_name and "transpose(" not in op_name:
    return "optimizer + step", "-"
  passes = "bwd" if "transpose(" in op_name else "fwd"
  for part, pattern in PARTS:
    if re.search(pattern, op_name):
      return part, passes
  return "loss + other", passes


def instruction_parts(hlo_text: str) -> dict[str, tuple[str, str]]:
  """Instruction name -> (part, pass): a fusion by its heaviest fused op
  (convolution > dot > reduce > the rest, the first in program order)."""
  comps: dict[str, list[tuple[str, str, str, str | None]]] = {}
  current = None
  for line in hlo_text.splitlines():
    m = _COMP.match(line)
    if m and line.rstrip().endswith("{"):
      current = comps.setdefault(m.group(1), [])
      continue
    m = _INSTR.match(line)
    if m and current is not None:
      op = _OPNAME.search(line)
      calls = _CALLS.search(line)
      current.append((m.group(1), m.group(2), op.group(1) if op else "",
                      calls.group(1) if calls else None))

  def heaviest(instrs, depth=0):
    """(opcode, op name) of the heaviest op with a name among `instrs`, looking
    into the computations they call."""
    best = None
    for _, opcode, op_name, calls in instrs:
      sub = heaviest(comps[calls], depth + 1) if calls in comps and depth < 3 else None
      cand = sub or (opcode, op_name)
      if cand[1] and (best is None or PRIORITY.get(cand[0], 9) < PRIORITY.get(best[0], 9)):
        best = cand
    return best

  out = {}
  for instrs in comps.values():
    for name, _, op_name, calls in instrs:
      found = heaviest(comps[calls]) if calls in comps else None
      out[name] = part_of(found[1] if found else op_name)
  return out


def profile(name: str, steps: int, top_ops: int = 0) -> dict:
  update, state, batch, (h, w, b) = train_step.make_row(name)
  compiled = update.lower(state, batch).compile()
  parts = instruction_parts(compiled.as_text())
  state, m, _ = compiled(state, batch)
  jax.block_until_ready(m)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(steps):
    state, m, _ = compiled(state, batch)
    jax.block_until_ready((state, m))
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
  walls = []
  trace_dir = tempfile.mkdtemp(prefix="jaxseg_profile_")
  with jax.profiler.trace(trace_dir):
    for _ in range(steps):
      t0 = time.perf_counter()
      state, m, _ = compiled(state, batch)
      jax.block_until_ready((state, m))
      walls.append(time.perf_counter() - t0)
  path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
  data = jax.profiler.ProfileData.from_file(path)
  by_part: dict[tuple[str, str], float] = collections.defaultdict(float)
  by_op: dict[str, float] = collections.defaultdict(float)
  unknown = 0.0
  for plane in data.planes:
    for line in plane.lines:
      for e in line.events:
        stats = dict(e.stats) if e.stats else {}
        op = stats.get("hlo_op")
        if not op or e.name.startswith("end: "):
          continue
        ms = e.duration_ns / 1e6 / steps
        by_op[op] += ms
        if op in parts:
          by_part[parts[op]] += ms
        else:
          unknown += ms
  if unknown:
    by_part[("unattributed", "-")] += unknown
  return {"name": name, "height": h, "width": w, "batch": b,
          "wall_ms": 1000 * statistics.median(walls), "page_faults": faults,
          "temp_mb": compiled.memory_analysis().temp_size_in_bytes / 2**20,
          "parts": [{"part": p, "pass": ps, "ms": ms} for (p, ps), ms in by_part.items()],
          "top_ops": sorted(by_op.items(), key=lambda kv: -kv[1])[:top_ops]}


def print_table(r: dict) -> None:
  total = sum(p["ms"] for p in r["parts"])
  rows = collections.defaultdict(lambda: {"fwd": 0.0, "bwd": 0.0, "-": 0.0})
  for p in r["parts"]:
    rows[p["part"]][p["pass"]] += p["ms"]
  print(f"\n{r['name']} ({r['height']}×{r['width']}, batch {r['batch']}): wall "
        f"{r['wall_ms']:.1f} ms per step, op time {total:.1f} ms per step, "
        f"{r['page_faults']:.0f} page faults per step (temp buffer {r['temp_mb']:.0f} MB)")
  print("| part | forward ms | backward ms | other ms | total ms | share |")
  print("|---|---|---|---|---|---|")
  for part, v in sorted(rows.items(), key=lambda kv: -sum(kv[1].values())):
    t = sum(v.values())
    print(f"| {part} | {v['fwd']:.1f} | {v['bwd']:.1f} | {v['-']:.1f} | {t:.1f} "
          f"| {100 * t / total:.1f} % |")
  for op, ms in r["top_ops"]:
    print(f"  {ms:8.2f} ms  {op}")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              parents=[host.malloc_flag()])
  p.add_argument("--only", nargs="*", default=["linear_nano_96x128", "linear_nano_512"])
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--ops", type=int, default=0, help="also list the K slowest instructions")
  p.add_argument("--json", help="also write the records to this file")
  args = p.parse_args()
  print(f"malloc policy (jaxseg/host.py): {host.describe(args.malloc)}")
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
  records = [profile(name, args.steps, args.ops) for name in args.only]
  for r in records:
    print_table(r)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(records, f, indent=1)


if __name__ == "__main__":
  main()
