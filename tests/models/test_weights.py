"""Pretrained weights in: jaxseg reproduces timm's models from their files.

The fixtures (tests/fixtures/weights/, written by make_fixtures.py with timm
1.0.31 and torch 2.13) hold tiny timm models in timm's names and the PyTorch
outputs of every stage on a fixed input. No torch is needed here.
"""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxseg import config as config_lib
from jaxseg import models
from jaxseg.models import convnext_v2, resnet, vit, weights

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "weights")

CASES = {  # fixture -> (family, builder, output keys)
    "convnextv2_test": ("convnext_v2", lambda: convnext_v2.build_convnext_v2(
        "test", depthwise_impl="lax"), [f"stage{i}" for i in range(4)]),
    "convnextv2_test_linear": ("convnext_v2", lambda: convnext_v2.build_convnext_v2(
        "test", depthwise_impl="shift"), [f"stage{i}" for i in range(4)]),
    "resnet_test/os32": ("resnet", lambda: resnet.build_resnet(
        "resnet_test", norm="affine"), [f"os32_stage{i}" for i in range(4)]),
    "resnet_test/os8": ("resnet", lambda: resnet.build_resnet(
        "resnet_test", norm="affine", output_stride=8), [f"os8_stage{i}" for i in range(4)]),
    "resnet_test7x7/os32": ("resnet", lambda: resnet.build_resnet(
        "resnet_test7x7", norm="affine"), [f"os32_stage{i}" for i in range(4)]),
    "resnet_test7x7/os8": ("resnet", lambda: resnet.build_resnet(
        "resnet_test7x7", norm="affine", output_stride=8), [f"os8_stage{i}" for i in range(4)]),
    "vit_test": ("vit", lambda: vit.build_vit("test"), ["stage0", "stage1"]),
}


def _fixture(name):
  base = os.path.join(FIXTURES, name.split("/")[0])
  return weights.read_tensors(base + ".safetensors"), dict(np.load(base + ".npz"))


def _shapes(model, image):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.asarray(image),
                                           train=False))["params"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_stage_matches_pytorch(case):
  family, build, keys = CASES[case]
  tensors, ref = _fixture(case)
  model = build()
  params, ignored = weights.import_backbone(tensors, family, _shapes(model, ref["image"]))
  assert ignored and all(n.startswith(("head.", "fc.")) for n in ignored)
  got = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))(params, ref["image"])
  assert len(got) == len(keys)
  for g, k in zip(got, keys):
    e = ref[k]
    assert g.shape == e.shape, k
    np.testing.assert_allclose(np.asarray(g), e, rtol=1e-4, atol=1e-4 * np.abs(e).max(),
                               err_msg=f"{case} {k}")


def test_a_mismatch_names_every_missing_unexpected_and_wrong_tensor():
  tensors, ref = _fixture("convnextv2_test")
  target = _shapes(CASES["convnextv2_test"][1](), ref["image"])
  bad = dict(tensors)
  del bad["stages.2.blocks.1.conv_dw.weight"]
  bad["stages.9.blocks.0.norm.weight"] = np.zeros(3, np.float32)
  bad["stages.0.blocks.0.mlp.fc1.weight"] = np.zeros((5, 8, 1, 1), np.float32)
  with pytest.raises(weights.WeightImportError) as e:
    weights.import_backbone(bad, "convnext_v2", target, source="x.safetensors")
  msg = str(e.value)
  assert "nothing was loaded" in msg
  assert "1 missing: stages.2.blocks.1.conv_dw.weight" in msg
  assert "1 unexpected: stages.9.blocks.0.norm.weight" in msg
  assert "stages.0.blocks.0.mlp.fc1.weight (5, 8, 1, 1)" in msg and "(8, 32)" in msg
  # A ResNet file is not a ConvNeXt.
  with pytest.raises(weights.WeightImportError, match="unexpected: .*layer1.0.conv1.weight"):
    weights.import_backbone(_fixture("resnet_test")[0], "convnext_v2", target)


@pytest.mark.parametrize("case", ["convnextv2_test", "resnet_test/os32", "vit_test"])
def test_export_then_import_is_the_identity(case):
  family, build, _ = CASES[case]
  tensors, ref = _fixture(case)
  params, _ = weights.import_backbone(tensors, family, _shapes(build(), ref["image"]))
  exported = weights.export_backbone(params, family)
  again, ignored = weights.import_backbone(exported, family, params)
  assert not ignored
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(again)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  if family != "resnet":  # BatchNorm is exported folded (mean 0, var 1 - eps)
    for name, x in exported.items():
      np.testing.assert_array_equal(x, np.asarray(tensors[name], np.float32), err_msg=name)


