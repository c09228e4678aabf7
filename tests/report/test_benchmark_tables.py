"""The report's rows for the other benchmarks: the paper's numbers picked by the study's
row key (NYUDv2's input and net), blank where docs/paper.md records no value, and the
columns beyond the four (mean_iu_present, a further head's scores) read from the logs."""

from __future__ import annotations

from omegaconf import OmegaConf

from fcn_lightning.interop.zoo_registry import load_registry
from fcn_lightning.report.results import (
    PAPER_CONTEXT,
    PAPER_NYUD,
    PAPER_SIFTFLOW,
    markdown,
    run_result,
)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip()[1:-1].split("|")]


ROW = {"step": 9, "val/pixel_acc": 0.5, "val/mean_acc": 0.4, "val/mean_iu": 0.25,
       "val/fw_iu": 0.35}  # fmt: skip


def _run(study: str, row: dict, **cfg):
    config = OmegaConf.create({"group": study, "run_name": cfg.pop("name", "r"), **cfg})
    return run_result([row], config, default_name="r", path="r")


def test_nyud_rows_are_keyed_by_input_and_net():
    fused = _run("study_nyud", ROW, data={"input": "color_hha"}, model={"name": "fcn16s_staged"})
    assert fused.key == "color_hha/fcn16s_staged"
    assert fused.paper == ("FCN-16s RGB-HHA", 65.4, None, 34.0, None)
    hha = _run("study_nyud", ROW, data={"input": "hha"}, model={"name": "fcn32s"})
    assert hha.paper[3] == 24.2
    # A row the paper has no number for has no paper row (not a wrong one).
    assert _run("study_nyud", ROW, data={"input": "depth"}, model={"name": "fcn32s"}).paper is None
    # No input in the config: no key, no paper row.
    assert _run("study_nyud", ROW, model={"name": "fcn32s"}).paper is None


def test_siftflow_shows_the_geometric_head_and_the_present_class_mean():
    row = {**ROW, "val/mean_iu_present": 0.3, "val/geo/pixel_acc": 0.9, "val/geo/mean_iu": 0.6,
           "val_iu/sky": 0.7, "val_iu/geo/sky": 0.8, "val/loss": 2.0}  # fmt: skip
    run = _run("study_siftflow", row, model={"name": "fcn16s_staged"})
    assert run.extra == {"mean_iu_present": 30.0, "geo/pixel_acc": 90.0, "geo/mean_iu": 60.0}
    assert run.per_class == {"sky": 70.0}  # the first head's classes only
    assert run.paper_extra == {"geo/pixel_acc": 94.3}
    table = markdown([run], "SIFT Flow")
    head, _, line = table.splitlines()[2:5]
    columns, cells = _cells(head), _cells(line)
    assert columns[6:9] == ["mean iu present", "geo/mean iu", "geo/pixel acc"]
    assert cells[2:9] == ["50.0", "40.0", "25.0", "35.0", "30.0", "60.0", "90.0"]
    # The paper's side: its four, then its geometric accuracy.
    assert columns[-6:] == ["paper row", "pixel acc", "mean acc", "mean IU", "f.w. IU",
                            "geo/pixel acc"]  # fmt: skip
    assert cells[-6:] == ["FCN-16s", "85.2", "51.7", "39.5", "76.1", "94.3"]
    assert "SIFT Flow test" in table


def test_pascal_context_blank_paper_cells_and_the_voc_table_unchanged():
    run = _run("study_pascal_context", ROW, model={"name": "fcn8s_staged"})
    cells = _cells(markdown([run], "ctx").splitlines()[4])
    assert cells[-5:] == ["FCN-8s", "", "", "35.1", ""]
    voc = _run("study_skips", ROW, model={"name": "fcn32s"})
    table = markdown([voc], "voc")
    assert "mean iu present" not in table and "PASCAL VOC seg11valid" in table
    assert _cells(table.splitlines()[4])[-4:] == ["90.5", "76.5", "63.6", "83.5"]


# The zoo's released models of the other benchmarks and their rows of the paper's tables.
ZOO_ROWS = {
    "pascalcontext-fcn32s": (PAPER_CONTEXT, "fcn32s"),
    "pascalcontext-fcn16s": (PAPER_CONTEXT, "fcn16s"),
    "pascalcontext-fcn8s": (PAPER_CONTEXT, "fcn8s"),
    "nyud-fcn32s-color": (PAPER_NYUD, "color/fcn32s"),
    "nyud-fcn32s-hha": (PAPER_NYUD, "hha/fcn32s"),
    "nyud-fcn32s-color-hha": (PAPER_NYUD, "color_hha/fcn32s"),
    "siftflow-fcn16s": (PAPER_SIFTFLOW, "fcn16s"),
}
SPLITS = {"pascal_context": "pascal_context_val", "nyud": "nyud_test", "siftflow": "siftflow_test"}


def test_the_zoo_records_the_papers_scores_of_every_released_benchmark_model():
    models = load_registry().entries
    for name, (table, key) in ZOO_ROWS.items():
        entry = models[name]
        _, pixel_acc, mean_acc, mean_iu, fw_iu = table[key]
        expected = {"pixel_acc": pixel_acc, "mean_acc": mean_acc, "mean_iu": mean_iu,
                    "fw_iu": fw_iu}  # fmt: skip
        recorded = {k: v for k, v in entry.scores.items() if k in expected}
        assert recorded == {k: v for k, v in expected.items() if v is not None}, name
        assert entry.scores["split"] == SPLITS[entry.data], name
        assert f"mean IU {mean_iu} ({SPLITS[entry.data]})" == entry.scores_text()
    assert models["siftflow-fcn16s"].scores["geo_pixel_acc"] == 94.3
    # The paper reports no SIFT Flow FCN-32s or FCN-8s: those say so instead.
    for name in ("siftflow-fcn32s", "siftflow-fcn8s"):
        assert models[name].scores == {} and "not recorded" in models[name].scores_note
