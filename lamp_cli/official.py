"""Import a motion released with the LAMP paper into the registry as a small delta adapter.

The reference code saves every learned motion as a full `UNet3DConditionModel` (diffusers
0.11.1): a folder `unet/` with `config.json` and `diffusion_pytorch_model.bin` (a pickled state
dict, fp32, 4.4 GB for SD-1.x), sometimes inside a whole pipeline folder. Its keys are the SD
UNet's, except that every inflated conv nests its 2-D conv (`<site>.conv2d.*`) beside the added
`<site>.conv1d.*` and `<site>.conv_gate.*`, and every transformer block adds `attn_temp.*` and
`norm_temp.*`; `attn1.to_q.weight` is tuned. lamp's VideoUNet uses the same names (docs/method.md),
so the checkpoint loads into a VideoUNet inflated from its base key for key, and
`adapter.extract` then keeps exactly what differs: the added modules and `attn1.to_q − base`.

Safety: the `.bin` is read with `torch.load(weights_only=True)` (tensors and plain containers
only, never arbitrary objects); `diffusion_pytorch_model.safetensors` is preferred when present.
Everything is checked (config class and architecture, key set, shapes, values) before anything is
stored; a failed import leaves the registry as it was.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import schema, settings
from .adapter import check_adapter_dtype, extract, make_metadata
from .devices import resolve_dtype
from .errors import IncompatibleAdapter, InvalidInput, NameTaken
from .jsonio import dumps_strict, loads_strict
from .models.base import architecture_of, fingerprint, quiet_hf_progress, resolve_base_path
from .progress import Reporter, reporter_or_null
from .registry import Registry, validate_name
from .tensorfile import file_sha256, load_weights_only

if TYPE_CHECKING:
    from .registry import Manifest, Registry

log = logging.getLogger("lamp")

OFFICIAL_CLASS = "UNet3DConditionModel"
SAFETENSORS_FILE = "diffusion_pytorch_model.safetensors"
BIN_FILE = "diffusion_pytorch_model.bin"
# The reference's block names and their diffusers 2-D equivalents (what an SD-1.x base has).
BLOCKS_3D_TO_2D = {
    "CrossAttnDownBlock3D": "CrossAttnDownBlock2D",
    "DownBlock3D": "DownBlock2D",
    "CrossAttnUpBlock3D": "CrossAttnUpBlock2D",
    "UpBlock3D": "UpBlock2D",
    "UNetMidBlock3DCrossAttn": "UNetMidBlock2DCrossAttn",
}
# Config fields that decide tensor shapes; an official config must agree with its base on them.
SHAPE_FIELDS = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "cross_attention_dim",
    "attention_head_dim",
    "norm_num_groups",
    "down_block_types",
    "up_block_types",
    "mid_block_type",
    "use_linear_projection",
)
# A frozen tensor "equals" the base's if it is within fp16 rounding of it (a base stored in fp16
# and one in fp32 are the same base); anything larger means another base was tuned.
FP16_RTOL = 2.0**-10
FP16_ATOL = 1e-7
# The reference trains and releases 16-frame, 512×320 motions (configs/horse-videoset.yaml).
REFERENCE_FRAMES, REFERENCE_WIDTH, REFERENCE_HEIGHT = 16, 512, 320
_SHOW = 5  # how many offending keys an error names
MAX_CONFIG_BYTES = 1 << 20


@dataclass
class OfficialCheckpoint:
    """A located, config-checked official checkpoint (weights not loaded yet)."""

    path: Path  # what the user gave
    unet_dir: Path  # the folder holding config.json and the weights
    config: dict[str, Any]
    weights: Path
    motion_folder: str  # the folder named after the motion (prompt source), e.g. "horse_run"

    @property
    def config_2d(self) -> dict[str, Any]:
        """The config with the reference's 3-D block names mapped to diffusers' 2-D ones."""
        cfg = dict(self.config)
        for key in ("down_block_types", "up_block_types"):
            cfg[key] = [BLOCKS_3D_TO_2D.get(b, b) for b in cfg.get(key) or []]
        cfg["mid_block_type"] = BLOCKS_3D_TO_2D.get(cfg.get("mid_block_type"), cfg.get("mid_block_type"))
        return cfg


def locate(path: str | Path) -> OfficialCheckpoint:
    """Find the `unet/` folder, read and check its config, pick the weights file.

    `path`: a `unet/` folder, a pipeline folder containing `unet/`, or the weights file itself.
    """
    given = Path(path).expanduser()
    if not given.exists():
        raise InvalidInput(
            f"{given} does not exist", hint="pass the released motion's unet/ folder or its parent"
        )
    folder = given.parent if given.is_file() else given
    if not (folder / "config.json").exists() and (folder / "unet" / "config.json").exists():
        folder = folder / "unet"
    config_file = folder / "config.json"
    if not config_file.exists():
        raise InvalidInput(
            f"{given} is not an official LAMP checkpoint: no config.json in {folder}"
            + (" or its unet/" if folder == given else ""),
            hint="pass the folder that holds config.json and diffusion_pytorch_model.bin (the motion's unet/)",
        )
    try:
        raw = config_file.read_bytes()[: MAX_CONFIG_BYTES + 1]
    except OSError as e:
        raise InvalidInput(f"{config_file} is not readable ({e.strerror or e})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise InvalidInput(f"{config_file} is larger than any UNet config ({MAX_CONFIG_BYTES} bytes)")
    try:
        config = loads_strict(raw, what=str(config_file))
    except InvalidInput as e:
        raise InvalidInput(e.message.replace("is not valid JSON", "is not a readable JSON file")) from None
    if not isinstance(config, dict):
        raise InvalidInput(f"{config_file} does not hold a JSON object")
    check_config(config, what=str(config_file))
    if given.is_file():
        if given.name not in (SAFETENSORS_FILE, BIN_FILE):
            raise InvalidInput(f"{given.name} is not {SAFETENSORS_FILE} or {BIN_FILE}")
        weights = given
    elif (folder / SAFETENSORS_FILE).exists():
        weights = folder / SAFETENSORS_FILE
    elif (folder / BIN_FILE).exists():
        weights = folder / BIN_FILE
    else:
        raise InvalidInput(
            f"no weights in {folder}: expected {SAFETENSORS_FILE} or {BIN_FILE}",
            hint="the released motions ship unet/diffusion_pytorch_model.bin beside config.json",
        )
    motion_folder = folder.parent.name if folder.name == "unet" else folder.name
    return OfficialCheckpoint(given, folder, config, weights, motion_folder)


def check_config(config: dict[str, Any], *, what: str = "config.json") -> None:
    """The config describes a reference UNet3DConditionModel of SD-1.x style; InvalidInput if not."""
    cls = config.get("_class_name")
    if cls != OFFICIAL_CLASS:
        raise InvalidInput(
            f"{what} describes a {schema.shown(cls) if cls else 'model without _class_name'}, not a LAMP {OFFICIAL_CLASS}",
            hint="lamp import --official reads the unet/ folder the LAMP reference code saves; "
            "a lamp adapter (.safetensors) is imported with plain `lamp import FILE`",
        )
    # every field lamp reads has the JSON type and range it must have (lamp_cli/schema.py)
    schema.check_fields(schema.OFFICIAL_CONFIG, config, what=what, kind="field")
    blocks = [
        *config["down_block_types"],
        *config["up_block_types"],
        config.get("mid_block_type") or "UNetMidBlock3DCrossAttn",
    ]
    known = set(BLOCKS_3D_TO_2D) | set(BLOCKS_3D_TO_2D.values())
    unknown = sorted({b for b in blocks if b not in known})
    if unknown:
        raise InvalidInput(
            f"{what} uses block types {', '.join(map(str, unknown))}; only SD-1.x-style UNets "
            "(cross-attention down/up blocks, plain down/up blocks, a cross-attention mid block) are supported"
        )
    if len(config["down_block_types"]) != len(config["block_out_channels"]) or len(
        config["up_block_types"]
    ) != len(config["block_out_channels"]):
        raise InvalidInput(f"{what}: down/up block types and block_out_channels disagree in length")


def check_against_base(ckpt: OfficialCheckpoint, base_config: Mapping[str, Any], base_spec: str) -> None:
    """The checkpoint's architecture equals its base's; IncompatibleAdapter naming the fields if not."""
    mine = ckpt.config_2d
    defaults = {"in_channels": 4, "out_channels": 4, "norm_num_groups": 32, "use_linear_projection": False,
                "attention_head_dim": 8, "mid_block_type": "UNetMidBlock2DCrossAttn"}  # fmt: skip

    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, (list, tuple)) else v

    diffs = []
    for key in SHAPE_FIELDS:
        a = norm(mine.get(key, defaults.get(key)))
        b = norm(base_config.get(key, defaults.get(key)))
        if key == "mid_block_type":
            a, b = a or defaults[key], b or defaults[key]
        if a != b:
            diffs.append(f"{key} {a} vs {b}")
    if diffs:
        raise IncompatibleAdapter(
            f"{ckpt.unet_dir} was not tuned from a model of base '{base_spec}''s architecture: "
            + "; ".join(diffs),
            hint="pass --base the Stable Diffusion 1.x model the motion was trained on (the paper: CompVis/stable-diffusion-v1-4)",
        )


def load_state_dict(weights: Path) -> dict[str, Any]:
    """Read an official weights file safely; every value must be a floating-point tensor.

    safetensors: parsed by safetensors. .bin: `torch.load(weights_only=True)`, which refuses any
    pickled object other than tensors and plain containers (no code runs while reading).
    """
    import torch

    if weights.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as e:
            raise InvalidInput(f"{weights} is not a readable safetensors file ({e})") from e
    else:
        try:
            state = load_weights_only(weights)
        except Exception as e:  # the restricted unpickler refused, or this is not a weights file
            blocked = blocked_globals(weights)
            if blocked:
                names = ", ".join(blocked[:_SHOW]) + (f" and {len(blocked) - _SHOW} more" if len(blocked) > _SHOW else "")
                raise InvalidInput(
                    f"refused to load {weights}: its pickle would import {names}, which is not a tensor or a "
                    "plain container (loading it could run code)",
                    hint="lamp never unpickles arbitrary objects; a released LAMP checkpoint holds only tensors, "
                    "so this file is not one (or was tampered with)",
                ) from None
            reason = _first_line(e) if isinstance(e, pickle.UnpicklingError) else f"{type(e).__name__}: {_first_line(e)}"
            raise InvalidInput(f"{weights} is not a readable PyTorch weights file ({reason})") from None
    if not isinstance(state, Mapping):
        raise InvalidInput(f"{weights} holds a {type(state).__name__}, not a state dict of tensors")
    for key, value in state.items():
        if not isinstance(key, str):
            raise InvalidInput(f"{weights} has a non-string key {key!r}")
        if not isinstance(value, torch.Tensor):
            raise InvalidInput(f"{weights}: '{key}' is a {type(value).__name__}, not a tensor")
        if not value.is_floating_point():
            raise InvalidInput(f"{weights}: tensor '{key}' has dtype {value.dtype}, expected floating point")
    return dict(state)


def _first_line(e: BaseException) -> str:
    """The informative line of a torch.load error, without torch's advice to load the file
    unrestricted (which lamp never does)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln and "Weights only" not in ln]
    return lines[0][:200] if lines else type(e).__name__


