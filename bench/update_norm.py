"""Benchmark: what the one update's bookkeeping costs beside the optimizer itself.

    python bench/update_norm.py [--rounds 15] [--malloc default|keep|hugepages]

On the params of ConvNeXt-V2-nano + 1×1 head (15.0 M, the `linear_nano_*` rows
of bench/train_step.py; the optimizer's cost does not depend on the image size)
with the trainer's optimizer (clip + AdamW, `optim.make_optimizer`), a stand-in
gradient (params × 1e-3) and no model, five updates side by side, interleaved
(bench/train_step.interleaved_ms), jitted and donated:

  bare            tx.update + apply_updates: the floor
  + ||updates||   the bare step and the norm of optax's updates
  + ||θ' − θ||    the bare step and the norm of the change of the params as applied
  + both norms    the latter and ||θ||: what `train/update_ratio` needs
  make_update     the trainer's update (trainers/step.py: grad norm, update
                  ratio, the non-finite guard as a `lax.cond`)

On XLA:CPU the norm of `updates` makes them a materialised buffer (and θ a
copy) between the optimizer's fusions; ||θ' − θ|| reads the new and old θ
instead (README "Speed on CPU").
"""
from __future__ import annotations

import argparse
import sys

from jaxseg import host

host.configure(host.argv_policy(sys.argv))

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import train_step  # noqa: E402  (bench/)

from jaxseg import models, optim  # noqa: E402
from jaxseg.trainers import step as step_lib  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              parents=[host.malloc_flag()])
  p.add_argument("--rounds", type=int, default=15)
  args = p.parse_args()
  c, h, w, _ = train_step.jax_config("linear_nano_96x128")
  model = models.build_model(c.model, 19)
  params = jax.jit(lambda r: model.init({"params": r}, jnp.zeros((1, h, w, 3)),
                                        train=False)["params"])(jax.random.key(0))
  tx, schedule = optim.make_optimizer(c.optim, params, total_steps=10_000,
                                      classifier_pattern=models.CLASSIFIER_PATTERN)
  grads_of = lambda p: jax.tree.map(lambda x: x * 1e-3, p)  # noqa: E731

  def bare(norms: tuple[str, ...]):
    def update(state, batch):
      del batch
      u, opt_state = tx.update(grads_of(state["params"]), state["opt_state"], state["params"])
      new = optax.apply_updates(state["params"], u)
      m = {}
      if "updates" in norms:
        m["updates"] = optax.tree.norm(u)
      if "delta" in norms:
        m["delta"] = optax.tree.norm(jax.tree.map(jnp.subtract, new, state["params"]))
      if "params" in norms:
        m["params"] = optax.tree.norm(state["params"])
      return {**state, "params": new, "opt_state": opt_state}, m, True
    return update

  def grads_fn(p, batch, rng, step):
    del batch, rng, step
    return jnp.float32(1.0), grads_of(p), {}

  rows = {"bare": bare(()), "+ ||updates||": bare(("updates",)),
          "+ ||θ' − θ||": bare(("delta",)), "+ both norms": bare(("delta", "params")),
          "make_update": step_lib.make_update(grads_fn, tx, schedule)}
  steps = []
  for update in rows.values():
    state = step_lib.init_state(jax.tree.map(jnp.copy, params), tx=tx, rng=jax.random.key(1))
    step, _ = train_step.jax_stepper(jax.jit(update, donate_argnums=0), state, {})
    steps.append(step)
  ms = train_step.interleaved_ms(steps, args.rounds)
  print(f"malloc policy (jaxseg/host.py): {host.describe(args.malloc)}; jax {jax.__version__}, "
        f"{sum(x.size for x in jax.tree.leaves(params)) / 1e6:.1f} M params, "
        f"{args.rounds} interleaved rounds, medians")
  print("| update | ms | over bare |\n|---|---|---|")
  for name, t in zip(rows, ms):
    print(f"| {name} | {t:.1f} | {t - ms[0]:+.1f} |")


if __name__ == "__main__":
  main()
