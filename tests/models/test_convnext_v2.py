"""ConvNeXt-V2 backbone: shapes, parameter counts, GRN, drop path, depthwise."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import convnext_v2 as cnx
from jaxseg.models import param_count

# Official / timm parameter counts (timm 1.0 `convnextv2_*`, pretrained=False):
# total, and total minus the classifier head (final LayerNorm 2*d + Linear
# d*1000 + 1000), which is what this backbone holds.
TIMM_TOTAL = {"atto": 3_708_400, "nano": 15_623_800}
TIMM_BACKBONE = {
    "atto": 3_708_400 - (2 * 320 + 320 * 1000 + 1000),  # 3,386,760
    "nano": 15_623_800 - (2 * 640 + 640 * 1000 + 1000),  # 14,981,520
}


def _init_shapes(model, shape=(1, 64, 64, 3)):
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


@pytest.mark.parametrize("variant", sorted(cnx.CONVNEXT_V2_VARIANTS))
def test_stage_shapes_and_strides(variant):
  _, dims = cnx.CONVNEXT_V2_VARIANTS[variant]
  model = cnx.build_convnext_v2(variant)
  x = jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32)
  variables = _init_shapes(model, x.shape)
  outs = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, x)
  assert len(outs) == 4
  for out, stride, dim in zip(outs, (4, 8, 16, 32), dims):
    assert out.shape == (2, 64 // stride, 96 // stride, dim)
    assert out.dtype == jnp.float32
  assert set(variables) == {"params"}


@pytest.mark.parametrize("variant", ["atto", "nano"])
def test_param_count_matches_official(variant):
  params = _init_shapes(cnx.build_convnext_v2(variant))["params"]
  assert param_count(params) == TIMM_BACKBONE[variant]
  depths, dims = cnx.CONVNEXT_V2_VARIANTS[variant]
  head = 2 * dims[-1] + dims[-1] * 1000 + 1000
  assert param_count(params) + head == TIMM_TOTAL[variant]


def test_block_param_shapes():
  params = _init_shapes(cnx.build_convnext_v2("atto"))["params"]
  block = params["stage1_block0"]
  assert block["dwconv"]["kernel"].shape == (7, 7, 1, 80)
  assert block["dwconv"]["bias"].shape == (80,)
  assert block["pwconv1"]["kernel"].shape == (80, 320)
  assert block["grn"]["gamma"].shape == (320,)
  assert block["grn"]["beta"].shape == (320,)
  assert block["pwconv2"]["kernel"].shape == (320, 80)
  assert "layer_scale" not in str(jax.tree_util.tree_structure(params))
  assert params["downsample1_conv"]["kernel"].shape == (2, 2, 40, 80)
  assert params["stem_conv"]["kernel"].shape == (4, 4, 3, 40)


def _grn_numpy(x, gamma, beta, eps=1e-6):
  gx = np.sqrt(np.sum(x.astype(np.float64) ** 2, axis=(1, 2), keepdims=True))
  nx = gx / (gx.mean(axis=-1, keepdims=True) + eps)
  return gamma * (x * nx) + beta + x


def test_grn_matches_numpy_reference():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 6, 8)).astype(np.float32)
  gamma = rng.normal(size=(8,)).astype(np.float32)
  beta = rng.normal(size=(8,)).astype(np.float32)
  out = cnx.GRN().apply({"params": {"gamma": gamma, "beta": beta}}, x)
  np.testing.assert_allclose(out, _grn_numpy(x, gamma, beta), rtol=1e-5,
                             atol=1e-5)


def test_grn_is_identity_at_init():
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 8))
  variables = cnx.GRN().init(jax.random.key(1), x)
  np.testing.assert_allclose(cnx.GRN().apply(variables, x), x, rtol=1e-6)


@pytest.fixture(scope="module")
def atto_and_params():
  model = cnx.build_convnext_v2("atto", drop_path_rate=0.5,
                                depthwise_impl="lax")
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  params = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(
      x)["params"]
  # GRN starts as the identity; perturb it so the check covers it.
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: v + 0.1 if "grn" in jax.tree_util.keystr(p) else v, params)
  return model, params, x


def test_drop_path_identity_in_eval_and_random_in_train(atto_and_params):
  model, params, x = atto_and_params
  apply = jax.jit(lambda p, x, rng, train: model.apply(
      {"params": p}, x, train=train, rngs={"dropout": rng}),
                  static_argnames="train")
  eval_a = apply(params, x, jax.random.key(2), train=False)
  eval_b = apply(params, x, jax.random.key(3), train=False)
  for a, b in zip(eval_a, eval_b):
    np.testing.assert_array_equal(a, b)
  train_a = apply(params, x, jax.random.key(2), train=True)
  train_b = apply(params, x, jax.random.key(3), train=True)
  assert not np.allclose(train_a[-1], eval_a[-1])
  assert not np.allclose(train_a[-1], train_b[-1])


def test_drop_path_is_per_sample():
  x = jnp.ones((64, 2, 2, 3))
  out = cnx.DropPath(0.5).apply({}, x, deterministic=False,
                                rngs={"dropout": jax.random.key(0)})
  per_sample = np.unique(np.asarray(out).reshape(64, -1), axis=1)
  assert per_sample.shape == (64, 1)  # one value per sample
  assert set(np.unique(per_sample)) == {0.0, 2.0}


@pytest.mark.parametrize("shape", [(2, 9, 11, 6), (1, 4, 4, 16)])
def test_depthwise_shift_equals_grouped_conv(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  conv = nn.Conv(shape[-1], (7, 7), padding="SAME",
                 feature_group_count=shape[-1])
  variables = conv.init(jax.random.key(1), x)
  expected = conv.apply(variables, x)
  for impl in ("shift", "lax", "auto"):
    got = cnx.DepthwiseConv(7, impl=impl).apply(variables, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  # Gradients of the hand-written VJP against autodiff of the grouped conv.
  kernel = variables["params"]["kernel"]
  cot = jax.random.normal(jax.random.key(2), shape)
  loss = lambda f: lambda x, k: jnp.sum(f(x, k) * cot)
  g_shift = jax.grad(loss(cnx.depthwise_conv_shift), (0, 1))(x, kernel)
  g_lax = jax.grad(loss(cnx.depthwise_conv_lax), (0, 1))(x, kernel)
  for a, b in zip(g_shift, g_lax):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_bfloat16_compute_keeps_float32_params():
  model = cnx.build_convnext_v2("atto", dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  variables = _init_shapes(model, x.shape)
  assert all(v.dtype == jnp.float32
             for v in jax.tree_util.tree_leaves(variables))
  outs = jax.eval_shape(lambda v, x: model.apply(v, x, train=False),
                        variables, x)
  assert all(o.dtype == jnp.bfloat16 for o in outs)


def test_unknown_variant_raises():
  with pytest.raises(ValueError, match="atto"):
    cnx.build_convnext_v2("huge")


def test_depthwise_kernel_grad_matches_float64_loops():
  # The kernel gradient's variadic reduce against a float64 numpy loop over the
  # 49 taps, at a size where float32 summation order shows (one reduce over
  # all of B, H, W had ~20x the error of a per-row sum).
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 40, 48, 24)).astype(np.float32)
  g = rng.standard_normal(x.shape).astype(np.float32)
  xp = np.pad(x.astype(np.float64), ((0, 0), (3, 3), (3, 3), (0, 0)))
  h, w = x.shape[1:3]
  want = np.zeros((7, 7, 1, x.shape[-1]))
  for i in range(7):
    for j in range(7):
      want[i, j, 0] = (xp[:, i:i + h, j:j + w] * g).sum(axis=(0, 1, 2))
  got = jax.jit(lambda x, g: cnx._shifted_kernel_grad(x, g, (7, 7, 1)))(x, g)
  assert got.shape == want.shape and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_gelu_is_pytorch_exact_form():
  x = np.linspace(-9.0, 9.0, 2001).astype(np.float32)
  want = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.astype(np.float64)])
  np.testing.assert_allclose(cnx.gelu(jnp.asarray(x)), want, rtol=0, atol=2e-6)
  np.testing.assert_allclose(cnx.gelu(jnp.asarray(x)), jax.nn.gelu(x, approximate=False),
                             rtol=0, atol=2e-6)


@pytest.mark.parametrize("patch,shape", [(4, (2, 18, 23, 3)), (2, (1, 8, 6, 5))])
def test_patch_conv_is_nn_conv(patch, shape):
  x = jax.random.normal(jax.random.key(0), shape)
  conv = nn.Conv(7, (patch, patch), strides=(patch, patch), padding="VALID",
                 kernel_init=cnx.kernel_init)
  ours = cnx.PatchConv(7, patch)
  variables = ours.init(jax.random.key(1), x)
  # Same parameter names, shapes and initial values: checkpoints and weight
  # imports do not change.
  jax.tree.map(np.testing.assert_array_equal, variables, conv.init(jax.random.key(1), x))
  variables = jax.tree.map(lambda v: v + jax.random.normal(jax.random.key(2), v.shape),
                           variables)
  want = conv.apply(variables, x)
  np.testing.assert_allclose(ours.apply(variables, x), want, rtol=1e-5, atol=1e-5)
  kernel = variables["params"]["kernel"]
  for impl in ("dot", "conv"):
    got = cnx.patch_conv(x, kernel, impl) + variables["params"]["bias"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda x, k: jnp.sum(jnp.sin(cnx.patch_conv(x, k, impl))), (0, 1))(x, kernel)
           for impl in ("dot", "conv")]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="impl"):
    cnx.patch_conv(x, kernel, "fft")
