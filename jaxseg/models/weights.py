"""Pretrained backbone weights in: timm / torchvision / Hugging Face files.

`--config.model.pretrained=PATH` fills `params["backbone"]` from

* `*.safetensors` through the `safetensors` package's numpy reader (no torch);
* `*.pth` / `*.pt` / `*.bin` through `torch.load(..., weights_only=True)`
  (tensors and plain containers only, never other pickled objects), when torch
  is installed;
* a jaxseg checkpoint directory (its `backbone` params, as `init_from` reads).

Tensor names are timm's (`jaxseg.models.name_maps`). The whole backbone is
loaded or nothing: every missing, unexpected and wrongly shaped tensor is named
in one `WeightImportError`. The head is re-initialised by design and logged.
`export_backbone` writes the inverse (timm names), for a backbone trained here
to be read by timm or re-imported.
"""
from __future__ import annotations

import logging

import jax
import ml_collections
import numpy as np
from etils import epath
from flax import traverse_util
from safetensors import numpy as st_numpy

from jaxseg import checkpoint as ckpt_lib
from jaxseg import models
from jaxseg.models import name_maps

TORCH_SUFFIXES = (".pth", ".pt", ".bin")


class WeightImportError(ValueError):
  """A weights file that cannot become this backbone."""


def read_tensors(path) -> dict[str, np.ndarray]:
  """name → float32/int numpy array of a .safetensors or PyTorch file."""
  p = epath.Path(path)
  if not p.is_file():
    raise WeightImportError(f"model.pretrained: {p} is not a file.")
  if p.suffix == ".safetensors":
    return dict(st_numpy.load(p.read_bytes()))
  if p.suffix in TORCH_SUFFIXES:
    return _read_torch(p)
  raise WeightImportError(f"model.pretrained: {p} is neither .safetensors nor one of "
                          f"{TORCH_SUFFIXES} (nor a jaxseg checkpoint directory).")


