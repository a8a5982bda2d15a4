"""Stage outputs equal timm's `convnextv2_atto` with the same weights.

Skips where torch or timm is not installed (neither is a jaxseg dependency).
"""
import enum
import importlib.abc
import importlib.machinery
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import convnext_v2 as cnx

torch = pytest.importorskip("torch")


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Empty `torchvision` package for timm's module-level imports.

  timm imports torchvision at module level for data transforms only; a
  torchvision wheel built for another torch fails to load with a RuntimeError.
  ConvNeXt-V2 needs none of it.
  """

  def find_spec(self, fullname, path, target=None):
    if fullname.split(".")[0] != "torchvision":
      return None
    if "feature_extraction" in fullname:  # timm guards this one itself.
      return None
    return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

  def create_module(self, spec):
    module = _StubModule(spec.name)
    module.__path__ = []
    return module

  def exec_module(self, module):
    pass


class _StubModule(types.ModuleType):

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    if name == "InterpolationMode":
      return enum.Enum(name, "NEAREST NEAREST_EXACT BILINEAR BICUBIC BOX "
                       "HAMMING LANCZOS")
    return type(name, (torch.nn.Module,), {})


def _import_timm():
  try:
    import timm  # pylint: disable=g-import-not-at-top
    return timm
  except ImportError:
    pytest.skip("timm not installed")
  except RuntimeError:  # an unusable torchvision
    for name in [n for n in sys.modules if n.split(".")[0] in ("torchvision",
                                                                "timm")]:
      del sys.modules[name]
    sys.meta_path.insert(0, _TorchvisionStub())
    try:
      import timm  # pylint: disable=g-import-not-at-top
      return timm
    finally:
      sys.meta_path = [f for f in sys.meta_path
                       if not isinstance(f, _TorchvisionStub)]


def _conv(w):
  """torch (O, I, kh, kw) -> flax (kh, kw, I, O)."""
  return np.transpose(w, (2, 3, 1, 0))


def _dense(w):
  """torch 1x1 conv (O, I, 1, 1) or Linear (O, I) -> flax Dense (I, O)."""
  return w.reshape(w.shape[0], w.shape[1]).T


def _timm_to_flax(state, depths):
  p = {k: v.detach().numpy() for k, v in state.items()}
  params = {
      "stem_conv": {"kernel": _conv(p["stem.0.weight"]),
                    "bias": p["stem.0.bias"]},
      "stem_norm": {"scale": p["stem.1.weight"], "bias": p["stem.1.bias"]},
  }
  for s, depth in enumerate(depths):
    if s > 0:
      d = f"stages.{s}.downsample"
      params[f"downsample{s}_norm"] = {"scale": p[f"{d}.0.weight"],
                                       "bias": p[f"{d}.0.bias"]}
      params[f"downsample{s}_conv"] = {"kernel": _conv(p[f"{d}.1.weight"]),
                                       "bias": p[f"{d}.1.bias"]}
    for b in range(depth):
      t = f"stages.{s}.blocks.{b}"
      params[f"stage{s}_block{b}"] = {
          "dwconv": {"kernel": _conv(p[f"{t}.conv_dw.weight"]),
                     "bias": p[f"{t}.conv_dw.bias"]},
          "norm": {"scale": p[f"{t}.norm.weight"], "bias": p[f"{t}.norm.bias"]},
          "pwconv1": {"kernel": _dense(p[f"{t}.mlp.fc1.weight"]),
                      "bias": p[f"{t}.mlp.fc1.bias"]},
          "grn": {"gamma": p[f"{t}.mlp.grn.weight"].reshape(-1),
                  "beta": p[f"{t}.mlp.grn.bias"].reshape(-1)},
          "pwconv2": {"kernel": _dense(p[f"{t}.mlp.fc2.weight"]),
                      "bias": p[f"{t}.mlp.fc2.bias"]},
      }
  return params


@pytest.mark.parametrize("impl", ["shift", "lax"])
def test_stage_outputs_match_timm_convnextv2_atto(impl):
  timm = _import_timm()
  torch.manual_seed(0)
  reference = timm.create_model("convnextv2_atto", pretrained=False).eval()
  with torch.no_grad():  # GRN and norms start trivial: randomise everything.
    for param in reference.parameters():
      param.add_(0.05 * torch.randn_like(param))
  depths, _ = cnx.CONVNEXT_V2_VARIANTS["atto"]
  params = _timm_to_flax(reference.state_dict(), depths)

  model = cnx.build_convnext_v2("atto", depthwise_impl=impl)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))["params"]
  assert (jax.tree_util.tree_structure(shapes)
          == jax.tree_util.tree_structure(params))
  for a, b in zip(jax.tree_util.tree_leaves(shapes),
                  jax.tree_util.tree_leaves(params)):
    assert a.shape == b.shape

  images = np.random.default_rng(0).normal(size=(2, 64, 64, 3))
  images = images.astype(np.float32)
  with torch.no_grad():
    x = reference.stem(torch.from_numpy(images).permute(0, 3, 1, 2))
    expected = []
    for stage in reference.stages:
      x = stage(x)
      expected.append(x.permute(0, 2, 3, 1).numpy())
  got = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))(
      params, images)
  for g, e in zip(got, expected):
    np.testing.assert_allclose(g, e, rtol=2e-4, atol=2e-4 * np.abs(e).max())
