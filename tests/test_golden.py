"""Outputs for fixed seeds stay bit-identical: train, gen, animate and edit on the tiny and toy
bases, and sidecars written by earlier versions still replay to the same frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden_cases import DATA, frames_hash, run_all, run_cli


@pytest.fixture
def golden_home(lamp_env: Path, tiny_base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (lamp_env / "bases").mkdir(parents=True)
    (lamp_env / "bases" / "tiny").symlink_to(tiny_base_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_fixed_seed_outputs_and_old_sidecars_are_bit_identical(golden_home: Path) -> None:
    want = json.loads((DATA / "hashes.json").read_text())
    hashes, sidecars = run_all(golden_home / "work")
    assert hashes == want
    # Sidecars as earlier versions wrote them replay to the frames those versions made (the
    # stored ones predate the kept first-frame latent: their frame 1 goes through the VAE again).
    replays = json.loads((DATA / "replays.json").read_text())
    photo = golden_home / "work" / "photo.png"
    for key in ("gen_tiny", "animate_tiny", "gen_toy", "animate_toy"):
        doc = json.loads((DATA / f"{key}.sidecar.json").read_text())
        if doc["first_frame"]["source"] == "image":
            doc["first_frame"]["path"] = str(photo)  # recorded in another temp folder
        sidecar = golden_home / f"old-{key}.json"
        sidecar.write_text(json.dumps(doc))
        out = golden_home / f"replay-{key}"
        run_cli(["gen", "--from-sidecar", str(sidecar), "-o", str(out)])
        assert frames_hash(out) == replays[key], key
    # and today's sidecar replays to today's frames
    out = golden_home / "replay-new-gen_toy"
    run_cli(["gen", "--from-sidecar", str(sidecars["gen_toy"]), "-o", str(out)])
    assert frames_hash(out) == want["gen_toy"]
