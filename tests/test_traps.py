"""What a finished or interrupted output folder leaves behind for its operator: no scratch next to
a mix's token shards, one count of epochs, and no folder that looks finished when it is not."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from refinery.engine.output import claim_output
from support import REPO, run_cli_inprocess
from test_mix import small_mix

SUMMARIES = ("stats.json", "report.html", "tokens/manifest.json", "README.md")


def untimed(value):
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k != "seconds"}
    return [untimed(v) for v in value] if isinstance(value, list) else value


def mix_files(out: Path) -> dict:
    """The mix's outputs that must not change (stats.json without its timings)."""
    files = {str(p.relative_to(out)): p.read_bytes() for folder in ("tokens", "documents", "heldout")
             for p in sorted((out / folder).rglob("*")) if p.is_file()}
    stats = untimed(json.loads((out / "stats.json").read_text()))
    return {**files, "README.md": (out / "README.md").read_bytes(), "stats.json": stats}


@pytest.fixture(scope="module")
def finished_mix(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("mix")
    config = small_mix(folder)
    out = folder / "out"
    result = run_cli_inprocess("run", config, "--output", out, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr
    return config, out


# --- tokens/_work ---------------------------------------------------------------------------------

def test_a_finished_mix_leaves_no_scratch_in_tokens(finished_mix):
    _, out = finished_mix
    assert not (out / "tokens" / "_work").exists()
    names = {p.name for p in (out / "tokens").iterdir()}
    assert "manifest.json" in names and all(n == "manifest.json" or n.startswith("part-") for n in names)


def test_a_finished_mix_run_again_does_nothing_again(finished_mix):
    config, out = finished_mix  # in place: markers name the folder's own paths
    before = {p: p.stat().st_mtime_ns for folder in ("tokens", "documents", "sources", "_markers")
              for p in (out / folder).rglob("*") if p.is_file()}
    before.update({out / name: (out / name).stat().st_mtime_ns for name in ("stats.json", "README.md")})
    result = run_cli_inprocess("run", config, "--output", out, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stderr
    assert not (out / "tokens" / "_work").exists()  # nothing was tokenized again
    assert {p: p.stat().st_mtime_ns for p in before} == before


def stopped_at(step: str, config: Path, out: Path, monkeypatch) -> None:
    """Runs the mix into ``out`` until ``refinery.mix.driver``'s ``step`` is called: an interrupt there."""
    from refinery.mix import driver

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, step, interrupted)
    assert run_cli_inprocess("run", config, "--output", out, "--scheduler", "sync").returncode == 130
    monkeypatch.undo()


def test_a_mix_stopped_before_its_summary_resumes_without_redoing_the_writes(finished_mix, tmp_path, monkeypatch):
    """Killed after the output files are written, before manifest and stats.json: its scratch is
    still there, so the rerun writes only the summary."""
    config, reference = finished_mix
    out = tmp_path / "out"
    stopped_at("_write_summary", config, out, monkeypatch)
    assert (out / "tokens" / "_work").is_dir() and not (out / "stats.json").exists()
    written = {p: p.stat().st_mtime_ns for p in (out / "tokens").glob("part-*")}
    assert written
    result = run_cli_inprocess("run", config, "--output", out, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr
    assert {p: p.stat().st_mtime_ns for p in written} == written
    assert not (out / "tokens" / "_work").exists()
    assert mix_files(out) == mix_files(reference)


def test_a_mix_stopped_once_its_scratch_is_gone_still_finishes(finished_mix, tmp_path, monkeypatch):
    """Killed between removing tokens/_work and recording that the mix finished: the rerun
    tokenizes again and gives the same bytes."""
    config, reference = finished_mix
    out = tmp_path / "out"
    stopped_at("run_task", config, out, monkeypatch)
    assert not (out / "tokens" / "_work").exists() and not (out / "_markers" / "mix" / "finished.done").exists()
    result = run_cli_inprocess("run", config, "--output", out, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr
    assert "nothing to do" not in result.stderr
    assert mix_files(out) == mix_files(reference)


# --- epochs -----------------------------------------------------------------------------------------

def test_the_card_and_the_report_show_the_epochs_of_stats_json(finished_mix):
    _, out = finished_mix
    sources = json.loads((out / "stats.json").read_text())["sources"]
    assert any(s["epochs"] >= 1 and s["partial_key_threshold"] > 0 for s in sources.values())  # the case at issue
    card = (out / "README.md").read_text()
    header = next(line for line in card.splitlines() if line.startswith("| source |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    report = html.unescape((out / "report.html").read_text())
    report_header = re.search(r"<tr><th>source</th>(.*?)</tr>", report).group(1)
    report_columns = re.findall(r"<th>(.*?)</th>", report_header)
    for name, source in sources.items():
        row = next(line for line in card.splitlines() if line.startswith(f"| {name} |"))
        cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))
        assert cells["whole epochs"] == str(source["epochs"]), (name, cells)
        assert float(cells["passes"]) == pytest.approx(source["tokens"] / source["available_tokens"], abs=0.005)
        report_row = re.search(rf"<tr><td>{re.escape(name)}</td>(.*?)</tr>", report).group(1)
        report_cells = dict(zip(report_columns, re.findall(r"<td>(.*?)</td>", report_row)))
        assert report_cells["whole epochs"] == cells["whole epochs"] and report_cells["passes"] == cells["passes"]


# --- --force ----------------------------------------------------------------------------------------

def test_a_forced_mix_killed_right_after_it_starts_does_not_look_finished(finished_mix, tmp_path):
    config, reference = finished_mix
    out = tmp_path / "out"
    shutil.copytree(reference, out)  # keeps modification times: its markers are older than `started`
    started = time.time_ns()
    command = [sys.executable, "-m", "refinery", "run", str(config), "--output", str(out), "--scheduler", "sync",
               "--force"]
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=os.environ.copy(), start_new_session=True)
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:  # the first marker of this run: it is under way
        if any(p.stat().st_mtime_ns > started for p in (out / "_markers").rglob("*.done") if p.exists()):
            os.killpg(run.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL, "the forced run ended before it wrote a marker"
    for name in SUMMARIES:
        assert not (out / name).exists(), name
    assert (out / "tokens").glob("part-*")  # outputs stay until rewritten; only what says "finished" goes


def test_force_removes_only_refinerys_summaries(tmp_path):
    ours = tmp_path / "ours"
    (ours / "_markers").mkdir(parents=True)
    (ours / "sources" / "web" / "_markers").mkdir(parents=True)
    (ours / "tokens").mkdir()
    for name in [*SUMMARIES, "ablation.json", "ablation.md", "ablation.png", "sources/web/stats.json"]:
        (ours / name).write_text("A pretraining mix built with refinery" if name == "README.md" else "{}")
    (ours / "notes.md").write_text("mine")
    with claim_output(str(ours), force=True):
        pass
    assert sorted(p.name for p in ours.iterdir() if p.is_file()) == [".refinery-output.json", "notes.md"]
    assert not (ours / "tokens" / "manifest.json").exists() and not (ours / "sources" / "web" / "stats.json").exists()

    theirs = tmp_path / "theirs"  # not refinery's folder: --force takes it, but nothing in it is refinery's
    theirs.mkdir()
    for name in ("stats.json", "report.html", "README.md"):
        (theirs / name).write_text("A pretraining mix built with refinery")
    with claim_output(str(theirs), force=True):
        pass
    assert all((theirs / name).exists() for name in ("stats.json", "report.html", "README.md"))

    readme = tmp_path / "readme"  # a README.md that is not the mix card stays
    (readme / "_markers").mkdir(parents=True)
    (readme / "README.md").write_text("# my notes")
    with claim_output(str(readme), force=True):
        pass
    assert (readme / "README.md").read_text() == "# my notes"
