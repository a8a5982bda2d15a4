"""The README's library snippet runs as written (a renamed argument broke it once)."""
import pathlib
import re

import flax.linen as nn
import jax
import numpy as np

README = pathlib.Path(__file__).parents[1] / "README.md"


class _Tiny(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, x, *, train):
    del train
    return nn.Conv(self.num_classes, (3, 3))(x)


def test_methods_as_a_library_snippet_runs():
  text = README.read_text()
  section = text[text.index("## Methods as a library"):]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  c = 5
  model = _Tiny(c)
  rng = np.random.default_rng(0)
  x = rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
  y = rng.integers(0, c, (2, 32, 32)).astype(np.int32)
  params = model.init(jax.random.key(0), x.astype(np.float32), train=False)["params"]
  scope = {"flax_model": model, "C": c, "x": x, "y": y, "params": params,
           "rng": jax.random.key(1), "step": 0}
  exec(code, scope)  # pylint: disable=exec-used
  assert np.isfinite(float(scope["loss"]))
  assert jax.tree.structure(scope["grads"]) == jax.tree.structure(params)
