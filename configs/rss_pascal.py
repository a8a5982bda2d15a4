"""RSS at paper scale on Pascal Context 59: the project's main entry.

    python -m jaxseg.main --config=configs/rss_pascal.py:psr_class,cold=PSL_RUN_DIR \
        --workdir=/tmp/rss_pascal

The default is jaxseg's image-level recipe `psr_class` (PSR 1/8, N = 8, per-class
credit — C numbers per sampled map, not the paper's one scalar — ε-uniform
exploration, an entropy bonus; docs/rss_image_level.md), which carried from the
embedded dataset to CamVid unchanged, here with a cold start when `init_from` is
given. It stays the default because jaxseg's scalar recipe `scalar` (the paper's
one mIoU per map and PSD, N = 256 at PSR 1/8, ε-uniform exploration, an
entropy bonus; docs/rss_scalar.md) has not reached 0.9 × PSL at CPU scale. The
paper's headline row is `psr_multi_psd,cold=DIR` (image-level PSR multi + PSD +
cold start, last-layer factor 400; without `cold=` the paper's rows take 40,
Tab. 3's best without a cold start). Other rows,
`--config=configs/rss_pascal.py:ARGS`:

  Tab. 1 (pixel level)  `pixel_nosync` (RSS), `pixel` (+ SyncAN),
                        `pixel,cold=DIR` (+ SyncAN + cold start); `psl`, `psl,cold=DIR`
  Tab. 2 (image level)  `naive`, `psr_single`, `psr_single_psd`, `psr_multi`,
                        `psr_multi_psd`, `psr_multi_psd,cold=DIR`; jaxseg: `scalar`,
                        `psr_class`
  Tab. 3 (lr factor)    `psr_multi_psd,lr_factor=F` with F in 1, 4, 40, 400,
                        with or without `cold=DIR`

`cold=DIR` is the same as `--config.init_from=DIR` (only the classifier is
re-initialised when the class counts differ).

Data: `--config.data.root=.../VOCdevkit/VOC2010` as mmsegmentation's Pascal Context
converter leaves it (JPEGImages/, SegmentationClassContext/,
ImageSets/SegmentationContext/{train,val}.txt; jaxseg/data/pascal.py). Evaluation is
single-scale with sliding windows; `--config.eval.mode=mf` adds multi-scale + flip
(val/miou_mf). `:runlocal` shrinks everything to seconds (try it on
`python -m jaxseg.data.mock_trees pascal_context /tmp/mock`). configs/rss_voc.py and
configs/rss_cityscapes.py are this file on VOC 2012 + SBD and on Cityscapes.

Pretrained start (every model): `--config.model.pretrained=FILE`, the timm file
named in MODELS below (`model.safetensors` of huggingface.co/timm/ID); without
it the run stops and says so (`--config.model.pretrained=none` trains from
scratch). Tab. 4's other models: `:VARIANT,model=deeplabv3` (DeepLabV3,
ResNet-101-D8 as mmsegmentation's, SGD) and `:VARIANT,model=segmenter`
(Segmenter with a ViT-L/16; the paper's EVA02-L encoder is not implemented).
`:runlocal` uses the tiny fixtures of tests/fixtures/weights/ instead.
"""
from jaxseg import config as config_lib

# model option -> (config.model fields, optimiser overrides, the timm weights it
# expects, (the runlocal backbone, its weight fixture in tests/fixtures/weights/)).
MODELS = {
    "sfpnext": ({"name": "sfpnext", "backbone": "convnext_v2_nano", "drop_path_rate": 0.1},
                {}, "timm/convnextv2_nano.fcmae_ft_in22k_in1k", ("convnext_v2_test", "convnextv2_test")),
    # mmsegmentation deeplabv3_r101-d8 on Pascal Context: SGD 4e-3, wd 1e-4, poly 0.9.
    "deeplabv3": ({"name": "deeplabv3", "backbone": "resnet101c", "norm": "affine",
                   "fpn_dim": 512, "drop_path_rate": 0.0},
                  {"name": "sgd", "lr": 4e-3, "momentum": 0.9, "weight_decay": 1e-4,
                   "poly_power": 0.9, "warmup_steps": 0},
                  "timm/resnet101c.gluon_in1k", ("resnet_test", "resnet_test")),
    # Segmenter (Strudel et al.): SGD 1e-3, no weight decay, poly 0.9, drop path 0.1.
    "segmenter": ({"name": "segmenter", "backbone": "vit_large_patch16", "drop_path_rate": 0.1,
                   "dropout": 0.0},
                  {"name": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0,
                   "poly_power": 0.9, "warmup_steps": 0},
                  "timm/vit_large_patch16_384.augreg_in21k_ft_in1k", ("vit_test", "vit_test")),
}


def get_config(arg=None):
  variant, args = config_lib.parse_variant(
      arg, config_lib.RSS_VARIANTS,
      default="psr_class", options=("runlocal", "model", *config_lib.RSS_OPTIONS))
  model = args.get("model", "sfpnext")
  if model not in MODELS:
    raise ValueError(f"configs/rss_pascal.py: model={model!r}; choose from {sorted(MODELS)}.")
  fields, optim, source, (local_backbone, fixture) = MODELS[model]
  c = config_lib.default_config()
  c.data.name = "pascal_context"
  c.data.ignore_index = 255
  c.data.crop_size = (512, 512)
  c.data.scale_range = (0.5, 2.0)
  c.optim.lr = 1e-4
  c.optim.weight_decay = 0.05
  c.optim.warmup_steps = 1500
  c.batch_size = 16
  c.total_steps = 40_000
  c.log_every = 50
  c.eval_every = 4000
  c.checkpoint_every = 2000
  c.eval.crop_size = (512, 512)
  c.rss.num_samples = 4
  c.model.update(fields)
  c.model.pretrained_source = (f"{source}: model.safetensors of "
                               f"https://huggingface.co/{source}")
  c.optim.update(optim)
  config_lib.apply_variant(c, config_lib.RSS_VARIANTS, variant)
  # The paper's last-layer factor (Tab. 3's best) for its image-level rows: 400
  # with a cold start (`cold=DIR`), 40 without; 1 for other rows. Give the cold
  # start as `cold=DIR` so the factor follows it (`--config.init_from` is applied
  # after this file and keeps 40).
  c.optim.last_layer_lr_factor = config_lib.paper_last_layer_factor(variant, args)
  config_lib.apply_options(c, args, config_lib.RSS_OPTIONS)
  if "runlocal" in args:
    c = config_lib.runlocal(c)
    c.model.backbone = local_backbone
    c.model.pretrained = config_lib.weight_fixture(fixture)
    c.data.crop_size = (64, 64)
    c.eval.crop_size = (64, 64)
  return c