# What a tensors-only checkpoint's pickle may import (torch's own rebuild functions and storages).
_SAFE_GLOBAL_PREFIXES = ("torch.",)
_SAFE_GLOBALS = {"collections.OrderedDict", "_codecs.encode", "builtins.set", "builtins.frozenset"}


def _pickle_globals(data: bytes) -> list[str]:
    """The module.name of every global the pickle(s) in `data` would import, found by reading
    opcodes only (nothing is executed). Concatenated pickles (torch's legacy format) are all read."""
    import pickletools

    found: list[str] = []
    pos = 0
    while pos < len(data):
        strings: list[str] = []
        memo: dict[int, Any] = {}
        end = pos
        try:
            for op, arg, offset in pickletools.genops(data[pos:]):
                end = pos + offset + 1
                if op.name == "GLOBAL" and isinstance(arg, str):
                    found.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                    strings.append(str(arg))
                elif op.name in ("MEMOIZE",) and strings:
                    memo[len(memo)] = strings[-1]
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT") and strings:
                    memo[int(arg)] = strings[-1]
                elif op.name in ("GET", "BINGET", "LONG_BINGET") and isinstance(memo.get(int(arg)), str):
                    strings.append(memo[int(arg)])
                if op.name == "STOP":
                    break
        except Exception:  # noqa: BLE001 - a broken pickle: report what was found so far
            break
        if end <= pos:
            break
        pos = end
    return list(dict.fromkeys(found))


