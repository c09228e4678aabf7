"""The error boundary: user errors exit 2 with one line, bugs exit 1 with their traceback
and one line saying so, and a multirun records either kind and goes on to its other jobs."""

from __future__ import annotations

from tests.bad_input.harness import run_entry
from tests.train_helpers import run_module, sweep_overrides, tiny_overrides

BUG = "error: internal error (a bug in fcn-lightning, not in your input): RuntimeError: "
PLANT = ["+callbacks.bug._target_=tests.fault_helpers.RaiseAt"]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_a_bug_keeps_its_traceback_and_exits_1(data_dir, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "run"
    status = run_entry("train", [*tiny_overrides(data_dir, run), *PLANT, "+callbacks.bug.step=1"],
                       monkeypatch)  # fmt: skip
    err = capfd.readouterr().err
    assert status == 1, err[-2000:]
    assert "Traceback (most recent call last)" in err
    assert error_lines(err) == [f"{BUG}a bug planted at step 1; please report it with the "
                                "traceback above"]  # fmt: skip
    assert (run / "config_resolved.yaml").is_file()  # a run that had started is kept


def test_a_multirun_records_a_bug_and_a_user_error_and_runs_its_good_job(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_module(
        "fcn_lightning.train", "-m", *sweep_overrides(data_dir, sweep), *PLANT,
        "+callbacks.bug.step=1,99", "optim.lr=0.001,abc", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )  # fmt: skip
    # Jobs: (step 1, lr 0.001) a bug; (1, abc) and (99, abc) user errors; (99, 0.001) runs.
    assert done.returncode == 1, done.stderr[-3000:]  # a bug among the failures: status 1
    failed = {p.parent.name: p.read_text() for p in sweep.glob("*/FAILED.txt")}
    assert len(failed) == 3, failed
    bugs = [text for text in failed.values() if text.startswith("internal error")]
    assert len(bugs) == 1 and "RuntimeError: a bug planted at step 1" in bugs[0]
    assert "Traceback" in bugs[0]  # the bug's record keeps its traceback
    users = [text for text in failed.values() if text.startswith("optim.lr='abc'")]
    assert len(users) == 2
    finished = list(sweep.glob("*/metrics.md"))
    assert len(finished) == 1 and "FAILED.txt" not in {p.name for p in finished[0].parent.iterdir()}
    summary = done.stderr[done.stderr.index("error: 3 job(s) of this multirun failed:") :]
    assert summary.count("internal error") == 1 and summary.count("optim.lr='abc'") == 2


def test_a_multirun_of_user_errors_only_exits_2(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_module(
        "fcn_lightning.train", "-m", *sweep_overrides(data_dir, sweep), "optim.momentum=2,3",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(list(sweep.glob("*/FAILED.txt"))) == 2
    assert "Traceback" not in done.stderr


def test_a_failed_start_removes_only_the_run_dir_it_created(data_dir, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    new, kept = tmp_path / "new", tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    for run in (new, kept):
        status = run_entry("train", [*tiny_overrides(data_dir, run), "optim.lr=-1"], monkeypatch)
        assert status == 2
    assert not new.exists()
    assert (kept / "notes.txt").read_text() == "mine"  # a folder that was there stays
    assert len(error_lines(capfd.readouterr().err)) == 2


def test_a_failed_start_removes_the_empty_parents_it_made_and_no_others(
    data_dir, tmp_path, monkeypatch, capfd
):
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "logs" / "train" / "runs" / "a"  # logs/ itself is new
    assert run_entry("train", [*tiny_overrides(data_dir, first), "optim.lr=-1"], monkeypatch) == 2
    assert list(tmp_path.iterdir()) == []  # not even an empty logs/train/runs
    (tmp_path / "logs" / "other").mkdir(parents=True)  # another run's folder
    second = tmp_path / "logs" / "train" / "runs" / "b"
    assert run_entry("train", [*tiny_overrides(data_dir, second), "optim.lr=-1"], monkeypatch) == 2
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["other"]
    assert len(error_lines(capfd.readouterr().err)) == 2
