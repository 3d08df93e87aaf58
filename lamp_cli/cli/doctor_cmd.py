"""`lamp doctor`: what lamp sees of this machine, its settings, its models and its registry.

Everything is read locally; nothing is downloaded. torch is imported inside the command only.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import typer

from .. import __version__, settings
from ..errors import LampError
from .render import emit_json, out_console, setup_logging

PACKAGES = (
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "huggingface-hub",
    "imageio",
    "imageio-ffmpeg",
    "typer",
    "rich",
)

def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _devices() -> dict[str, Any]:
    info: dict[str, Any] = {"cuda": False, "mps": False, "gpus": [], "selected": "cpu", "error": None}
    try:
        import torch
    except Exception as e:  # a broken torch install is exactly what doctor should report
        info["error"] = f"cannot import torch: {e}"
        return info
    try:
        info["cuda"] = bool(torch.cuda.is_available())
        if info["cuda"]:
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                gpu = {
                    "index": i,
                    "name": props.name,
                    "memory_total": int(props.total_memory),
                    "memory_free": None,
                }
                try:
                    gpu["memory_free"] = int(torch.cuda.mem_get_info(i)[0])
                except Exception:  # some drivers refuse mem_get_info; the total is still useful
                    pass
                info["gpus"].append(gpu)
        mps = getattr(torch.backends, "mps", None)
        info["mps"] = bool(mps is not None and mps.is_available())
    except Exception as e:
        info["error"] = f"device query failed: {e}"
    return info


def _device_report(setting: Any) -> dict[str, Any]:
    """What is there, and the device lamp would use with `setting`, resolved as the engine does."""
    dev = _devices()
    dev["setting"] = setting
    if dev["error"] is None:
        from ..devices import resolve_device

        try:
            dev["selected"] = str(resolve_device(setting))
        except LampError as e:  # e.g. device = cuda on a machine without CUDA: say so, keep going
            dev["selected"], dev["error"] = str(setting), e.message
    elif setting not in (None, "auto"):
        dev["selected"] = str(setting)
    return dev


def model_status(role: str, spec: str, *, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Whether the model `spec` is available locally (built-in, folder, or HF cache); never downloads."""
    from ..models.locate import locate

    found = locate(spec, sub="unet" if role in ("base", "first_frame_model") else None, cache_dir=cache_dir)
    return {"role": role, "spec": spec, "available": found.available,
            "path": str(found.path) if found.path else None, "detail": found.detail}


def collect() -> dict[str, Any]:
    """Everything `lamp doctor` reports, as one JSON-able dict with stable keys."""
    from ..registry import Registry

    cfg_path = settings.config_path()
    config: dict[str, Any] = {"path": str(cfg_path), "exists": cfg_path.exists(), "error": None}
    try:
        resolved = settings.resolve_all()
    except LampError as e:  # a broken config file: report it, show the rest without it
        config["error"] = e.message
        resolved = []
        for key in settings.DEFAULTS:
            try:
                resolved.append(settings.resolve(key, config={}))
            except LampError as e2:
                resolved.append(settings.Resolved(key, None, f"error: {e2.message}"))
    values = {r.key: r.value for r in resolved}

    try:
        import imageio_ffmpeg

        ffmpeg: str | None = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        ffmpeg = None

    registry: dict[str, Any] = {"root": str(settings.lamp_home()), "motions": 0, "ok": True, "problems": []}
    try:
        reg = Registry()
        registry["motions"] = len(reg.names())
        registry["problems"] = [p.to_json() for p in reg.verify()]
    except LampError as e:
        registry["problems"].append({"name": "", "problem": e.message, "path": str(settings.lamp_home())})
    registry["ok"] = not registry["problems"]

    return {
        "lamp": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "ffmpeg": ffmpeg,
        "device": _device_report(values.get("device")),
        "lamp_home": str(settings.lamp_home()),
        "config": config,
        "settings": [{"key": r.key, "value": r.value, "source": r.source} for r in resolved],
        "models": [
            model_status(role, str(values[role]))
            for role in ("base", "first_frame_model", "clip_model")
            if values.get(role) is not None
        ],
        "registry": registry,
    }


def _gb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f} GiB"


def render(report: dict[str, Any]) -> None:
    def line(key: str, value: Any) -> None:
        out_console.print(f"  {key:<20} {value}", highlight=False, soft_wrap=True)

    def mark(ok: bool) -> str:
        return "[green]ok[/green]" if ok else "[red]missing[/red]"

    out_console.print("[bold]environment[/bold]")
    line("lamp", report["lamp"])
    line("python", f"{report['python']} ({report['platform']})")
    for name, v in report["packages"].items():
        line(name, v or "[red]not installed[/red]")
    line("ffmpeg", report["ffmpeg"] or "[red]not found[/red] (video files cannot be written)")

    dev = report["device"]
    out_console.print("[bold]device[/bold]")
    line("selected", f"{dev['selected']} (setting: {dev['setting']})")
    for g in dev["gpus"]:
        line(
            f"cuda:{g['index']}", f"{g['name']}, {_gb(g['memory_total'])} total, {_gb(g['memory_free'])} free"
        )
    if not dev["cuda"]:
        line("cuda", "not available")
    if dev["error"]:
        line("error", f"[red]{dev['error']}[/red]")

    out_console.print("[bold]settings[/bold]")
    line("LAMP_HOME", report["lamp_home"])
    cfg = report["config"]
    line("config file", f"{cfg['path']} ({'present' if cfg['exists'] else 'absent'})")
    if cfg["error"]:
        line("config error", f"[red]{cfg['error']}[/red]")
    for s in report["settings"]:
        line(s["key"], f"{s['value']}  [dim]({s['source']})[/dim]")

    out_console.print("[bold]models[/bold]")
    for m in report["models"]:
        line(m["role"], f"{m['spec']}  {mark(m['available'])}  [dim]{m['detail']}[/dim]")

    reg = report["registry"]
    out_console.print("[bold]registry[/bold]")
    line("root", reg["root"])
    line("motions", reg["motions"])
    if reg["ok"]:
        line("health", "[green]ok[/green]")
    for p in reg["problems"]:
        line("problem", f"[red]{p['name']}: {p['problem']}[/red]")


def cmd_doctor(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Check the environment: versions, devices, settings, local models, registry health.

    Nothing is downloaded. Examples:

      lamp doctor

      lamp doctor --json
    """
    setup_logging()
    report = collect()
    if json_out:
        emit_json(report)
    else:
        render(report)


def register(app: typer.Typer) -> None:
    """Add `lamp doctor` to the app."""
    app.command("doctor")(cmd_doctor)