def _read_torch(p: epath.Path) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise WeightImportError(
        f"model.pretrained: {p} is a PyTorch file; reading it needs torch "
        "(pip install torch). Or save it as .safetensors (safetensors.torch.save_file) "
        "and pass that instead.") from e
  try:
    with p.open("rb") as f:
      obj = torch.load(f, map_location="cpu", weights_only=True)
  except Exception as e:  # pickle.UnpicklingError and torch's own errors
    raise WeightImportError(f"model.pretrained: {p} does not load with "
                            f"torch.load(weights_only=True): {e}") from e
  for key in ("state_dict", "model", "module"):  # common checkpoint wrappers
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
  if not isinstance(obj, dict):
    raise WeightImportError(f"model.pretrained: {p} holds a {type(obj).__name__}, "
                            "not a state dict.")
  return {k: (v.float() if v.is_floating_point() else v).numpy()
          for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _flat(tree) -> dict:
  """'a/b/kernel' → leaf."""
  return traverse_util.flatten_dict(tree, sep="/")


def import_backbone(tensors: dict[str, np.ndarray], family: str, target, *,
                    source: str = "file") -> tuple[dict, list[str]]:
  """(backbone params shaped as `target`, names of unused ImageNet-head tensors).

  `target` is the backbone's param tree (arrays or ShapeDtypeStructs).
  """
  shapes = {k: tuple(v.shape) for k, v in _flat(target).items()}
  rules = name_maps.RULES[family](shapes)
  covered = {f for r in rules for f in r.flax}
  if covered != set(shapes):
    raise AssertionError(f"{family} name map misses {sorted(set(shapes) - covered)}")
  out, missing, wrong, used = {}, [], [], set()
  for rule in rules:
    absent = [t for t in rule.torch if t not in tensors]
    missing += absent
    used.update(rule.torch)
    if absent:
      continue
    try:
      arrays = rule.to_flax(*(np.asarray(tensors[t]) for t in rule.torch))
    except ValueError as e:
      wrong.append(f"{', '.join(rule.torch)}: {e}")
      continue
    for name, array in zip(rule.flax, arrays):
      if tuple(array.shape) != shapes[name]:
        given = ", ".join(f"{t} {tuple(np.shape(tensors[t]))}" for t in rule.torch)
        wrong.append(f"{given} → {name} {tuple(array.shape)}, the model has {shapes[name]}")
      else:
        out[name] = np.asarray(array, np.float32)
  ignored = [t for t in tensors if t not in used
             and t.startswith(name_maps.IGNORED[family])]
  unexpected = [t for t in tensors if t not in used and t not in ignored
                and not t.endswith(name_maps.OPTIONAL_SUFFIXES)]
  if missing or unexpected or wrong:
    lines = [f"{source} is not a {family} backbone of this shape (timm names "
             f"expected; nothing was loaded):"]
    for title, names in (("missing", missing), ("unexpected", unexpected),
                         ("wrong shape", wrong)):
      if names:
        lines.append(f"  {len(names)} {title}: " + "; ".join(names))
    raise WeightImportError("\n".join(lines))
  return traverse_util.unflatten_dict(out, sep="/"), ignored


def export_backbone(backbone_params, family: str, *, conv_mlp: bool = True) -> dict[str, np.ndarray]:
  """timm-named tensors of a jaxseg backbone (the inverse of `import_backbone`)."""
  flat = {k: np.asarray(v, np.float32) for k, v in _flat(backbone_params).items()}
  shapes = {k: v.shape for k, v in flat.items()}
  rules = (name_maps.convnext_v2_rules(shapes, conv_mlp) if family == "convnext_v2"
           else name_maps.RULES[family](shapes))
  out = {}
  for rule in rules:
    out.update(zip(rule.torch, (np.ascontiguousarray(a, np.float32)
                                for a in rule.to_torch(*(flat[f] for f in rule.flax)))))
  return out


def family_of(backbone_params) -> str:
  """The name-map family of a jaxseg backbone param tree."""
  keys = set(backbone_params)
  for family, marker in (("convnext_v2", "stem_conv"), ("vit", "patch_embed"),
                         ("resnet", "stem0")):
    if marker in keys:
      return family
  raise WeightImportError(f"not a ConvNeXt-V2, ResNet or ViT backbone: {sorted(keys)[:8]}")


def save_safetensors(tensors: dict[str, np.ndarray], path) -> None:
  p = epath.Path(path)
  tmp = p.parent / (p.name + ".tmp")
  tmp.write_bytes(st_numpy.save(tensors))
  tmp.rename(p)


def check_pretrained(model: ml_collections.ConfigDict) -> None:
  """Before any compilation: the file a paper config expects is given and exists."""
  path, source = model.pretrained, model.pretrained_source
  where = f" ({source})" if source else ""
  if not path and source:
    raise WeightImportError(
        f"This config starts from pretrained weights{where}: download the file and pass "
        "--config.model.pretrained=PATH, or --config.model.pretrained=none to train "
        "from scratch.")
  if path and path != "none" and not epath.Path(path).exists():
    raise WeightImportError(f"config.model.pretrained={path} does not exist{where}.")
  if path and path != "none":
    family = models.backbone_family(model.backbone)
    if family == "resnet" and model.norm != "affine":
      raise WeightImportError(
          f"config.model.pretrained: {model.backbone} weights carry BatchNorm, which "
          "becomes a per-channel scale and bias: set --config.model.norm=affine "
          f"(model.norm={model.norm!r}).")


def load_pretrained(params, model: ml_collections.ConfigDict):
  """`params` with `params["backbone"]` from `model.pretrained` (unless "" / "none")."""
  path = model.pretrained
  if not path or path == "none":
    return params
  check_pretrained(model)
  family = models.backbone_family(model.backbone)
  if epath.Path(path).is_dir():
    loaded = ckpt_lib.load_params(path)
    if "backbone" not in loaded:
      raise WeightImportError(f"model.pretrained: the checkpoint {path} has no "
                              f"'backbone' params (it has {sorted(loaded)}).")
    backbone, _ = ckpt_lib.merge_init({"backbone": params["backbone"]},
                                      {"backbone": loaded["backbone"]}, reinit_pattern="$^")
    backbone, ignored = backbone["backbone"], []
  else:
    backbone, ignored = import_backbone(read_tensors(path), family, params["backbone"],
                                        source=str(path))
  fresh = sorted(k for k in params if k != "backbone")
  logging.info("model.pretrained: %s backbone from %s; not used: %s; re-initialised: %s",
               family, path, ", ".join(ignored) or "nothing", ", ".join(fresh))
  return {**params, "backbone": jax.tree.map(
      lambda new, old: np.asarray(new, np.asarray(old).dtype), backbone, params["backbone"])}


def main(argv=None) -> None:
  """`python -m jaxseg.models.weights export RUN_DIR OUT.safetensors`: the backbone
  of a jaxseg run's latest checkpoint in timm's names."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m jaxseg.models.weights")
  sub = parser.add_subparsers(dest="command", required=True)
  export = sub.add_parser("export", help="a checkpoint's backbone → timm-named .safetensors")
  export.add_argument("run_dir")
  export.add_argument("out")
  args = parser.parse_args(argv)
  backbone = ckpt_lib.load_params(args.run_dir)["backbone"]
  family = family_of(backbone)
  tensors = export_backbone(backbone, family)
  save_safetensors(tensors, args.out)
  print(f"{args.out}: {len(tensors)} {family} tensors in timm's names")


if __name__ == "__main__":
  main()
