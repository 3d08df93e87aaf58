"""Helpers shared by tests: a seeded random motion published on the tiny base, frames read back."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def publish_motion(base, name: str, seed: int = 0) -> None:
    """A motion with random (seeded) weights on the tiny base, published to the registry."""
    from lamp_cli.adapter import extract, make_metadata
    from lamp_cli.models.base import architecture_of
    from lamp_cli.models.video_unet import VideoUNet
    from lamp_cli.registry import Registry

    vu = VideoUNet.from_unet2d(copy.deepcopy(base.unet))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in vu.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    md = make_metadata(name=name, base_spec="tiny", base_fingerprint=base.fingerprint,
                       architecture=architecture_of(dict(base.unet.config)), frames=4, width=32, height=32,
                       train={"steps": 0})
    Registry().publish_adapter(extract(vu, base.unet, metadata=md))


def frames_of(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])
