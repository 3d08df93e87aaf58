"""lamp: learn a motion pattern from a handful of clips and reuse it (LAMP, CVPR 2024).

The library is first-class; the `lamp` command only parses, calls and renders:

    from lamp_cli import Registry, Engine, SampleRequest, load_motion, train_motion

Heavy modules (torch, diffusers) are imported on first use, so `import lamp_cli` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Registry": "lamp_cli.registry",
    "MotionAdapter": "lamp_cli.adapter",
    "Engine": "lamp_cli.engine",
    "SampleRequest": "lamp_cli.requests",
    "load_motion": "lamp_cli.resolve",
    "train_motion": "lamp_cli.train",
    "edit_video": "lamp_cli.edit",
    "VideoUNet": "lamp_cli.models.video_unet",
    "load_base": "lamp_cli.models.base",
    "LampError": "lamp_cli.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lamp_cli' has no attribute {name!r}")
