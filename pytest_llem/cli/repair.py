"""``repair STUDY_DIR...``: make a study's manifest agree with the records on disk.

Needed after what no atomic write can prevent: a manifest truncated by another tool or a hand
edit, a disk that filled up between a cell's record and the manifest saying so, a session
killed while a cell ran. The records are the truth (each was written whole before the manifest
said "completed"); the plan (``_study-artefacts/plan.json``) lists what the study meant to
run. A study a live session is running is left alone. ``--llem-resume`` repairs on its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytest_llem.cli.common import Commands, UsageProblem, emit_json, emit_lines, existing_path


def add_parser(commands: Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "repair",
        help="rebuild a study's manifest from its plan and the records on disk",
        description="Rebuild manifest.json of each STUDY_DIR from the study's plan and the result.json files on disk:"
        " cells with a record are completed, cells cut off by a killed session are failed (interrupted), a"
        " corrupt manifest is kept beside the new one as manifest.json.corrupt-<time>. Studies a running"
        " session holds are left alone.",
    )
    parser.add_argument("study_dirs", nargs="+", type=Path, metavar="STUDY_DIR", help="a study directory")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pytest_llem.results.repair import StudyInUse, repair

    report: list[dict[str, object]] = []
    lines: list[str] = []
    for study_dir in args.study_dirs:
        path = existing_path(Path(study_dir), "study directory")
        if not path.is_dir() or not ((path / "manifest.json").exists() or (path / "_study-artefacts").is_dir()):
            raise UsageProblem(f"{path} is not a study directory (no manifest.json, no _study-artefacts/)")
        try:
            rebuilt = repair(path)
        except StudyInUse as exc:
            raise UsageProblem(str(exc)) from None
        summary = rebuilt.manifest["summary"]
        report.append({"study_dir": str(path), "changes": rebuilt.changes, "summary": summary})
        counts = ", ".join(f"{summary[k]} {k}" for k in ("completed", "failed", "skipped", "pending") if summary[k])
        lines.append(f"{path}: {'repaired' if rebuilt.changes else 'already consistent'} ({counts or 'no cells'})")
        lines += [f"  {change}" for change in rebuilt.changes]
    if args.json:
        emit_json({"studies": report})
    else:
        emit_lines(lines)
    return 0
