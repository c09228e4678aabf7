"""`report --wandb`: the same report from W&B runs as from the local CSV records.

No network here, so `wandb.Api` is replaced by a fake that serves what our WandbLogger
logs: the resolved config under ``config``, rows with ``trainer/global_step``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from fcn_lightning.report.cli import main as report_main
from tests.run.test_studies import _fake_run


def _val(step, miu, disc=0.2):
    return {"step": step, "val/pixel_acc": 0.9, "val/mean_acc": 0.8, "val/mean_iu": miu,
            "val/fw_iu": 0.85, "val_iu/background": 0.9, "val_iu/disc": disc}  # fmt: skip


# name -> (config, validation rows)
RUNS = {
    "fcn8s_staged/fcn32s": ({"model": {"name": "fcn32s"}}, [_val(99, 0.2), _val(199, 0.3)]),
    "fcn8s_staged/fcn16s": ({"model": {"name": "fcn16s"}}, [_val(149, 0.4)]),
    "fcn8s_staged": (
        {"model": {"name": "fcn8s_staged", "init_stages": ["fcn32s", "fcn16s"]}},
        [_val(49, 0.5), _val(99, 0.6)],
    ),
    "pool3": ({"model": {"name": "pool3"}}, [_val(99, 0.1, disc=0.0)]),
}


class FakeApi:
    def __init__(self, runs):
        self._runs, self.asked = runs, []

    def runs(self, path, filters=None):
        self.asked.append((path, filters))
        return self._runs


def _wandb_run(name, config, rows):
    history = [{"trainer/global_step": 0, "train/loss": 2.0}]  # a train row
    history += [{"trainer/global_step": r["step"], "_step": i, **r} for i, r in enumerate(rows)]
    for row in history[1:]:
        del row["step"]
    full = {"config": {"group": "mini_paper", "run_name": name, "task_name": "train", **config}}
    return SimpleNamespace(
        name=name, id=name.replace("/", "-"), url=f"https://wandb.ai/me/fcn/runs/{name}",
        config=full, scan_history=lambda: iter(history),
    )  # fmt: skip


def test_wandb_report_equals_the_csv_report_of_the_same_runs(tmp_path, monkeypatch):
    import wandb

    # The same runs on disk, laid out as a multirun with a staged job.
    sweep = tmp_path / "sweep"
    _fake_run(sweep / "0_fcn8s_staged" / "stages", "0_fcn32s", "mini_paper", "fcn32s",
              RUNS["fcn8s_staged/fcn32s"][1])  # fmt: skip
    _fake_run(sweep / "0_fcn8s_staged" / "stages", "1_fcn16s", "mini_paper", "fcn16s",
              RUNS["fcn8s_staged/fcn16s"][1])  # fmt: skip
    _fake_run(sweep, "0_fcn8s_staged", "mini_paper", "fcn8s_staged", RUNS["fcn8s_staged"][1])
    _fake_run(sweep, "1_pool3", "mini_paper", "pool3", RUNS["pool3"][1])
    assert report_main([str(sweep), "--out", str(tmp_path / "disk")]) == 0

    api = FakeApi([_wandb_run(name, cfg, rows) for name, (cfg, rows) in RUNS.items()])
    monkeypatch.setattr(wandb, "Api", lambda **kwargs: api)
    out = tmp_path / "cloud"
    assert report_main(["--wandb", "me/fcn", "--group", "mini_paper", "--out", str(out)]) == 0
    assert api.asked == [("me/fcn", {"group": "mini_paper"})]

    def rows(folder):
        return [
            {k: v for k, v in r.items() if k not in ("name", "path")}
            for r in json.loads((folder / "report.json").read_text())
        ]

    assert rows(out) == rows(tmp_path / "disk")
    assert [r["name"] for r in json.loads((out / "report.json").read_text())] == [
        "fcn8s_staged/fcn32s", "fcn8s_staged/fcn16s", "fcn8s_staged", "pool3",
    ]  # fmt: skip
    assert (out / "miou_curves.png").is_file() and (out / "per_class_iu.png").is_file()


def test_wandb_without_runs_or_access_is_a_one_line_error(monkeypatch, capsys):
    import wandb

    monkeypatch.setattr(wandb, "Api", lambda **kwargs: FakeApi([]))
    assert report_main(["--wandb", "me/fcn", "--group", "nope"]) == 2

    def refuse(**kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "Api", refuse)
    assert report_main(["--wandb", "me/fcn"]) == 2
    assert report_main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "no validated training runs in group 'nope'" in err[0]
    assert "wandb login" in err[1]
    assert "--wandb ENTITY/PROJECT" in err[2]
