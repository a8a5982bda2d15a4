"""PyTorch equivalents of bench/train_step.py's rows, timed the same way.

* `linear_nano_*`: ConvNeXt-V2-nano (timm's architecture, written out in plain
  torch so that no timm is needed) + a 1×1 head on the last stage.
* `deeplabv3_r101_512`: timm `resnet101c` at output stride 8 with its BatchNorm
  in eval mode (= jaxseg's folded `affine` norm) + the ASPP head of
  jaxseg.models.deeplabv3 (GroupNorm).
* `segmenter_vit*_512`: timm `vit_{base,large}_patch16_384` at 512×512 + the
  authors' mask transformer (jaxseg.models.segmenter's equations).

Each: AdamW, cross-entropy on logits bilinearly resized to the input, 2 threads;
`make_step` returns one train step, after a warm-up step, for bench/train_step.py
to time beside the jax step.
"""
from __future__ import annotations

import pathlib
import sys

import torch
import torch.nn.functional as F
from torch import nn

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "weights"


def _timm():
  sys.path.insert(0, str(FIXTURES))
  import make_fixtures  # pylint: disable=g-import-not-at-top
  return make_fixtures.import_timm()


class LN2d(nn.LayerNorm):
  def forward(self, x):
    return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GRN(nn.Module):
  def __init__(self, dim):
    super().__init__()
    self.gamma = nn.Parameter(torch.zeros(dim))
    self.beta = nn.Parameter(torch.zeros(dim))

  def forward(self, x):  # NHWC
    gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
  def __init__(self, dim):
    super().__init__()
    self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
    self.norm = nn.LayerNorm(dim, eps=1e-6)
    self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
    self.grn = GRN(4 * dim)

  def forward(self, x):
    y = self.dw(x).permute(0, 2, 3, 1)
    y = self.fc2(self.grn(F.gelu(self.fc1(self.norm(y)))))
    return x + y.permute(0, 3, 1, 2)


def convnext_nano_linear(num_classes: int) -> nn.Module:
  depths, dims = (2, 2, 8, 2), (80, 160, 320, 640)
  layers = [nn.Conv2d(3, dims[0], 4, 4), LN2d(dims[0], eps=1e-6)]
  for i, (d, dim) in enumerate(zip(depths, dims)):
    if i:
      layers += [LN2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dim, 2, 2)]
    layers += [Block(dim) for _ in range(d)]
  return nn.Sequential(*layers, nn.Conv2d(dims[-1], num_classes, 1))


def _cna(cin, cout, k=1, d=1):
  return nn.Sequential(nn.Conv2d(cin, cout, k, padding=d * (k - 1) // 2, dilation=d,
                                 bias=False), nn.GroupNorm(32, cout), nn.ReLU())


class DeepLabV3(nn.Module):
  def __init__(self, num_classes: int, dim: int = 512):
    super().__init__()
    self.backbone = _timm().create_model("resnet101c", pretrained=False, output_stride=8,
                                         num_classes=0, global_pool="")
    self.pool = _cna(2048, dim)
    self.branches = nn.ModuleList([_cna(2048, dim)] + [_cna(2048, dim, 3, d)
                                                        for d in (12, 24, 36)])
    self.bottleneck = _cna(5 * dim, dim, 3)
    self.classifier = nn.Conv2d(dim, num_classes, 1)

  def train(self, mode: bool = True):
    super().train(mode)
    for m in self.backbone.modules():  # frozen statistics = jaxseg's affine norm
      if isinstance(m, nn.BatchNorm2d):
        m.eval()
    return self

  def forward(self, x):
    x = self.backbone.forward_features(x)
    pooled = self.pool(x.mean((2, 3), keepdim=True)).expand(-1, -1, *x.shape[2:])
    x = torch.cat([pooled] + [b(x) for b in self.branches], 1)
    return self.classifier(self.bottleneck(x))


class Segmenter(nn.Module):
  def __init__(self, variant: str, num_classes: int, layers: int = 2):
    super().__init__()
    self.vit = _timm().create_model(f"vit_{variant}_patch16_384", pretrained=False,
                                    img_size=512, num_classes=0)
    d = self.vit.embed_dim
    from timm.models.vision_transformer import Block as ViTBlock  # pylint: disable=g-import-not-at-top
    self.n = num_classes
    self.proj_dec = nn.Linear(d, d)
    self.cls_emb = nn.Parameter(0.02 * torch.randn(1, num_classes, d))
    self.blocks = nn.ModuleList([ViTBlock(d, d // 64, qkv_bias=True, norm_layer=nn.LayerNorm)
                                 for _ in range(layers)])
    self.decoder_norm = nn.LayerNorm(d)
    self.proj_patch = nn.Parameter(d ** -0.5 * torch.randn(d, d))
    self.proj_classes = nn.Parameter(d ** -0.5 * torch.randn(d, d))
    self.mask_norm = nn.LayerNorm(num_classes)

  def forward(self, x):
    gh, gw = x.shape[2] // 16, x.shape[3] // 16
    z = self.proj_dec(self.vit.forward_features(x)[:, 1:])
    z = torch.cat([z, self.cls_emb.expand(z.shape[0], -1, -1)], 1)
    for blk in self.blocks:
      z = blk(z)
    z = self.decoder_norm(z)
    patches = F.normalize(z[:, :-self.n] @ self.proj_patch, dim=-1)
    classes = F.normalize(z[:, -self.n:] @ self.proj_classes, dim=-1)
    masks = self.mask_norm(patches @ classes.transpose(1, 2))
    return masks.transpose(1, 2).reshape(x.shape[0], self.n, gh, gw)


def build(name: str, num_classes: int) -> nn.Module:
  if name.startswith("linear_nano"):
    return convnext_nano_linear(num_classes)
  if name == "deeplabv3_r101_512":
    return DeepLabV3(num_classes)
  if name.startswith("segmenter_vit"):
    return Segmenter({"b": "base", "l": "large"}[name[len("segmenter_vit")]], num_classes)
  raise KeyError(f"no PyTorch equivalent of {name!r}")


def make_step(name: str, h: int, w: int, b: int, num_classes: int):
  """A callable running one AdamW train step of `build(name)` on a fixed random
  batch, after a warm-up step."""
  torch.set_num_threads(2)
  torch.manual_seed(0)
  net = build(name, num_classes).train()
  opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.05)
  x = torch.randn(b, 3, h, w)
  y = torch.randint(0, num_classes, (b, h, w))

  def step():
    opt.zero_grad(set_to_none=True)
    logits = F.interpolate(net(x), size=(h, w), mode="bilinear", align_corners=False)
    F.cross_entropy(logits, y, ignore_index=255).backward()
    opt.step()

  step()
  return step
