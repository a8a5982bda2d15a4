"""The one ablation harness bench/*_ablation.py share.

An ablation is a table of rows (a config argument plus flattened overrides);
`run_rows` runs each (row, seed) into OUT/ROW_seedSEED, or loads it from its
`run.json` when it finished before, and rewrites the summary after every run
so partial results survive; `parser` gives every script the same flags
(--out, --root, --rows, --steps, --seeds, --first-seed, --evals,
--summary-only). Seeds can train in parallel processes, each with its own
--first-seed K --seeds K+1 and --out; moving their OUT/ROW_seedK folders into
one --out and running --summary-only there tabulates them together.
The scripts import jaxseg as installed (`pip install -e .`).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
from typing import Callable

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def parser(doc: str, *, out: str, data: str, rows, steps: int) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=doc,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", type=pathlib.Path, default=pathlib.Path(out))
  p.add_argument("--root", "--data", dest="root", type=pathlib.Path, default=SHARED / data,
                 help="the dataset folder")
  p.add_argument("--rows", default=",".join(rows))
  p.add_argument("--steps", type=int, default=steps, help="steps per row (0: the config's)")
  p.add_argument("--seeds", type=int, default=1)
  p.add_argument("--first-seed", type=int, default=0,
                 help="run seeds FIRST_SEED .. SEEDS-1 only (seeds in parallel processes)")
  p.add_argument("--evals", type=int, default=4, help="evaluations per run")
  p.add_argument("--summary-only", action="store_true",
                 help="tabulate the finished runs under --out; train nothing")
  return p


def parse_rows(p: argparse.ArgumentParser, args, table) -> list[str]:
  rows = [r for r in args.rows.split(",") if r]
  for r in rows:
    if r not in table:
      p.error(f"unknown row {r!r}; choose from {sorted(table)}")
  return rows


def run_dir(out: pathlib.Path, row: str, seed: int) -> pathlib.Path:
  return pathlib.Path(out) / f"{row}_seed{seed}"


def run_rows(rows, run_row: Callable[[str, int, pathlib.Path], dict],
             summarize: Callable[[dict], str], *, out: pathlib.Path, summary_only: bool,
             seeds: Callable[[str], int] = lambda row: 1,
             first_seed: int = 0) -> tuple[dict, str]:
  """Every (row, first_seed <= seed < seeds(row)), seed-major:
  `run_row(row, seed, workdir)` -> a JSON record, cached in workdir/run.json.
  Returns (records by row, the last summary)."""
  results, table = {}, ""
  for seed in range(first_seed, max(map(seeds, rows), default=0)):
    for r in rows:
      if seed >= seeds(r):
        continue
      workdir = run_dir(out, r, seed)
      done = workdir / "run.json"
      if done.exists():
        record = json.loads(done.read_text())
      elif summary_only:
        continue
      else:
        record = run_row(r, seed, workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(record, indent=1))
      results.setdefault(r, []).append(record)
      table = summarize(results)
  return results, table


def mean_std(xs, fmt: str = ".3f") -> str:
  """'m' or 'm ± s' over seeds."""
  return f"{statistics.mean(xs):{fmt}}" + (f" ± {statistics.stdev(xs):{fmt}}"
                                           if len(xs) > 1 else "")


def line_plot(path: pathlib.Path, series: dict, *, xlabel: str, ylabel: str,
              title: str = "", xticks=None) -> None:
  """One line per `series[name] = (xs, ys)`."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for name, (xs, ys) in series.items():
    if len(xs):
      ax.plot(xs, ys, "o-", label=name)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if xticks is not None:
    ax.set_xticks(xticks)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def print_header(header: str) -> None:
  """Prints a markdown table's `| a | b |` header line and its `|---|---|` rule."""
  print(header)
  print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
