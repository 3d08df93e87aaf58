"""Registry commands: list, show, rm, cp, export, import, verify, gc.

Thin: parse, call `lamp_cli.registry.Registry`, render. No torch here (`lamp list` stays fast).
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any

import typer

from ..errors import InvalidInput, MotionNotFound, NameTaken, RegistryError, UsageError
from .render import emit_json, out_console, setup_logging

JSON_HELP = "Print one JSON document on stdout."


def _registry():
    from ..registry import Registry

    setup_logging()
    return Registry()


def human_size(n: int) -> str:
    """Decimal units, like `ollama list` and `du --si`."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def human_age(created: str, now: _dt.datetime | None = None) -> str:
    """'3 minutes ago' from an ISO timestamp (the timestamp itself if it does not parse)."""
    try:
        t = _dt.datetime.fromisoformat(created)
    except (TypeError, ValueError):
        return created or "-"
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    secs = ((now or _dt.datetime.now(_dt.timezone.utc)) - t).total_seconds()
    if secs < 60:
        return "just now"
    for unit, span in (
        ("year", 365 * 86400),
        ("month", 30 * 86400),
        ("week", 7 * 86400),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
    ):
        if secs >= span:
            k = int(secs // span)
            return f"{k} {unit}{'s' if k != 1 else ''} ago"
    return "just now"


def _base_spec(base: Any) -> str:
    return str(base.get("spec", "")) if isinstance(base, dict) else str(base or "")


def cmd_list(
    prefix: str | None = typer.Argument(None, metavar="PREFIX", help="Only names starting with PREFIX."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print names only, one per line."),
) -> None:
    """List the motions in the registry.

    Examples:

      lamp list

      lamp list gui --json

      lamp rm $(lamp list -q old-)
    """
    motions = _registry().list(prefix)
    if json_out:
        emit_json({"motions": [m.to_json() for m in motions]})
        return
    if quiet:
        for m in motions:
            sys.stdout.write(m.name + "\n")
        return
    if not motions:
        from .render import info

        if prefix:
            info(f"No motion name starts with '{prefix}'. `lamp list` shows them all.")
        else:
            info(
                "No motions yet. Make a first one:\n"
                "  lamp demo --keep                         learn a toy motion in about a minute (CPU)\n"
                "  lamp train CLIPS --name NAME             learn one from a folder of clips\n"
                "  lamp import FILE.safetensors             add an exported motion\n"
                "  lamp import --official PATH --name NAME  add a released LAMP checkpoint"
            )
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for col in ("NAME", "ID", "SIZE", "FRAMES", "BASE", "CREATED"):
        table.add_column(col, no_wrap=True)
    for m in motions:
        table.add_row(
            m.name, m.id, human_size(m.size), str(m.frames), _base_spec(m.base), human_age(m.created)
        )
    out_console.print(table)


def cmd_show(
    name: str = typer.Argument(..., metavar="NAME", help="The motion's name."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show a motion's manifest and what its adapter file holds.

    Examples:

      lamp show guitar

      lamp show guitar --json
    """
    info = _registry().show(name)
    if json_out:
        emit_json(info)
        return
    m, a = info["manifest"], info["adapter"]
    rows = [
        ("name", m["name"]),
        ("id", m["id"]),
        ("digest", m["digest"]),
        ("size", f"{human_size(m['size'])} ({m['size']} bytes)"),
        ("created", f"{m['created']} ({human_age(m['created'])})"),
        ("source", m.get("source") or "-"),
        ("base", f"{_base_spec(m['base'])} (fingerprint {m['base'].get('fingerprint', '?')})"),
        ("architecture", a["architecture"]),
        ("frames", str(m["frames"])),
        ("resolution", f"{m['width']}×{m['height']}"),
        ("steps", str(m.get("steps") if m.get("steps") is not None else "-")),
        ("prompt", m.get("prompt") or "-"),
        ("tensors", f"{a['tensors']} ({', '.join(f'{k} {v}' for k, v in sorted(a['groups'].items()))})"),
        ("parameters", f"{a['parameters']:,}"),
        ("dtype", a["dtype"]),
        ("made by", f"lamp {a['lamp_version']} (adapter format {a['format_version']})"),
        ("blob", m["blob_path"]),
        *_official_rows(a.get("extra", {}).get("lamp.official")),
        *_compressed_rows(a.get("extra", {}).get("lamp.compressed")),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        out_console.print(f"{k:<{width}}  {v}", highlight=False, soft_wrap=True)
    train = dict(a["train"])
    evaluation = train.pop("eval", None)
    if train:
        out_console.print("training config:", highlight=False)
        for k, v in sorted(train.items()):
            out_console.print(
                f"  {k}: {json.dumps(v) if not isinstance(v, str) else v}", highlight=False, soft_wrap=True
            )
    if isinstance(evaluation, dict):
        for line in _eval_lines(evaluation):
            out_console.print(line, highlight=False, soft_wrap=True)


def _official_rows(provenance: str | None) -> list[tuple[str, str]]:
    """`lamp show` rows for the `lamp.official` header of an imported official checkpoint."""
    if not provenance:
        return []
    try:
        p = json.loads(provenance)
    except json.JSONDecodeError:
        return [("official", provenance)]
    if not isinstance(p, dict):
        return [("official", provenance)]
    return [
        ("official source", str(p.get("source") or "-")),
        ("config class", str(p.get("config_class") or "-")),
        ("weights sha256", f"{p.get('weights_file_sha256') or '-'} ({p.get('weights_file') or '?'})"),
    ]


def _compressed_rows(field: str | None) -> list[tuple[str, str]]:
    """`lamp show` rows for the `lamp.compressed` header of a `lamp compress` motion."""
    if not field:
        return []
    from ..compress import describe

    try:
        record = json.loads(field)
    except json.JSONDecodeError:
        return [("compressed", field)]
    return list(describe(record).items()) if isinstance(record, dict) else [("compressed", field)]


def _eval_lines(evaluation: dict[str, Any]) -> list[str]:
    """The eval history of `lamp train --eval-every` as a small table, the best step marked."""
    history = [p for p in evaluation.get("history") or [] if isinstance(p, dict)]
    best = (evaluation.get("best") or {}).get("step")
    prompts = evaluation.get("prompts") or []
    head = f"evaluation ({len(history)} point{'s' if len(history) != 1 else ''}"
    head += f", {len(prompts)} prompt{'s' if len(prompts) != 1 else ''}):" if prompts else "):"
    if not history:
        return [head, "  (none)"]

    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"

    cols = ("step", "loss", "alignment", "consistency", "diversity", "")
    rows = [
        (
            str(p.get("step", "?")),
            num(p.get("loss"), ".4f"),
            num(p.get("alignment"), ".4f"),
            num(p.get("consistency"), ".4f"),
            num(p.get("diversity"), ".4f"),
            "best" if p.get("step") == best and not p.get("discarded") else ("discarded" if p.get("discarded") else ""),
        )
        for p in history
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    return [head] + [
        "  " + "  ".join(v.rjust(w) if i < 5 else v for i, (v, w) in enumerate(zip(r, widths, strict=True))).rstrip()
        for r in [cols, *rows]
    ]


def cmd_rm(
    names: list[str] = typer.Argument(..., metavar="NAME...", help="Motion name(s) to delete."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Delete motions (and every blob no other name uses).

    Without --yes, asks on a terminal and refuses when stdin is not one.

    Examples:

      lamp rm guitar

      lamp rm --yes $(lamp list -q old-)
    """
    reg = _registry()
    names = list(dict.fromkeys(names))
    for n in names:  # all or nothing: check every name before deleting any
        if not reg.exists(n):
            raise MotionNotFound(n)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "refusing to delete without confirmation (stdin is not a terminal)", hint="pass --yes"
            )
        what = ", ".join(f"'{n}'" for n in names)
        if not typer.confirm(f"delete {what}?", default=False, err=True):
            raise typer.Exit(1)
    results = [reg.remove(n) for n in names]
    if json_out:
        emit_json(
            {"deleted": [r.to_json() for r in results], "freed_bytes": sum(r.freed_bytes for r in results)}
        )
        return
    for r in results:
        sys.stdout.write(f"deleted '{r.name}'\n")


def cmd_cp(
    src: str = typer.Argument(..., metavar="SRC", help="Existing motion."),
    dst: str = typer.Argument(..., metavar="DST", help="New name (shares the adapter file)."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace DST if it exists."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Give a motion a second name (no data is copied).

    Example:

      lamp cp guitar guitar-v1
    """
    m = _registry().copy(src, dst, force=force)
    if json_out:
        emit_json({"copied": {"src": src, "dst": dst}, "manifest": m.to_json()})
        return
    sys.stdout.write(f"copied '{src}' to '{dst}'\n")


def cmd_export(
    name: str = typer.Argument(..., metavar="NAME", help="The motion to export."),
    output: Path = typer.Option(..., "--output", "-o", help="File (or folder) to write the .safetensors to."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite an existing file."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Write a motion as one self-describing .safetensors file.

    The file is byte-identical to the registry's blob; `lamp import` reads it back.

    Example:

      lamp export guitar -o guitar.safetensors
    """
    reg = _registry()
    m = reg.manifest(name)  # an unknown name is the first thing to report
    dest = output / f"{name}.safetensors" if output.is_dir() else output
    if dest.exists() and not force:
        raise InvalidInput(f"{dest} already exists", hint="pass --force to overwrite it")
    path = reg.export(name, dest)
    if json_out:
        emit_json({"name": name, "path": str(path), "digest": m.digest, "size": path.stat().st_size})
        return
    sys.stdout.write(f"exported '{name}' to {path} ({human_size(path.stat().st_size)})\n")


def cmd_import(
    file: Path = typer.Argument(
        ..., metavar="FILE", help="A lamp .safetensors adapter (or, with --official, a LAMP checkpoint)."
    ),
    name: str | None = typer.Option(
        None, "--name", "-n", help="Name to store it under (default: the file's own)."
    ),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing motion of that name."),
    official: bool = typer.Option(
        False, "--official", help="FILE is an official LAMP checkpoint (folder or file) to convert."
    ),
    base: str | None = typer.Option(
        None, "--base", help="With --official: the base model it was trained on."
    ),
    prompt: str | None = typer.Option(
        None, "--prompt", help="With --official: its training prompt (default: the folder name, _ as space)."
    ),
    dtype: str = typer.Option(
        "fp16", "--dtype", help="With --official: adapter precision, fp16 | bf16 | fp32 (fp32 keeps it bit for bit)."
    ),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Add an adapter file to the registry, after checking it.

    The file must be a safetensors file with lamp's header; its tensors' names, shapes, dtypes and hash are checked before anything is stored.

    Examples:

      lamp import guitar.safetensors

      lamp import friend.safetensors --name guitar-friend

      lamp import --official ./checkpoints/horse-run --name horse-run
    """
    reg = _registry()
    if official:
        if not name:
            raise UsageError(
                "--official needs --name", hint="e.g. lamp import --official PATH --name horse-run"
            )
        from ..registry import validate_name

        validate_name(name)
        if not force and reg.exists(name):
            raise NameTaken(name)
        from ..official import import_official

        m = import_official(file, name=name, base=base, registry=reg, force=force, prompt=prompt, dtype=dtype)
    else:
        if base is not None or prompt is not None:
            raise UsageError(
                "--base and --prompt only apply with --official", hint="a lamp adapter records its own base and prompt"
            )
        m = reg.import_file(file, name=name, force=force)
    if json_out:
        emit_json({"imported": m.to_json()})
        return
    sys.stdout.write(f"imported '{m.name}' ({m.id}, {human_size(m.size)})\n")


def cmd_verify(
    name: str | None = typer.Argument(None, metavar="NAME", help="Check only this motion."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Rehash adapter files against their manifests; exit 1 if anything is damaged.

    Examples:

      lamp verify

      lamp verify guitar --json
    """
    reg = _registry()
    checked = 1 if name is not None else len(reg.names())
    problems = reg.verify(name)
    if json_out:
        emit_json({"checked": checked, "ok": not problems, "problems": [p.to_json() for p in problems]})
    else:
        for p in problems:
            sys.stdout.write(f"{p.name}: {p.problem}\n")
        if not problems:
            sys.stdout.write(f"ok: {checked} motion{'s' if checked != 1 else ''} verified\n")
    if problems:
        raise RegistryError(
            f"{len(problems)} of {checked} motion{'s' if checked != 1 else ''} failed verification",
            hint="`lamp rm NAME` a damaged motion, then re-import or re-train it",
        )


def cmd_gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Remove stale temp files, adapter files no motion uses, edit caches of deleted motions,
    empty run folders, and converted single-file bases whose checkpoint file is gone; list the
    converted bases kept.

    A temp file is stale once untouched for a minute and its writing process is gone (or
    untouched for a day): a running `lamp train` or import keeps its own.

    Example:

      lamp gc --dry-run
    """
    from ..models.single_file import cached_conversions, gc_conversions

    report = _registry().gc(dry_run=dry_run)
    report.removed_bases, freed = gc_conversions(dry_run=dry_run)
    report.freed_bytes += freed
    kept = [c for c in cached_conversions() if c["folder"] not in report.removed_bases]
    if json_out:
        emit_json({**report.to_json(), "converted_bases": kept})
        return
    verb = "would remove" if dry_run else "removed"
    for p in report.removed_temp + report.removed_blobs + report.removed_edits + report.removed_runs + report.removed_bases:
        sys.stdout.write(f"{verb} {p}\n")
    for c in kept:
        sys.stdout.write(f"kept converted base {c['folder']} ({human_size(c['bytes'])}, from {c['source']})\n")
    if report.removed_bases or kept:
        sys.stdout.write(f"{verb} {len(report.removed_bases)} converted base(s) of missing checkpoint files, "
                         f"kept {len(kept)}\n")
    sys.stdout.write(
        f"{verb} {len(report.removed_temp)} temp file(s), {len(report.removed_blobs)} unused blob(s), "
        f"{len(report.removed_edits)} edit cache(s) of deleted motions and {len(report.removed_runs)} "
        f"empty run folder(s), {human_size(report.freed_bytes)}\n"
    )


def register(app: typer.Typer) -> None:
    """Add the registry commands to the app."""
    app.command("list")(cmd_list)
    app.command("show")(cmd_show)
    app.command("rm")(cmd_rm)
    app.command("cp")(cmd_cp)
    app.command("export")(cmd_export)
    app.command("import")(cmd_import)
    app.command("verify")(cmd_verify)
    app.command("gc")(cmd_gc)
