"""CiSS-Net on ade20k at paper scale: configs/ciss_paper.py with dataset=ade20k.

    python -m jaxseg.main --config=configs/ciss_ade20k.py:VARIANT --workdir=/tmp/ciss_ade20k

VARIANT is baseline | pmap | gated | ciss, options gamma=G, entropy=L, trunk=DIR
(see configs/ciss_paper.py).
"""
import pathlib

from jaxseg import config as config_lib


def get_config(arg=None):
  return config_lib.load_config_file(pathlib.Path(__file__).with_name("ciss_paper.py"),
                                     ",".join(filter(None, ["dataset=ade20k", arg])))
