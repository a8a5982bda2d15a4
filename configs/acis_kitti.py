"""ACIS on KITTI car instances (SPEC §3): 256 x 768, latent 64, 16 steps.

    python -m jaxseg.main --config=configs/acis_kitti.py:ac --workdir=/tmp/acis_kitti \
        --config.data.root=/path/to/kitti

ROOT is the layout the authors' loader reads (jaxseg/data/kitti.py):
ROOT/{train,val}/**/X_rgb.png with X_labels.png beside it (8-bit instance ids),
as in the archive linked from visinf/acis#1. An instance folder dataset works
too (--config.data.name=instance_folder). The network sizes follow the authors'
code; the images are resized to S x S like CVPPP, so this config is a starting
point, not a reproduction (the paper keeps the 1:3 aspect, 256 x 768).
"""
import pathlib

from jaxseg import config as config_lib


def get_config(arg=None):
  variant, args = config_lib.parse_variant(arg, config_lib.ACIS_VARIANTS, default="ac",
                                           options=("runlocal",))
  c = config_lib.load_config_file(pathlib.Path(__file__).with_name("acis_cvppp.py"),
                                  variant + (",runlocal" if "runlocal" in args else ""))
  c.data.name = "kitti_instance"
  c.data.root = ""
  if "runlocal" not in args:
    c.acis.image_size = 256
    c.data.resize = c.data.crop_size = (256, 256)
    c.acis.latent_dim = 64
    c.acis.max_instances = 16
    c.acis.seq_lengths = (5, 10, 15)
  return c