def test_vit_positions_are_resized_to_the_model_grid():
  tensors, ref = _fixture("vit_test")
  model = vit.build_vit("test")
  big = np.zeros((1, 48, 64, 3), np.float32)  # a 6 x 8 grid; the file's is 4 x 4
  params, _ = weights.import_backbone(tensors, "vit", _shapes(model, big))
  assert params["pos_embed"].shape == (1, 6, 8, 16)
  grid = tensors["pos_embed"][0, 1:].astype(np.float32).reshape(4, 4, 16)
  # Corners of a half-pixel-centred bilinear upsampling keep the corner values
  # (the sample falls outside the centre grid and is clamped).
  np.testing.assert_allclose(params["pos_embed"][0, 0, 0], grid[0, 0], rtol=1e-6)
  np.testing.assert_allclose(params["pos_embed"][0, -1, -1], grid[-1, -1], rtol=1e-6)
  np.testing.assert_array_equal(params["cls_pos"][0, 0], tensors["pos_embed"][0, 0])
  assert model.apply({"params": params}, big, train=False)[-1].shape == (1, 6, 8, 16)
  bad = dict(tensors, pos_embed=np.zeros((1, 1 + 15, 16), np.float32))
  with pytest.raises(weights.WeightImportError, match="not a square grid"):
    weights.import_backbone(bad, "vit", params)


def _model_config(**kw):
  c = config_lib.default_config().model
  c.update(kw)
  return c


@pytest.mark.parametrize("name, backbone, fixture, norm", [
    ("sfpnext", "convnext_v2_test", "convnextv2_test", "group"),
    ("pspnet", "resnet_test", "resnet_test", "affine"),
    ("deeplabv3", "resnet_test7x7", "resnet_test7x7", "affine"),
    ("segmenter", "vit_test", "vit_test", "group"),
])
def test_load_pretrained_fills_the_backbone_and_keeps_the_head(name, backbone, fixture, norm):
  c = _model_config(name=name, backbone=backbone, norm=norm, fpn_dim=8, head_dim=8,
                    pretrained=os.path.join(FIXTURES, fixture + ".safetensors"))
  model = models.build_model(c, 3)
  x = jnp.zeros((1, 32, 32, 3))
  fresh = jax.device_get(model.init({"params": jax.random.key(0)}, x, train=False)["params"])
  loaded = weights.load_pretrained(fresh, c)
  expected, _ = weights.import_backbone(_fixture(fixture)[0], models.backbone_family(backbone),
                                        fresh["backbone"])
  for a, b in zip(jax.tree_util.tree_leaves(loaded["backbone"]),
                  jax.tree_util.tree_leaves(expected)):
    np.testing.assert_array_equal(a, b)
  for k in set(fresh) - {"backbone"}:
    for a, b in zip(jax.tree_util.tree_leaves(loaded[k]), jax.tree_util.tree_leaves(fresh[k])):
      np.testing.assert_array_equal(a, b)
  assert model.apply({"params": loaded}, x, train=False).shape == (1, 32, 32, 3)


def test_pretrained_errors_name_the_fix(tmp_path):
  missing = str(tmp_path / "nope.safetensors")
  with pytest.raises(weights.WeightImportError, match="nope.safetensors does not exist"):
    weights.check_pretrained(_model_config(pretrained=missing))
  with pytest.raises(weights.WeightImportError, match=r"\(timm/x\).*--config.model.pretrained=PATH"):
    weights.check_pretrained(_model_config(pretrained_source="timm/x"))
  weights.check_pretrained(_model_config(pretrained="none", pretrained_source="timm/x"))
  resnet_file = os.path.join(FIXTURES, "resnet_test.safetensors")
  with pytest.raises(weights.WeightImportError, match="model.norm=affine"):
    weights.check_pretrained(_model_config(name="pspnet", backbone="resnet_test",
                                           pretrained=resnet_file))
  (tmp_path / "w.npy").write_bytes(b"")
  with pytest.raises(weights.WeightImportError, match="neither .safetensors"):
    weights.read_tensors(tmp_path / "w.npy")


def test_pytorch_files_load_with_weights_only(tmp_path):
  path = tmp_path / "w.pth"
  path.write_bytes(b"not a pickle")
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    with pytest.raises(weights.WeightImportError, match="needs torch"):
      weights.read_tensors(path)
    return
  tensors, _ = _fixture("vit_test")
  torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in tensors.items()}}, path)
  loaded = weights.read_tensors(path)
  assert sorted(loaded) == sorted(tensors)
  np.testing.assert_array_equal(loaded["pos_embed"], tensors["pos_embed"].astype(np.float32))

  class Evil:  # pylint: disable=too-few-public-methods
    def __reduce__(self):
      return (os.system, ("echo pwned",))

  torch.save({"x": Evil()}, path, _use_new_zipfile_serialization=True)
  with pytest.raises(weights.WeightImportError, match="weights_only"):
    weights.read_tensors(path)