def blocked_globals(weights: Path) -> list[str]:
    """The globals in a `.bin` that a tensors-only checkpoint never has (what torch's restricted
    loader refuses), on any torch version: torch's own scanner when it has one, else lamp's."""
    import zipfile

    try:
        import torch

        scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
        if scan is not None and zipfile.is_zipfile(weights):
            return [g for g in scan(str(weights)) if not _safe_global(g)]
    except Exception:  # noqa: BLE001 - fall back to reading the opcodes ourselves
        pass
    try:
        if zipfile.is_zipfile(weights):
            with zipfile.ZipFile(weights) as z:
                data = b"".join(z.read(n) for n in z.namelist() if n.endswith(".pkl"))
        else:
            with open(weights, "rb") as f:
                data = f.read(256 << 20)  # the pickle of a legacy file comes before its tensor bytes
    except (OSError, zipfile.BadZipFile):
        return []
    return [g for g in _pickle_globals(data) if not _safe_global(g)]


def _safe_global(name: str) -> bool:
    return name.startswith(_SAFE_GLOBAL_PREFIXES) or name in _SAFE_GLOBALS


def check_keys(state: Mapping[str, Any], expected: Mapping[str, Any], *, what: str) -> None:
    """Same key set and shapes as the VideoUNet inflated from the base; InvalidInput naming what differs."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s) ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) ({_names(unexpected)})")
    if problems:
        hint = None
        if any(k.replace(".conv2d.", ".") in state for k in missing if ".conv2d." in k):
            if any(".attn_temp." in k for k in state):
                hint = (
                    "it has temporal attention but no motion convs: a Tune-A-Video-style checkpoint, not LAMP"
                )
            else:
                hint = "it looks like a plain 2-D UNet (no `.conv2d.` nesting): it is not a LAMP checkpoint"
        raise InvalidInput(
            f"{what} is not a complete LAMP UNet of this architecture: " + "; ".join(problems), hint=hint
        )
    wrong = [
        f"{k} {list(state[k].shape)} (expected {list(expected[k].shape)})"
        for k in sorted(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise InvalidInput(
            f"{what}: {len(wrong)} tensor(s) have the wrong shape: "
            + "; ".join(wrong[:_SHOW])
            + ("; ..." if len(wrong) > _SHOW else "")
        )
    import torch

    bad = [k for k in sorted(state) if not bool(torch.isfinite(state[k]).all())]
    if bad:
        raise InvalidInput(f"{what}: {len(bad)} tensor(s) hold NaN or infinity ({_names(bad)})")


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOW]) + (", ..." if len(keys) > _SHOW else "")


@dataclass
class BaseDifference:
    """Frozen tensors of the checkpoint that differ from the given base beyond fp16 rounding."""

    compared: int
    differing: int
    max_abs_diff: float
    worst_key: str | None


def compare_frozen(
    state: Mapping[str, Any], base_state: Mapping[str, Any], tuned: set[str]
) -> BaseDifference:
    """Compare every base tensor the reference does not train (all but `tuned`) with the base.

    `state` is keyed as the VideoUNet (`<site>.conv2d.*`), `base_state` as the 2-D UNet; keys
    are matched through the VideoUNet's naming (every base key maps to exactly one key).
    """
    import torch

    differing, worst, worst_key, compared = 0, 0.0, None, 0
    for key, mine in state.items():
        base_key = key.replace(".conv2d.", ".")
        if key in tuned or base_key not in base_state:
            continue
        ref = base_state[base_key].detach().float().cpu()
        mine = mine.detach().float().cpu()
        compared += 1
        if not torch.allclose(mine, ref, rtol=FP16_RTOL, atol=FP16_ATOL):
            differing += 1
            d = float((mine - ref).abs().max())
            if d > worst:
                worst, worst_key = d, key
    return BaseDifference(compared, differing, worst, worst_key)


def prompt_from_folder(folder_name: str) -> str:
    """The reference's training prompt: the training folder's name with `_` -> space."""
    return folder_name.replace("_", " ").strip()


def import_official(
    path: str | Path,
    *,
    name: str,
    base: str | None = None,
    registry: Registry | None = None,
    force: bool = False,
    prompt: str | None = None,
    dtype: str = "fp16",
    frames: int = REFERENCE_FRAMES,
    width: int = REFERENCE_WIDTH,
    height: int = REFERENCE_HEIGHT,
    progress: Reporter | None = None,
) -> Manifest:
    """Convert an official LAMP motion (a reference `unet/` folder) and publish it as `name`.

    `base`: the SD-1.x model it was tuned from (default: the configured base, SD-1.4 unless
    changed). `prompt`: the motion's training prompt (default: the motion folder's name with
    `_` -> space, as the reference derives it). `dtype`: adapter precision ("fp16" as lamp's own
    motions; "fp32" keeps the released weights bit-exact). Returns the registry manifest; its
    header records the provenance (`lamp.official`: source, config class, key count, sha256 of
    the weights file). Raises InvalidInput for a malformed checkpoint, IncompatibleAdapter for
    one of another architecture, NameTaken without `force`; nothing is stored on error.
    """
    import copy

    import torch

    from .models.video_unet import VideoUNet, is_added_key, is_tuned_base_key

    # 1. validate everything cheap before loading any model
    validate_name(name)
    check_adapter_dtype(dtype)
    registry = registry or Registry()
    if not force and registry.exists(name):
        raise NameTaken(name)
    ckpt = locate(path)
    base_spec = settings.get("base", base)
    progress = reporter_or_null(progress)
    progress.start("import", 5)

    # 2. the base UNet (2-D) and a VideoUNet inflated from a copy of it
    from diffusers import UNet2DConditionModel

    quiet_hf_progress()
    base_dir = resolve_base_path(base_spec)
    base_unet = UNet2DConditionModel.from_pretrained(
        base_dir / "unet", torch_dtype=torch.float32, local_files_only=True
    )
    base_unet.requires_grad_(False).eval()
    check_against_base(ckpt, dict(base_unet.config), base_spec)
    video_unet = VideoUNet.from_unet2d(copy.deepcopy(base_unet))
    expected = video_unet.unet.state_dict()
    progress.advance(1)

    # 3. the checkpoint's tensors, checked against what that VideoUNet expects
    state = load_state_dict(ckpt.weights)
    check_keys(state, expected, what=str(ckpt.weights))
    progress.advance(1)

    # 4. frozen tensors must be the base's; the trained ones are what the adapter keeps
    tuned = {k for k in expected if is_added_key(k) or is_tuned_base_key(k)}
    diff = compare_frozen(state, base_unet.state_dict(), tuned)
    if diff.differing:
        log.warning(
            "%d of %d frozen tensors of %s differ from base '%s' beyond fp16 rounding (largest difference "
            "%.3g, in %s): it was probably tuned from another base. The adapter keeps only the motion layers "
            "and attn1.to_q − base, so with this base the videos will differ from the reference's; pass "
            "--base the model it was trained on",
            diff.differing,
            diff.compared,
            ckpt.weights,
            base_spec,
            diff.max_abs_diff,
            diff.worst_key,
        )
    video_unet.unet.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    del state
    progress.advance(1)

    # 5. the delta, with provenance in the header
    weights_sha = file_sha256(ckpt.weights)
    provenance = {
        "official": True,
        "source": str(ckpt.path.resolve()),
        "weights_file": ckpt.weights.name,
        "weights_file_sha256": weights_sha,
        "config_class": ckpt.config.get("_class_name"),
        "diffusers_version": ckpt.config.get("_diffusers_version"),
        "tensors": len(expected),
        "base_mismatch": {
            "tensors": diff.differing,
            "max_abs_diff": diff.max_abs_diff,
            "worst": diff.worst_key,
        },
        "reference": "github.com/RQ-Wu/LAMP",
    }
    prompt_source = "given" if prompt is not None else f"folder name '{ckpt.motion_folder}'"
    prompt = prompt if prompt is not None else prompt_from_folder(ckpt.motion_folder)
    train = {
        "official": True,
        "prompt": prompt,
        "prompt_source": prompt_source,
        "frames": frames,
        "width": width,
        "height": height,
        "source": provenance["source"],
        # the reference trains attn_temp's output bias from a random init (lamp zero-inits new motions)
        "temporal_out_bias": "random",
    }
    metadata = make_metadata(
        name=name,
        base_spec=base_spec,
        base_fingerprint=fingerprint(base_unet),
        architecture=architecture_of(dict(base_unet.config)),
        frames=frames,
        width=width,
        height=height,
        train=train,
        official=dumps_strict(provenance, what="lamp.official", sort_keys=True),
    )

    torch_dtype = resolve_dtype(dtype)
    adapter = extract(video_unet, base_unet, dtype=torch_dtype, metadata=metadata)
    progress.advance(1)
    manifest = registry.publish_adapter(
        adapter, name=name, force=force, source=f"official:{provenance['source']}"
    )
    progress.advance(1)
    progress.finish()
    return manifest


__all__ = [
    "OfficialCheckpoint",
    "check_config",
    "compare_frozen",
    "import_official",
    "load_state_dict",
    "locate",
    "prompt_from_folder",
]
