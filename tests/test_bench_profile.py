"""bench/profile_step.py's attribution of compiled instructions to model parts."""
import os
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
_flags = os.environ.get("XLA_FLAGS")
import profile_step  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

# The script adds its trace flag for its own process; later tests' subprocesses
# get the suite's flags back.
if _flags is None:
  os.environ.pop("XLA_FLAGS", None)
else:
  os.environ["XLA_FLAGS"] = _flags


class _Block(nn.Module):
  @nn.compact
  def __call__(self, x):
    y = nn.Dense(32, name="pwconv1")(nn.LayerNorm(name="norm")(x))
    return x + nn.Dense(8, name="pwconv2")(jax.nn.relu(y))


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    return _Block(name="stage0_block0")(x)


def test_instructions_map_to_module_and_pass():
  net = _Net()
  x = jnp.ones((4, 16, 8))
  params = net.init(jax.random.key(0), x)

  def step(p):
    g = jax.grad(lambda p: jnp.sum(net.apply(p, x) ** 2))(p)
    return jax.tree.map(lambda a, b: a - 0.1 * b, p, g)

  parts = profile_step.instruction_parts(jax.jit(step).lower(params).compile().as_text())
  found = set(parts.values())
  assert ("pwconv1 (expand)", "fwd") in found
  assert ("pwconv1 (expand)", "bwd") in found or ("pwconv2 (project)", "bwd") in found
  assert ("optimizer + step", "-") in found  # the SGD update outside jvp / transpose
  assert profile_step.part_of("jit(u)/jvp(Net)/stage1_block2/dwconv/mul") == (
      "depthwise 7x7", "fwd")
  assert profile_step.part_of("jit(u)/transpose(jvp(Net))/stage0_block0/norm/sub") == (
      "block LayerNorm", "bwd")


def test_tuple_shaped_instructions_are_attributed():
  # A variadic reduce (the depthwise kernel gradient's) has a tuple shape whose
  # text holds `/*index=5*/` comments; its instruction is still found and named.
  def dk(x, g):
    ops = tuple(x[:, i:i + 64] * g for i in range(7))
    return jax.lax.reduce(ops, (jnp.float32(0),) * 7,
                          lambda a, b: tuple(u + v for u, v in zip(a, b)), (0,))

  text = jax.jit(dk).lower(jnp.ones((32, 70)), jnp.ones((32, 64))).compile().as_text()
  tuple_lines = [l for l in text.splitlines()
                 if " = (" in l and "/*index=" in l.split(" = ", 1)[1].split(") ")[0]]
  assert tuple_lines, "expected an instruction with a tuple-shaped result"
  parts = profile_step.instruction_parts(text)
  for line in tuple_lines:
    assert line.split(" = ")[0].replace("ROOT", "").strip().lstrip("%") in parts
