"""CiSS-Net at paper scale (Tab. 1-4): `dataset=ade20k|cityscapes|pascal_context60`
(default ade20k).

    python -m jaxseg.main --config=configs/ciss_paper.py:ciss,dataset=cityscapes \
        --workdir=/tmp/ciss_cityscapes [--config.init_from=PSPNET_PSL_RUN]

configs/ciss_ade20k.py, ciss_cityscapes.py and ciss_pascal_context.py are this
file with the dataset filled in. VARIANT is baseline | pmap | gated | ciss
(Tab. 4); options `gamma=G` (Tab. 2: 0.1, 0.3, 0.9), `entropy=L` (Tab. 3: λ2 in
0.001 … 0.05), `trunk=DIR`. The trunk is a dilated-ResNet PSPNet trained by PSL
(ResNet-101 on Cityscapes, ResNet-50 otherwise; the deep-stem ResNetV1c of
mmsegmentation's PSPNets), the first stage of the same command unless `trunk=DIR`
names one. It starts from ImageNet weights: `--config.model.pretrained=FILE`, timm's
`resnet50c.gluon_in1k` / `resnet101c.gluon_in1k` (the run says which when unset). Optimiser as the
authors': SGD with momentum, poly decay, the Bias and Context Nets at 1/10 of
the Base Net's learning rate. Data: `--config.data.root=` ADEChallengeData2016,
the Cityscapes folder (leftImg8bit/, gtFine/; `val/iiou` from the instance ids) or
VOCdevkit/VOC2010 (Pascal Context, 60 classes with background); see jaxseg/data/.
"""
from jaxseg import config as config_lib

# dataset -> (crop, base lr, PSPNet depth, steps); the paper's Sec. 3.2. Its crops,
# 473 and 713 (8k + 1, for align-corners resizing), are 480 and 720 here: jaxseg's
# PSPNet at output stride 8 takes multiples of 8.
DATASETS = {
    "ade20k": ((480, 480), 2e-3, "resnet50c", 150_000),
    "cityscapes": ((720, 720), 5e-4, "resnet101c", 90_000),
    "pascal_context60": ((480, 480), 5e-4, "resnet50c", 60_000),
}


def get_config(arg=None):
  variant, args = config_lib.parse_variant(
      arg, config_lib.CISS_VARIANTS,
      default="ciss", options=("runlocal", "dataset", *config_lib.CISS_OPTIONS))
  dataset = args.get("dataset", "ade20k")
  if dataset not in DATASETS:
    raise ValueError(f"configs/ciss_paper.py needs dataset=NAME with NAME one of "
                     f"{sorted(DATASETS)}; got {dataset!r}.")
  crop, lr, depth, steps = DATASETS[dataset]
  c = config_lib.default_config()
  c.data.name = dataset
  c.data.ignore_index = 255
  c.data.crop_size = crop
  c.data.scale_range = (0.5, 2.0)
  c.model.name = "pspnet"
  c.model.backbone = depth
  c.model.norm = "affine"  # the ImageNet BatchNorm, folded
  c.model.pretrained_source = (f"timm/{depth}.gluon_in1k: model.safetensors of "
                               f"https://huggingface.co/timm/{depth}.gluon_in1k")
  c.model.fpn_dim = 512  # PPM branches
  c.model.head_dim = 512  # X
  c.optim.name = "sgd"
  c.optim.momentum = 0.9
  c.optim.lr = lr
  c.optim.weight_decay = 1e-4
  c.optim.warmup_steps = 0
  c.optim.poly_power = 0.9
  c.optim.grad_clip_norm = 0.0
  c.batch_size = 32  # 16 GPUs x 2
  c.total_steps = steps
  c.ciss.trunk_steps = steps
  c.eval_every = c.checkpoint_every = 5000
  c.eval.crop_size = crop
  c.eval.batch_size = 2
  c.ciss.steps = 8  # the authors' code
  config_lib.apply_variant(c, config_lib.CISS_VARIANTS, variant)
  config_lib.apply_options(c, args, config_lib.CISS_OPTIONS)
  if "runlocal" in args:
    c = config_lib.runlocal(c)
    c.model.backbone = "resnet_test"
    c.model.pretrained = config_lib.weight_fixture("resnet_test")
    c.model.fpn_dim = c.model.head_dim = 16
    c.data.crop_size = c.eval.crop_size = (64, 64)
    c.ciss.trunk_steps = 4
    c.ciss.steps = 2  # T unrolled in the compiled step (8 at paper scale)
    c.ciss.width, c.ciss.context_dim, c.ciss.policy_dim = 16, 8, 8
  return c
