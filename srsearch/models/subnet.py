"""Subnets of the supernet (stage 1), registered so that searched models load like any other."""

from __future__ import annotations

from srsearch.models._registry import register
from supernet.subnet import SubNet, SubNetConfig

register("subnet", SubNetConfig, lambda cfg: SubNet(cfg.arch))
