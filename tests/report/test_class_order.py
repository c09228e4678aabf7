"""The report lists per-class IU in the run's class order (class 0 first), not in the
alphabetical order the logs keep them in."""

from __future__ import annotations

from omegaconf import OmegaConf

from fcn_lightning.data.splits import load_class_names
from fcn_lightning.report.results import run_result


def test_per_class_scores_follow_the_class_list(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("sky\nroad\ncar\n")
    row = {"step": 3, "val/pixel_acc": 0.9, "val/mean_acc": 0.8, "val/mean_iu": 0.7,
           "val/fw_iu": 0.6, "val_iu/car": 0.1, "val_iu/road": 0.2, "val_iu/sky": 0.3}  # fmt: skip
    cfg = OmegaConf.create({"data": {"classes": str(classes)}})
    result = run_result([row], cfg, default_name="run", path=str(tmp_path))
    assert list(result.per_class) == ["sky", "road", "car"]
    assert result.per_class["sky"] == 30.0
    pascal = run_result([{**row, "val_iu/background": 0.5, "val_iu/aeroplane": 0.4}],
                        OmegaConf.create({"data": {"classes": "pascal"}}),
                        default_name="run", path="x")  # fmt: skip
    names = [n for n in load_class_names("pascal") if n in pascal.per_class]
    assert list(pascal.per_class)[: len(names)] == names
    unreadable = OmegaConf.create({"data": {"classes": str(tmp_path / "gone.txt")}})
    kept = run_result([row], unreadable, default_name="run", path="x")
    assert list(kept.per_class) == ["car", "road", "sky"]  # the logs' order, nothing lost
