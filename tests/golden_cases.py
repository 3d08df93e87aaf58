"""Fixed-seed runs of `lamp train`, `gen`, `animate` and `edit` on the tiny and toy bases whose
outputs must not change across refactors (hashes recorded in tests/data/golden/hashes.json)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "golden"


def run_cli(argv: list[str]) -> dict:
    import contextlib
    import io

    from lamp_cli.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            if e.code not in (0, None):
                raise AssertionError(f"lamp {' '.join(argv)} exited {e.code}: {err.getvalue()}") from None
    text = out.getvalue()
    return json.loads(text) if text.strip().startswith("{") else {"stdout": text}


def frames_hash(path: str | Path) -> str:
    """sha256 of the decoded pixels of a frames folder (png files in order)."""
    from PIL import Image

    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*.png")):
        h.update(np.asarray(Image.open(f).convert("RGB")).tobytes())
    return h.hexdigest()


def adapter_hash(name: str) -> str:
    """sha256 of a registry motion's tensors (names, dtypes, shapes and bytes; not its metadata)."""
    from safetensors.numpy import load_file

    from lamp_cli.registry import Registry

    reg = Registry()
    path = reg.blob_path(reg.get(name).digest)
    tensors = load_file(str(path))
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k]
        h.update(f"{k}|{t.dtype}|{t.shape}".encode())
        h.update(np.ascontiguousarray(t).tobytes())
    return h.hexdigest()


def write_square_clips(folder: Path, n: int = 2, num_frames: int = 7) -> Path:
    from lamp_cli.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        frames = np.zeros((num_frames, 32, 32, 3), np.uint8)
        for t in range(num_frames):
            frames[t, 12:20, (3 * t + k) % 24 : (3 * t + k) % 24 + 8] = 255
        write_video(frames, folder / f"c{k}.mp4", fps=8)
    return folder


def write_photo(path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), "RGB").save(path)
    return path


TINY_TRAIN = ["--frames", "4", "--width", "32", "--height", "32", "--seed", "3", "--checkpoint-every", "0",
              "--steps", "2"]
SAMPLE = ["--frames", "4", "--steps", "2", "--device", "cpu"]


def run_all(work: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """Every golden case in `work` (LAMP_HOME must point into it, `bases/tiny` available).
    Returns the hashes and the sidecars written."""
    hashes: dict[str, str] = {}
    sidecars: dict[str, Path] = {}
    clips = write_square_clips(work / "square_moves_right")
    run_cli(["train", str(clips), "--name", "sq", "--base", "tiny", *TINY_TRAIN, "--json"])
    hashes["train_tiny"] = adapter_hash("sq")
    doc = run_cli(["gen", "sq", "a red square", *SAMPLE, "--seed", "5", "-o", str(work / "gen_tiny"), "--json"])
    hashes["gen_tiny"] = frames_hash(doc["videos"][0]["path"])
    sidecars["gen_tiny"] = Path(doc["videos"][0]["sidecar"])
    photo = write_photo(work / "photo.png")
    doc = run_cli(["animate", str(photo), "-m", "sq", *SAMPLE, "--seed", "6", "--shared-noise", "0.3",
                   "--guidance", "7", "-o", str(work / "anim_tiny"), "--json"])
    hashes["animate_tiny"] = frames_hash(doc["videos"][0]["path"])
    sidecars["animate_tiny"] = Path(doc["videos"][0]["sidecar"])
    video = clips / "c0.mp4"
    doc = run_cli(["edit", str(video), "a red square moves right", "--base", "tiny", "--device", "cpu",
                   "--frames", "3", "--stride", "2", "--width", "32", "--height", "32", "--steps", "2",
                   "--ddim-steps", "2", "--inversion-refine", "1", "--seed", "1", "--name", "ed",
                   "-o", str(work / "edit_tiny"), "--json"])
    hashes["edit_tiny"] = frames_hash(doc["path"])
    hashes["edit_tiny_adapter"] = adapter_hash("ed")
    # the toy base
    run_cli(["train", str(clips), "--name", "sqtoy", "--base", "toy", "--frames", "4", "--width", "32",
             "--height", "32", "--seed", "4", "--checkpoint-every", "0", "--steps", "1", "--json"])
    hashes["train_toy"] = adapter_hash("sqtoy")
    doc = run_cli(["gen", "sqtoy", "a red square on a blue background", *SAMPLE, "--width", "32", "--height", "32",
                   "--seed", "7", "-o", str(work / "gen_toy"), "--json"])
    hashes["gen_toy"] = frames_hash(doc["videos"][0]["path"])
    sidecars["gen_toy"] = Path(doc["videos"][0]["sidecar"])
    doc = run_cli(["animate", str(photo), "-m", "sqtoy", *SAMPLE, "--seed", "8", "--no-adain",
                   "-o", str(work / "anim_toy"), "--json"])
    hashes["animate_toy"] = frames_hash(doc["videos"][0]["path"])
    sidecars["animate_toy"] = Path(doc["videos"][0]["sidecar"])
    return hashes, sidecars


def record(work: Path) -> None:
    """Write tests/data/golden/{hashes.json, *.sidecar.json} (run once, before a refactor)."""
    hashes, sidecars = run_all(work)
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / "hashes.json").write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")
    (DATA / "replays.json").write_text(json.dumps({k: hashes[k] for k in sidecars}, indent=2, sort_keys=True) + "\n")
    for key, path in sidecars.items():
        shutil.copy(path, DATA / f"{key}.sidecar.json")
