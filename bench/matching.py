"""Benchmark: the jittable max-weight matching against scipy, side by side.

    python bench/matching.py [--json out.json] [--repeats N] [--only NAME ...]

Rows (uniform [0, 1) scores, like soft Dice; a fresh matrix per repeat, the
same matrices for both):
  21x21          one `max_matching` (ACIS CVPPP: 21 predictions × ≤21 leaves)
  64x64          one `max_matching`
  8x21x21_vmap   `vmap` over a batch of 8; time per matrix
  phi_21x21      `matching_potentials` (21 prefixes in one solve) against 21
                 scipy solves of the prefixes, what the ACIS reward needs

    python bench/matching.py --steps [--scales cpu paper] [--repeats N]

`--steps` times whole ACIS train steps (their gradients, jitted) with the
matching on device (`acis.matching=device`) and with scipy through
`jax.pure_callback` (`host`), side by side on the same batch (15 rectangles
per image): BL-Trunc and the AC critic step match, the AC actor step does
not (its row is the reference). Scales: `configs/acis_cvppp.py:ac,cpu` and
`:ac` (the paper's 224², batch 8, full widths), L = 5.

JAX times are the median over repeats of a jitted call (compiled and warmed up
first) with `block_until_ready`; scipy's are `linear_sum_assignment(...,
maximize=True)` on host numpy arrays. Ratio = jax / scipy (> 1: scipy faster).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import harness  # bench/
from scipy.optimize import linear_sum_assignment

from jaxseg import rewards

ROWS = {  # name: (batch, rows, cols, kind)
    "21x21": (1, 21, 21, "match"),
    "64x64": (1, 64, 64, "match"),
    "8x21x21_vmap": (8, 21, 21, "match"),
    "phi_21x21": (1, 21, 21, "potentials"),
}


def scipy_match(s: np.ndarray) -> float:
  r, c = linear_sum_assignment(s, maximize=True)
  return float(s[r, c].sum())


def scipy_potentials(s: np.ndarray) -> np.ndarray:
  return np.array([0.0] + [scipy_match(s[:t]) for t in range(1, len(s) + 1)])


def make_jax_fn(batch: int, kind: str):
  single = (rewards.matching_potentials if kind == "potentials"
            else lambda s: rewards.max_matching(s)[1])
  return jax.jit(jax.vmap(single) if batch > 1 else single)


def time_row(name: str, repeats: int, seed: int = 0) -> dict:
  batch, r, c, kind = ROWS[name]
  rng = np.random.default_rng(seed)
  shape = (batch, r, c) if batch > 1 else (r, c)
  mats = [rng.random(shape).astype(np.float32) for _ in range(repeats)]
  fn = make_jax_fn(batch, kind)
  t0 = time.perf_counter()
  compiled = fn.lower(jnp.asarray(mats[0])).compile()
  compile_s = time.perf_counter() - t0
  device_mats = [jnp.asarray(m) for m in mats]
  jax.block_until_ready(device_mats)
  for m in device_mats[:3]:  # warm-up
    jax.block_until_ready(compiled(m))
  jax_times, outs = [], []
  for m in device_mats:
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(m))
    jax_times.append(time.perf_counter() - t0)
    outs.append(np.asarray(out))
  ref = scipy_potentials if kind == "potentials" else scipy_match
  scipy_times, refs = [], []
  for m in mats:
    items = m if batch > 1 else m[None]
    t0 = time.perf_counter()
    want = [ref(x) for x in items]
    scipy_times.append(time.perf_counter() - t0)
    refs.append(np.asarray(want if batch > 1 else want[0]))
  max_err = max(float(np.max(np.abs(o - w))) for o, w in zip(outs, refs))
  jax_us = 1e6 * statistics.median(jax_times) / batch
  scipy_us = 1e6 * statistics.median(scipy_times) / batch
  return {"name": name, "batch": batch, "rows": r, "cols": c, "kind": kind,
          "jax_us_per_matrix": jax_us, "scipy_us_per_matrix": scipy_us,
          "ratio_jax_over_scipy": jax_us / scipy_us, "compile_s": compile_s,
          "max_abs_err": max_err, "repeats": repeats}


def time_steps(scale: str, repeats: int, length: int = 5) -> list[dict]:
  """Median ms of each ACIS step's gradient with device and host matching."""
  import acis_ablation  # pylint: disable=g-import-not-at-top
  from jaxseg import config as config_lib  # pylint: disable=g-import-not-at-top
  from jaxseg.trainers import acis  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(__file__).resolve().parents[1]
  c = config_lib.load_config_file(root / "configs/acis_cvppp.py",
                                  "ac,cpu" if scale == "cpu" else "ac")
  nets, params, batch, frozen = acis_ablation.step_inputs(c)
  s, b = c.acis.image_size, c.batch_size
  records = []
  for kind in ("bl_trunc", "critic", "actor"):
    ms = {}
    for matching in ("device", "host"):
      c.acis.matching = matching
      fn = acis.grads_fn(nets, c, kind, frozen=frozen, length=length)
      step = jax.jit(lambda p, bt, r, fn=fn: fn(p, bt, r, 0)[1])
      jax.block_until_ready(step(params, batch, jax.random.key(1)))
      times = []
      for i in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(step(params, batch, jax.random.key(i)))
        times.append(time.perf_counter() - t0)
      ms[matching] = 1e3 * statistics.median(times)
    records.append({"scale": scale, "step": kind, "image_size": s, "batch": b,
                    "length": length, "device_ms": ms["device"], "host_ms": ms["host"],
                    "ratio_device_over_host": ms["device"] / ms["host"],
                    "repeats": repeats})
    r = records[-1]
    print(f"| {scale:<5} | {kind:<8} | {s}² × {b} | {r['device_ms']:9.1f} | "
          f"{r['host_ms']:9.1f} | {r['ratio_device_over_host']:6.2f}× |", flush=True)
  return records


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--json", help="also write the records to this file")
  p.add_argument("--repeats", type=int, default=50)
  p.add_argument("--only", nargs="*", choices=list(ROWS), help="row names to run")
  p.add_argument("--steps", action="store_true", help="time whole ACIS train steps")
  p.add_argument("--scales", nargs="*", default=["cpu", "paper"], choices=["cpu", "paper"])
  args = p.parse_args()
  records = []
  if args.steps:
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; ms per step (median of "
          f"{args.repeats})\n\n| scale | step | input | device ms | host ms | ratio |\n"
          "|---|---|---|---|---|---|", flush=True)
    for scale in args.scales:
      records += time_steps(scale, args.repeats)
    if args.json:
      pathlib.Path(args.json).write_text(json.dumps(records, indent=1))
    return
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} "
        f"({jax.device_count()} device(s)); scipy on the host", flush=True)
  header = (f"| {'name':<13} | {'B':>2} | {'R×C':>6} | {'jax µs/matrix':>13} "
            f"| {'scipy µs/matrix':>15} | {'jax/scipy':>9} | {'compile s':>9} "
            f"| {'max err':>9} |")
  harness.print_header(header)
  for name in args.only or list(ROWS):
    r = time_row(name, args.repeats)
    print(f"| {r['name']:<13} | {r['batch']:>2} | {r['rows']:>2}×{r['cols']:<3} "
          f"| {r['jax_us_per_matrix']:13.1f} | {r['scipy_us_per_matrix']:15.1f} "
          f"| {r['ratio_jax_over_scipy']:8.1f}× | {r['compile_s']:9.2f} "
          f"| {r['max_abs_err']:9.1e} |", flush=True)
    records.append(r)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
  main()
