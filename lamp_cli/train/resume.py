"""Checkpoints of an unfinished run (adapter tensors + optimizer and RNG state, safetensors,
written atomically) and the one compatibility check of a resumed run against its checkpoint.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from .. import settings
from ..adapter import read_header
from ..errors import InvalidInput, LampError
from ..fsutil import replace_durably, temp_sibling

CHECKPOINT_FILE = "checkpoint.safetensors"
CHECKPOINT_FORMAT = "1"


# --------------------------------------------------------------------------------------------
# checkpoints: adapter tensors + optimizer state, safetensors, written atomically


def run_dir(name: str) -> Path:
    return settings.lamp_home() / "runs" / name


def checkpoint_path(name: str) -> Path:
    return run_dir(name) / CHECKPOINT_FILE


def checkpoint_tensors(video_unet: Any, optimizer: Any, names: list[str]) -> dict[str, Any]:
    import numpy as np
    import torch

    params = dict(video_unet.added_parameters()) | dict(video_unet.trainable_parameters())
    tensors = {f"model.{n}": p.detach().float().cpu().contiguous() for n, p in params.items()}
    state = optimizer.state_dict()["state"]
    for i, n in enumerate(names):
        for key, value in state.get(i, {}).items():
            if torch.is_tensor(value):
                tensors[f"optim.{n}.{key}"] = value.detach().cpu().contiguous()
            else:
                tensors[f"optim.{n}.{key}"] = torch.tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    tensors["rng.numpy"] = torch.from_numpy(np.random.get_state()[1].astype(np.int64))
    return tensors


def save_checkpoint(path: Path, tensors: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write a checkpoint atomically: a temp file beside it, fsync, rename (never a pickle)."""
    from safetensors.torch import save_file

    tmp = temp_sibling(path)
    try:
        save_file(tensors, tmp, metadata={"format": "pt", "lamp.checkpoint": json.dumps(meta, default=str)})
        replace_durably(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """The JSON header of a checkpoint (reads the header only)."""
    try:
        md = read_header(path)["__metadata__"]
        meta = json.loads(md["lamp.checkpoint"])
    except (LampError, KeyError, json.JSONDecodeError) as e:
        raise InvalidInput(
            f"{path} is not a usable lamp checkpoint ({e})", hint="start over with --force (discards it)"
        ) from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise InvalidInput(f"{path} has checkpoint format {meta.get('format')!r}; expected {CHECKPOINT_FORMAT}")
    return meta


def restore_checkpoint(path: Path, video_unet: Any, optimizer: Any, names: list[str], meta: dict[str, Any]) -> None:
    import numpy as np
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    params = dict(video_unet.added_parameters()) | dict(video_unet.trainable_parameters())
    missing = [n for n in params if f"model.{n}" not in tensors]
    if missing:
        raise InvalidInput(f"{path} lacks tensor model.{missing[0]}", hint="start over with --force (discards it)")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[f"model.{n}"])
    state: dict[int, dict[str, Any]] = {}
    for i, n in enumerate(names):
        prefix = f"optim.{n}."
        entry = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if entry:
            state[i] = entry
    groups = [{**g, "params": list(range(len(names)))} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    np_state = meta["numpy_rng"]
    np.random.set_state((np_state[0], tensors["rng.numpy"].numpy().astype(np.uint32), *np_state[1:]))
    py = meta["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))




# What a resumed run must keep: option -> (how the user spells it, the value a checkpoint written
# before the option existed implies). One table, one check (`check_resume`).
RESUME_KEYS: dict[str, tuple[str, Any]] = {
    "frames": ("--frames", None),
    "stride": ("--stride", None),
    "width": ("--width", None),
    "height": ("--height", None),
    "lr": ("--lr", None),
    "seed": ("--seed", None),
    "mixed_precision": ("--mixed-precision", None),
    "min_timestep": ("--min-timestep", 0),
    "flip": ("--flip", True),
    "prompts": ("the prompt", None),
    "clip_files": ("the clips", None),
    "base_fingerprint": ("the base", None),
}


def _spelled(key: str, value: Any) -> str:
    flag = RESUME_KEYS[key][0]
    if key == "flip":
        return "--flip" if value else "--no-flip"
    if not flag.startswith("--"):
        return flag
    return f"{flag} {value}"


def check_resume(saved: dict[str, Any], **given: Any) -> None:
    """InvalidInput naming the first given option (None = not given) that differs from the
    checkpoint's value: a resumed run makes exactly the draws the uninterrupted run would."""
    for key, value in given.items():
        if value is None:
            continue
        want = saved.get(key, RESUME_KEYS[key][1])
        if value != want:
            shown = "" if key in ("prompts", "clip_files", "base_fingerprint", "flip") else f" {want}"
            flag = RESUME_KEYS[key][0]
            keep = f"resume without {flag}" if flag.startswith("--") else f"resume with {flag} it was trained with"
            raise InvalidInput(
                f"{_spelled(key, value)} differs from the checkpoint's{' run' if not shown else ''}{shown}",
                hint=f"{keep}, or start over with --force",
            )
