"""RSS at paper scale on Pascal VOC 2012 + SBD (21 classes): configs/rss_pascal.py
with the data swapped, every variant and option of that file accepted.

    python -m jaxseg.data.pascal sbd /data/benchmark_RELEASE /data/VOCdevkit/VOC2012  # once
    python -m jaxseg.main --config=configs/rss_voc.py:VARIANT --workdir=/tmp/rss_voc \
        --config.data.root=/data/VOCdevkit/VOC2012

Train = VOC train + SBD aug (10,582 images), val = VOC val (1,449), crop 512 x 512,
20k iterations at batch 16 (mmsegmentation's voc12aug schedule); jaxseg/data/pascal.py
for the layout.
"""
import pathlib

from jaxseg import config as config_lib


def get_config(arg=None):
  c = config_lib.load_config_file(pathlib.Path(__file__).with_name("rss_pascal.py"), arg)
  c.data.name = "voc_aug"
  if "runlocal" not in (arg or "").split(","):
    c.total_steps = 20_000
    c.eval_every = c.checkpoint_every = 2000
  return c
