"""Benchmark: images/s, step time and MFU of every method's train step on one device.

    python bench/mfu.py [--device cpu|gpu|tpu] [--scale paper|cpu] [--only ROW ...]
        [--batch N] [--steps N] [--json out.json] [--peak-tflops X]

Rows (each the trainer's own jitted, donated update of its config, on a random
batch): psl, rss_pixel, rss_image (PSR 1/16 … 1 + PSD), ciss (T unrolled as the
config says), acis_critic, acis_actor and acis_bl_trunc (ACIS's final-stage
steps at the config's longest episode L). `--scale paper` builds them from the
papers' configs (rss_pascal.py, ciss_paper.py, acis_cvppp.py) at the batch per
device in `ROWS`; `--scale cpu` (the default on CPU) from the CPU configs the
README's results use (psl_camvid.py, rss_camvid.py, ciss_camvid.py,
acis_cvppp.py:cpu) at their own batch; `--scale runlocal` from the papers'
configs' `runlocal` option (tiny models: a smoke run).

MFU = model FLOPs per step / step time / the device's peak. Model FLOPs are
XLA's cost analysis of the step lowered with every rollout unrolled (XLA counts
a `while` body once, whatever its trip count, so a scanned CiSS or ACIS episode
would be undercounted T-fold); `while` loops that remain (the on-device
Hungarian matching's) are counted once, a negligible share. The peak is the
dense matmul peak of the precision float32 matmuls run at by default: TF32 on
NVIDIA Ampere and later, bf16 on TPU, FP32 on CPU (`PEAKS`; the CPU's from its
cores × clock × FLOPs per cycle of its vector FMA units, stated in the output).
`matmul` is the rate of one large float32 matmul measured on the same device:
the practical ceiling the MFU can be read against.

One device: a pod step's per-chip MFU is this plus its collectives.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import os
import pathlib
import re
import sys
import time

from jaxseg import host

host.configure(host.argv_policy(sys.argv))

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import harness  # noqa: E402  (bench/)
import train_step  # noqa: E402  (bench/)
from jaxseg import config as config_lib  # noqa: E402
from jaxseg.trainers import acis  # noqa: E402
from jaxseg.trainers import step as step_lib  # noqa: E402

CONFIGS = train_step.CONFIGS

# device kind (substring, first match) -> (peak TFLOP/s of float32 matmuls at
# default precision, what that peak is). Dense, no sparsity; vendor data sheets.
PEAKS = (
    ("H200", 494.7, "TF32 tensor core"),
    ("H100 PCIe", 378.0, "TF32 tensor core"),
    ("H100", 494.7, "TF32 tensor core"),
    ("A100", 156.0, "TF32 tensor core"),
    ("L4", 60.0, "TF32 tensor core"),
    ("V100", 15.7, "FP32 CUDA cores"),
    ("TPU v6", 918.0, "bf16 MXU"),
    ("TPU v5 lite", 197.0, "bf16 MXU"),
    ("TPU v5", 459.0, "bf16 MXU"),  # v5p
    ("TPU v4", 275.0, "bf16 MXU"),
    ("TPU v3", 61.5, "bf16 MXU (one core)"),
    ("TPU v2", 22.5, "bf16 MXU (one core)"),
)


@dataclasses.dataclass(frozen=True)
class Row:
  config: str  # configs/FILE[:ARG]
  batch: int  # per device
  classes: int


# name -> (paper scale, cpu scale).
ROWS = {
    # RSS Tab. 1-3: batch 16 (the paper does not say over how many GPUs: one here).
    "psl": (Row("rss_pascal.py:psl", 16, 60), Row("psl_camvid.py", 0, 11)),
    "rss_pixel": (Row("rss_pascal.py:pixel", 16, 60), Row("rss_camvid.py:pixel", 0, 11)),
    "rss_image": (Row("rss_pascal.py:psr_multi_psd", 16, 60),
                  Row("rss_camvid.py:psr_multi_psd", 0, 11)),
    # CiSS-Net: 16 GPUs x 2 images, T = 8 (ADE20K, PSPNet-50, 480²).
    "ciss": (Row("ciss_paper.py:dataset=ade20k", 2, 150), Row("ciss_camvid.py", 0, 11)),
    # ACIS: one GPU, batch 8 (the authors' cvppp_train_ac.sh).
    "acis_critic": (Row("acis_cvppp.py", 8, 0), Row("acis_cvppp.py:cpu", 0, 0)),
    "acis_actor": (Row("acis_cvppp.py", 8, 0), Row("acis_cvppp.py:cpu", 0, 0)),
    "acis_bl_trunc": (Row("acis_cvppp.py:bl_trunc", 8, 0),
                      Row("acis_cvppp.py:bl_trunc,cpu", 0, 0)),
}


SCALES = ("paper", "cpu", "runlocal")


def row_for(name: str, scale: str) -> Row:
  """`scale`'s row: runlocal is the paper config's `runlocal` (tests, smoke runs)."""
  paper, cpu = ROWS[name]
  if scale == "runlocal":
    sep = "," if ":" in paper.config else ":"
    return Row(paper.config + sep + "runlocal", 0, paper.classes)
  return paper if scale == "paper" else cpu


def load_config(spec: str):
  return config_lib.load_config_spec(spec, CONFIGS)


def cpu_peak() -> tuple[float, str]:
  """(peak FLOP/s, how it was derived) of this CPU's float32 FMA units."""
  cores = len(os.sched_getaffinity(0))
  info = pathlib.Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else ""
  flags = set(re.search(r"^flags\s*:(.*)$", info, re.M).group(1).split()) \
      if "flags" in info else set()
  mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)]
  max_khz = pathlib.Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
  ghz = int(max_khz.read_text()) / 1e6 if max_khz.exists() else max(mhz, default=2000) / 1e3
  # two FMA pipes per core, each 16 (AVX-512), 8 (AVX2) or 4 (SSE) float32 lanes
  lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 4
  per_cycle = 2 * lanes * 2
  return (cores * ghz * 1e9 * per_cycle,
          f"{cores} cores × {ghz:.2f} GHz × {per_cycle} FP32 FLOP/cycle "
          f"({'AVX-512' if lanes == 16 else 'AVX2' if lanes == 8 else 'SSE'}, 2 FMA pipes)")


def device_peak(device, override_tflops: float | None = None) -> tuple[float | None, str]:
  """(peak FLOP/s or None if unknown, what it is) of `device`."""
  if override_tflops:
    return override_tflops * 1e12, "--peak-tflops"
  if device.platform == "cpu":
    return cpu_peak()
  for key, tflops, basis in PEAKS:
    if key.lower() in device.device_kind.lower():
      return tflops * 1e12, f"{device.device_kind}: {basis}"
  return None, f"{device.device_kind}: not in PEAKS (pass --peak-tflops)"


def matmul_rate(device, n: int) -> float:
  """FLOP/s of an n×n float32 matmul on `device` (median of 5)."""
  x = jax.device_put(jnp.ones((n, n), jnp.float32), device)
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  times = []
  for _ in range(5):
    t0 = time.perf_counter()
    f(x).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2 * n ** 3 / float(np.median(times))


def model_flops(lowered) -> float:
  """FLOPs XLA's cost analysis counts in a lowered (not yet optimised) step."""
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def _unrolled(c):
  c = copy.deepcopy(c)
  for key in ("ciss", "acis"):
    c[key].rollout = "unroll"
  return c


def instance_batch(batch: int, size: int, count: int, seed: int = 0) -> dict:
  """`batch` images with `count` random rectangles as instance ids 1..count."""
  rng = np.random.default_rng(seed)
  inst = np.zeros((batch, size, size), np.int32)
  for b in range(batch):
    for k in range(1, count + 1):
      y, x = rng.integers(0, size - size // 4, 2)
      hh, ww = rng.integers(size // 16, size // 4, 2)
      inst[b, y:y + hh, x:x + ww] = k
  image = rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
  return {"image": jnp.asarray(image), "instances": jnp.asarray(inst)}


def acis_row(c, kind: str, batch: int):
  """(update, state, batch) of ACIS's final-stage `kind` step (critic, actor or
  bl_trunc) at the longest episode length of `acis.seq_lengths`."""
  a = c.acis
  nets = acis.build_nets(c)
  params = jax.jit(functools.partial(acis.init_params, nets, c))(jax.random.key(0))
  trains = acis.stage_trains(c, "final")
  frozen = {k: v for k, v in params.items() if k not in trains}
  grads = acis.grads_fn(nets, c, kind, frozen=frozen, length=max(a.seq_lengths))
  tx = acis.optimizer(c, trains, kind="final")
  update = jax.jit(step_lib.make_update(grads, tx), donate_argnums=0)
  state = step_lib.init_state({k: params[k] for k in trains}, tx=tx, rng=jax.random.key(1))
  data = instance_batch(batch, a.image_size, min(a.max_instances, 12))
  return update, state, data


def build(name: str, c, row: Row, batch: int):
  if name.startswith("acis_"):
    return acis_row(c, name[len("acis_"):], batch)
  return train_step.config_update(c, row.classes, trainer=c.trainer, batch=batch)


def measure(name: str, scale: str, device, *, batch: int | None, steps: int,
            peak: float | None) -> dict:
  row = row_for(name, scale)
  c = load_config(row.config)
  b = batch or row.batch or c.batch_size
  with jax.default_device(device):
    unrolled = all(step_lib.rollout_unrolled(c[k].rollout) for k in ("ciss", "acis"))
    if not unrolled:  # a second build, with every rollout unrolled, only to count
      counted = build(name, _unrolled(c), row, b)
      flops = model_flops(counted[0].lower(*counted[1:]))
      del counted
    update, state, data = build(name, c, row, b)
    if unrolled:
      flops = model_flops(update.lower(state, data))
    step_ms, compile_s = train_step.time_update(update, state, data, steps)
  shape = (f"{c.acis.image_size}²" if name.startswith("acis") else
           "×".join(map(str, c.data.crop_size)))
  return {"name": name, "config": row.config, "scale": scale, "batch": b, "shape": shape,
          "step_ms": step_ms, "images_per_s": b / step_ms * 1e3, "compile_s": compile_s,
          "gflops_per_step": flops / 1e9, "tflops_per_s": flops / step_ms / 1e9,
          "mfu": None if peak is None else flops / (step_ms / 1e3) / peak}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              parents=[host.malloc_flag()])
  p.add_argument("--device", default="cpu", help="cpu | gpu | tpu")
  p.add_argument("--scale", choices=SCALES,
                 help="default: cpu on a CPU, paper elsewhere; runlocal: tiny models")
  p.add_argument("--only", nargs="*", choices=sorted(ROWS), help="rows to run")
  p.add_argument("--batch", type=int, help="batch per device for every row")
  p.add_argument("--steps", type=int, default=5, help="timed steps after a warm-up step")
  p.add_argument("--peak-tflops", type=float, help="the device's peak, if not in PEAKS")
  p.add_argument("--json", help="also write the table and device to this file")
  args = p.parse_args()
  try:
    device = jax.devices(args.device)[0]
  except RuntimeError as e:
    sys.exit(f"--device {args.device}: no such JAX backend here ({e}).")
  scale = args.scale or ("cpu" if device.platform == "cpu" else "paper")
  peak, basis = device_peak(device, args.peak_tflops)
  rate = matmul_rate(device, 2048 if device.platform == "cpu" else 8192)
  print(f"jax {jax.__version__} on {device.platform} ({device.device_kind}); "
        f"scale {scale}; malloc policy (jaxseg/host.py): {host.describe(args.malloc)}")
  print(f"peak {'unknown' if peak is None else f'{peak / 1e12:.3f} TFLOP/s'}: {basis}; "
        f"measured float32 matmul {rate / 1e12:.3f} TFLOP/s", flush=True)
  header = (f"| {'row':<13} | {'config':<38} | {'B':>3} | {'shape':>8} | {'step ms':>9} "
            f"| {'img/s':>8} | {'GFLOP/step':>10} | {'TFLOP/s':>8} | {'MFU':>6} "
            f"| {'of matmul':>9} |")
  harness.print_header(header)
  records = []
  for name in args.only or list(ROWS):
    r = measure(name, scale, device, batch=args.batch, steps=args.steps, peak=peak)
    r["of_matmul"] = r["tflops_per_s"] * 1e12 / rate
    mfu = "" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    print(f"| {name:<13} | {r['config']:<38} | {r['batch']:>3} | {r['shape']:>8} "
          f"| {r['step_ms']:9.1f} | {r['images_per_s']:8.2f} | {r['gflops_per_step']:10.4g} "
          f"| {r['tflops_per_s']:8.3f} | {mfu:>6} | {100 * r['of_matmul']:8.1f}% |",
          flush=True)
    records.append(r)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(
        {"jax": jax.__version__, "device": device.device_kind, "platform": device.platform,
         "peak_flops": peak, "peak_basis": basis, "matmul_flops": rate, "rows": records},
        indent=1))


if __name__ == "__main__":
  main()
