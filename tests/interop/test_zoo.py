"""The reference model zoo (`fcn_lightning.interop.zoo`, ``model_zoo=``, ``zoo:``).

A local HTTP server started here (Range requests honoured, every request logged) serves
tiny .caffemodel files written by tests/caffe_fakes.py; a registry written here points at
it (``FCN_ZOO_REGISTRY``) and the cache lives under ``TORCH_HOME`` in tmp_path. The
expected checksums are computed here with hashlib, the expected weights read back from the
fakes' own arrays.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from fcn_lightning.errors import ConfigError, DownloadError, WeightsError
from fcn_lightning.interop import zoo
from fcn_lightning.interop.zoo_registry import SHIPPED, load_registry
from tests.caffe_fakes import Nets, blobs_by_name, write_caffemodel
from tests.train_helpers import CONF, TINY_DATA, compose_train, run_module

DIV = 16  # the fakes' channel counts / 16: model.width=0.0625
CLASSES = 7  # the synthetic dataset's


class Server:
    """Serves ``root`` over HTTP with Range support; ``requests``: (path, Range header)."""

    def __init__(self, root: Path):
        self.root, self.requests = root, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                path = outer.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A server with fake-fcn32s.caffemodel (and a mirror copy), a registry naming it, an
    empty cache; returns a namespace of paths and helpers."""
    served = tmp_path / "served"
    layers = Nets(DIV, num_classes=CLASSES).fcn("fcn32s")
    (served / "official").mkdir(parents=True)
    caffemodel = write_caffemodel(served / "official" / "fake-fcn32s.caffemodel", layers)
    (served / "mirror").mkdir()
    (served / "mirror" / "fake-fcn32s.caffemodel").write_bytes(caffemodel.read_bytes())
    server = Server(served)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    registry = tmp_path / "registry.yaml"
    monkeypatch.setenv("FCN_ZOO_REGISTRY", str(registry))

    class Setup:
        pass

    s = Setup()
    s.tmp, s.server, s.layers, s.registry = tmp_path, server, layers, registry
    s.bytes = caffemodel.read_bytes()
    s.md5 = hashlib.md5(s.bytes).hexdigest()
    s.cache = tmp_path / "torch" / "hub" / "fcn_lightning" / "zoo"

    def write_registry(**changes):
        entry = {
            "what": "a tiny FCN-32s for tests", "format": "caffemodel",
            "url": f"{server.url}/official/fake-fcn32s.caffemodel",
            "file": "fake-fcn32s.caffemodel", "md5": s.md5, "size": len(s.bytes),
            "min_size": 1000, "mirrors": [], "alternatives": [], "loadable": True,
            "variant": "fcn32s", "num_classes": CLASSES,
            "scores": {"split": "synthetic_val", "mean_iu": 1.0}, "source": "this test",
        }  # fmt: skip
        entry.update(changes)
        refusal = "two heads, which this project cannot build yet (planned)"
        siftflow = {**entry, "loadable": False, "refusal": refusal}
        models = {"fake-fcn32s": entry, "fake-siftflow": siftflow}
        registry.write_text(yaml.safe_dump({"version": 1, "models": models}))

    s.write_registry = write_registry
    write_registry()
    yield s
    server.stop()


def _data_args(data_dir: Path) -> list[str]:
    return [
        "data=synthetic", f"paths.data_dir={data_dir}", "num_workers=0", "trainer=cpu",
        *(f"data.synthetic.{k}={v}" for k, v in TINY_DATA.items()),
    ]  # fmt: skip


def _blob(setup, name):
    return blobs_by_name(setup.layers)[name]


@pytest.mark.slow
def test_eval_downloads_converts_and_scores_as_its_checkpoint_then_runs_offline(
    setup, tmp_path, data_dir
):
    zoo_run = run_module(
        "fcn_lightning.eval", "model_zoo=fake-fcn32s", *_data_args(data_dir),
        f"hydra.run.dir={tmp_path / 'zoo_eval'}", cwd=tmp_path,
    )  # fmt: skip
    assert zoo_run.returncode == 0, zoo_run.stderr[-3000:]
    ckpt = setup.cache / "fake-fcn32s.ckpt"
    # The converted checkpoint holds the released blobs where the model reads them.
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    np.testing.assert_array_equal(state["model.score_fr.weight"], _blob(setup, "score_fr")[0])
    np.testing.assert_array_equal(
        state["model.backbone.features.0.weight"], _blob(setup, "conv1_1")[0]
    )
    # The same checkpoint scored as ckpt_path=, separately (in this process).
    from fcn_lightning.eval import evaluate

    plain_scores = evaluate(_eval_cfg(
        f"ckpt_path={ckpt}", *_data_args(data_dir), f"paths.output_dir={tmp_path / 'plain'}"
    ))  # fmt: skip
    zoo_scores = json.loads((tmp_path / "zoo_eval" / "metrics.json").read_text())
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert zoo_scores[key] == plain_scores[key]
    # Second run: the server is gone; the cached conversion is used, not remade.
    setup.server.stop()
    mtime = ckpt.stat().st_mtime_ns
    offline = evaluate(_eval_cfg(
        "model_zoo=fake-fcn32s", *_data_args(data_dir), f"paths.output_dir={tmp_path / 'off'}"
    ))  # fmt: skip
    assert ckpt.stat().st_mtime_ns == mtime
    assert offline["mean_iu"] == zoo_scores["mean_iu"]
    assert len([r for r in setup.server.requests if r[0].endswith(".caffemodel")]) == 1


def test_a_truncated_cached_checkpoint_is_made_again_from_the_cached_file(setup):
    ckpt = zoo.checkpoint_for("fake-fcn32s", key="model_zoo")
    good = hashlib.md5(ckpt.read_bytes()).hexdigest()
    setup.server.stop()
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # cut short (a full disk, a copy killed)
    assert not zoo.is_converted(load_registry().get("fake-fcn32s", key="k"))
    again = zoo.checkpoint_for("fake-fcn32s", key="model_zoo")
    assert hashlib.md5(again.read_bytes()).hexdigest() == good
    torch.load(again, weights_only=True)  # whole again
    # A checkpoint without its record (a conversion killed before the record) is remade.
    (setup.cache / "fake-fcn32s.ckpt.json").unlink()
    assert not zoo.is_converted(load_registry().get("fake-fcn32s", key="k"))
    zoo.checkpoint_for("fake-fcn32s", key="model_zoo")
    assert zoo.is_converted(load_registry().get("fake-fcn32s", key="k"))
    # A record that lies about the checkpoint is not trusted either.
    record = setup.cache / "fake-fcn32s.ckpt.json"
    record.write_text(json.dumps({"md5": "0" * 32, "size": again.stat().st_size}))
    assert not zoo.is_converted(load_registry().get("fake-fcn32s", key="k"))


def test_user_mirrors_are_tried_first(setup):
    zoo.checkpoint_for("fake-fcn32s", key="model_zoo", mirrors=[f"{setup.server.url}/mirror/"])
    files = [path for path, _ in setup.server.requests]
    assert files == ["/mirror/fake-fcn32s.caffemodel"]  # the official URL was never needed


def test_a_half_downloaded_part_is_resumed(setup):
    setup.cache.mkdir(parents=True)
    half = len(setup.bytes) // 2
    (setup.cache / "fake-fcn32s.caffemodel.part").write_bytes(setup.bytes[:half])
    zoo.checkpoint_for("fake-fcn32s", key="model_zoo")
    assert setup.server.requests == [("/official/fake-fcn32s.caffemodel", f"bytes={half}-")]
    assert (setup.cache / "fake-fcn32s.caffemodel").read_bytes() == setup.bytes
    assert not (setup.cache / "fake-fcn32s.caffemodel.part").exists()


def test_an_md5_mismatch_is_refused_and_leaves_nothing_trusted(setup):
    setup.write_registry(md5="0" * 32)
    with pytest.raises(DownloadError, match="md5 mismatch") as error:
        zoo.checkpoint_for("fake-fcn32s", key="model_zoo")
    assert str(setup.cache / "fake-fcn32s.caffemodel") in str(error.value)
    left = sorted(p.name for p in setup.cache.iterdir() if not p.name.endswith(".lock"))
    assert left == []  # no file, no .part, no checkpoint
    # A file put there by hand that is not the released one: refused with the same advice.
    setup.cache.joinpath("fake-fcn32s.caffemodel").write_bytes(setup.bytes)
    with pytest.raises(WeightsError, match="another md5") as error:
        zoo.checkpoint_for("fake-fcn32s", key="model_zoo")
    assert f"{setup.server.url}/official/fake-fcn32s.caffemodel" in str(error.value)
    assert not (setup.cache / "fake-fcn32s.ckpt").exists()
    # With the right md5 the same hand-placed file is used, without a download.
    setup.write_registry()
    setup.server.requests.clear()
    zoo.checkpoint_for("fake-fcn32s", key="model_zoo")
    assert setup.server.requests == []


def test_a_small_file_without_md5_is_refused_by_its_size(setup):
    setup.write_registry(md5=None, size=None, min_size=len(setup.bytes) + 1)
    with pytest.raises(DownloadError, match="fewer than") as error:
        zoo.checkpoint_for("fake-fcn32s", key="model_zoo")
    assert "no md5 is known" in str(error.value)
    assert not (setup.cache / "fake-fcn32s.caffemodel").exists()


@pytest.mark.slow
def test_offline_says_which_file_its_url_md5_size_and_where_to_put_it(setup, tmp_path):
    setup.server.stop()
    result = run_module(
        "fcn_lightning.eval", "model_zoo=fake-fcn32s", "trainer=cpu", "data=synthetic",
        f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    line = lines[0]
    for part in (
        "model_zoo=fake-fcn32s", "fake-fcn32s.caffemodel", setup.md5,
        f"{len(setup.bytes):,} bytes", f"{setup.server.url}/official/fake-fcn32s.caffemodel",
        f"put it at {setup.cache / 'fake-fcn32s.caffemodel'}",
    ):  # fmt: skip
        assert part in line, part
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.slow
def test_two_processes_at_once_share_one_download(setup, tmp_path):
    import os
    import subprocess
    import sys

    from tests.train_helpers import ROOT

    script = (
        "from fcn_lightning.interop.zoo import checkpoint_for; "
        "print(checkpoint_for('fake-fcn32s', key='model_zoo'))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    jobs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    paths = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert paths == {str(setup.cache / "fake-fcn32s.ckpt")}
    assert len(setup.server.requests) == 1  # one downloaded, the other waited and reused it
    assert zoo.is_converted(load_registry().get("fake-fcn32s", key="k"))


def _eval_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("eval", overrides=list(overrides))


def test_the_model_is_named_once_and_unknown_or_unsupported_names_are_refused(setup):
    with pytest.raises(ConfigError, match="give one of them, not both"):
        zoo.resolve_checkpoint(_eval_cfg("ckpt_path=a.ckpt", "model_zoo=fake-fcn32s"), "eval")
    with pytest.raises(ConfigError, match=re.escape("ckpt_path=<file.ckpt>, or model_zoo=<name>")):
        zoo.resolve_checkpoint(_eval_cfg(), "eval")
    with pytest.raises(ConfigError, match=r"model_zoo=fake-fcn23s: .*did you mean fake-fcn32s"):
        zoo.resolve_checkpoint(_eval_cfg("model_zoo=fake-fcn23s"), "eval")
    with pytest.raises(WeightsError, match=r"model_zoo=fake-siftflow: two heads.*\(planned\)"):
        zoo.resolve_checkpoint(_eval_cfg("model_zoo=fake-siftflow"), "eval")
    assert "did you mean fake-fcn32s" in zoo.init_from_problem("zoo:fake-fcn3s")
    assert zoo.init_from_problem("zoo:fake-fcn32s") is None
    assert setup.server.requests == []  # none of it fetched anything


def test_predict_and_export_through_the_zoo(setup, tmp_path):
    from PIL import Image

    from fcn_lightning.export import export
    from fcn_lightning.predict import predict

    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 52, 3), np.uint8)).save(image)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("predict", overrides=[
            "model_zoo=fake-fcn32s", f"inputs={image}", f"out_dir={tmp_path / 'pred'}",
            "device=cpu", f"paths.output_dir={tmp_path / 'run'}",
        ])  # fmt: skip
    written = predict(cfg)
    mask = np.asarray(Image.open(written[0]))
    assert mask.shape == (40, 52) and mask.max() < CLASSES
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("export", overrides=[
            "model_zoo=fake-fcn32s", "format=torchscript", f"out={tmp_path / 'net.pt'}",
            "example_size=[40,52]", f"paths.output_dir={tmp_path / 'run'}",
        ])  # fmt: skip
    path = export(cfg)
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert meta["checkpoint"] == str(setup.cache / "fake-fcn32s.ckpt")
    # The exported net gives the scores of the released weights: the same argmax as predict.
    from fcn_lightning.normalization import get_input_norm

    x = torch.from_numpy(np.asarray(Image.open(image))).permute(2, 0, 1)
    scores = torch.jit.load(str(path))(get_input_norm("caffe")(x)[None])
    assert np.array_equal(scores.argmax(1)[0].numpy(), mask)


def test_init_from_zoo_starts_training_from_the_released_weights(setup, tmp_path, data_dir):
    from fcn_lightning.train import train

    out = tmp_path / "run"
    cfg = compose_train(
        data_dir, out, "model.init_from=zoo:fake-fcn32s", "model.frozen_backbone=true"
    )
    train(cfg)
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    # Frozen, so still the released conv1_1 after the steps; score_fr learned from it.
    np.testing.assert_array_equal(
        state["model.backbone.features.0.weight"], _blob(setup, "conv1_1")[0]
    )
    converted = torch.load(setup.cache / "fake-fcn32s.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(state["model.backbone.fc7.bias"], converted["model.backbone.fc7.bias"])


def test_the_shipped_registry(monkeypatch):
    monkeypatch.delenv("FCN_ZOO_REGISTRY", raising=False)
    text = SHIPPED.read_text()
    names = re.findall(r"^  ([a-z0-9-]+):$", text.split("\nnot_released:")[0], re.MULTILINE)
    assert len(names) == len(set(names)) >= 17  # YAML would keep only the last duplicate
    raw = yaml.safe_load(text)["models"]
    registry = load_registry()
    assert list(registry.entries) == names
    for name, entry in raw.items():
        for key in ("url", "size", "format", "scores", "md5", "min_size", "source"):
            assert key in entry, (name, key)
        assert entry["scores"] or entry["scores_note"], name
        if entry["format"] == "caffemodel" and not name.endswith("-caffe"):
            # Each the reference's caffemodel-url host; the file name is the url's.
            assert entry["url"] == f"http://dl.caffe.berkeleyvision.org/{entry['file']}"
    # pytorch-fcn's ids and md5s as its own installed source states them.
    # Found through its installed files: another test may have put a stand-in torchfcn
    # module (without a spec) into sys.modules.
    import importlib.metadata

    torchfcn = Path(importlib.metadata.distribution("torchfcn").locate_file("torchfcn"))
    source = "".join(p.read_text() for p in sorted((torchfcn / "models").glob("fcn*.py")))
    for entry in registry.entries.values():
        for alt in entry.alternatives:
            drive_id = alt.url.rsplit("=", 1)[1]
            assert re.search(rf"id={drive_id}',.*?\n.*?\n\s*md5='{alt.md5}'", source), alt
    # The paper's seg11valid mean IU (docs/paper.md section 6).
    paper = {"voc-fcn32s": 63.6, "voc-fcn16s": 65.0, "voc-fcn8s-atonce": 65.4,
             "voc-fcn8s": 65.5, "voc-fcn-alexnet": 48.0}  # fmt: skip
    for name, mean_iu in paper.items():
        scores = registry.entries[name].scores
        assert (scores["split"], scores["mean_iu"]) == ("seg11valid", mean_iu)
    import torchvision

    assert raw["vgg16-torchvision"]["url"] == torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    # Nothing released is refused any more (issue 15); each names the data that evaluates it.
    assert [e.name for e in registry.entries.values() if e.loadable is False] == []
    evaluated = {name: entry.evaluated_with() for name, entry in registry.entries.items()}
    assert evaluated["voc-fcn8s"] == "data=paper"
    assert evaluated["pascalcontext-fcn16s"] == "data=pascal_context"
    assert evaluated["siftflow-fcn8s"] == "data=siftflow"
    assert evaluated["nyud-fcn32s-color"] == "data=nyud data.input=color"
    assert evaluated["nyud-fcn32s-hha"] == "data=nyud data.input=hha"
    assert evaluated["nyud-fcn32s-color-hha"] == "data=nyud data.input=color_hha"
    assert all(evaluated[e.name] != "-" for e in registry.entries.values() if not e.is_backbone)


def test_shipped_entries_refused_in_one_line_without_network(monkeypatch, tmp_path):
    monkeypatch.delenv("FCN_ZOO_REGISTRY", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"not released by the FCN authors"):
        zoo.checkpoint_for("nyud-fcn32s-color-d", key="model_zoo")
    with pytest.raises(ConfigError, match=re.escape("model.pretrained=true model.weights=caffe")):
        zoo.checkpoint_for("vgg16-caffe", key="model_zoo")
    assert not (tmp_path / "hub").exists() or not any((tmp_path / "hub").rglob("*.caffemodel"))


def test_the_listing(setup, capsys):
    from fcn_lightning.zoo import main

    main([])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("fake-fcn32s "))
    assert "mean IU 1.0 (synthetic_val)" in row and row.split()[-2:] == ["no", "yes"]
    assert next(r for r in out.splitlines() if r.startswith("fake-sift")).endswith("no (planned)")
    zoo.checkpoint_for("fake-fcn32s", key="model_zoo")
    main(["list"])
    row = next(r for r in capsys.readouterr().out.splitlines() if r.startswith("fake-fcn32s "))
    assert row.split()[-2:] == ["converted", "yes"]
    with pytest.raises(SystemExit) as exit_status:
        main(["show", "fake-fcn23s"])
    assert exit_status.value.code == 2
    assert "did you mean fake-fcn32s" in capsys.readouterr().err


def test_init_from_an_unknown_or_refused_zoo_name_is_a_prerequisite_problem(setup, tmp_path):
    from fcn_lightning.prerequisites import prerequisite_problems

    data_dir = tmp_path / "nodata"
    for value, words in (("zoo:fake-fcn23s", "did you mean fake-fcn32s"),
                         ("zoo:fake-siftflow", "(planned)")):  # fmt: skip
        cfg = compose_train(data_dir, tmp_path / "run", f"model.init_from={value}")
        problems, _ = prerequisite_problems(cfg)
        lines = [str(p) for p in problems if "model.init_from" in str(p)]
        assert len(lines) == 1 and words in lines[0] and value in lines[0], lines
    assert setup.server.requests == []


def test_fetch_puts_an_imagenet_backbone_where_model_weights_caffe_reads_it(setup, tmp_path):
    from fcn_lightning.models.weights import PRETRAINED, cache_path
    from fcn_lightning.zoo import main

    layers = Nets(DIV).vgg16(fc_as="InnerProduct")
    served = write_caffemodel(setup.server.root / "official" / "fake-vgg16.caffemodel", layers)
    setup.write_registry()
    raw = yaml.safe_load(setup.registry.read_text())
    raw["models"]["fake-vgg16"] = {
        **raw["models"]["fake-fcn32s"], "url": f"{setup.server.url}/official/fake-vgg16.caffemodel",
        "file": "fake-vgg16.caffemodel", "md5": hashlib.md5(served.read_bytes()).hexdigest(),
        "size": served.stat().st_size, "loadable": "backbone",
        "backbone_weights": {"backbone": "vgg16", "weights": "caffe"},
    }  # fmt: skip
    setup.registry.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=re.escape("model.pretrained=true model.weights=caffe")):
        zoo.checkpoint_for("fake-vgg16", key="model_zoo")
    main(["fetch", "fake-vgg16"])
    state = torch.load(cache_path(PRETRAINED["caffe"]), weights_only=True)
    np.testing.assert_array_equal(state["features.0.weight"], blobs_by_name(layers)["conv1_1"][0])
    assert str(cache_path(PRETRAINED["caffe"])).startswith(str(tmp_path / "torch"))


def test_pytorch_fcns_pth_put_by_hand_is_converted_like_the_caffemodel(setup, tmp_path):
    blobs = blobs_by_name(setup.layers)
    # torchfcn's layout: the reference's layer names, weight and bias.
    state = {f"{name}.{param}": torch.from_numpy(np.ascontiguousarray(value))
             for name, values in blobs.items()
             for param, value in zip(("weight", "bias"), values, strict=False)}  # fmt: skip
    setup.cache.mkdir(parents=True)
    pth = setup.cache / "fake-fcn32s_from_caffe.pth"
    torch.save(state, pth)
    alternative = {"format": "torchfcn_pth", "url": "https://drive.google.com/uc?id=x",
                   "file": pth.name, "md5": hashlib.md5(pth.read_bytes()).hexdigest()}  # fmt: skip
    setup.write_registry(alternatives=[alternative])
    setup.server.stop()
    from_pth = torch.load(zoo.checkpoint_for("fake-fcn32s", key="model_zoo"), weights_only=True)
    assert setup.server.requests == []
    from fcn_lightning.interop.caffe_convert import convert

    caffemodel = tmp_path / "fake.caffemodel"
    caffemodel.write_bytes(setup.bytes)
    from_caffe = torch.load(convert(caffemodel, tmp_path / "c.ckpt")[0], weights_only=True)
    assert from_pth["state_dict"].keys() == from_caffe["state_dict"].keys()
    for key, value in from_caffe["state_dict"].items():
        assert torch.equal(from_pth["state_dict"][key], value), key
    assert from_pth["hyper_parameters"]["model"] == from_caffe["hyper_parameters"]["model"]


def test_a_damaged_file_that_passes_the_known_checks_is_refused_with_advice(setup):
    setup.write_registry(md5=None, size=None)
    setup.cache.mkdir(parents=True)
    damaged = setup.cache / "fake-fcn32s.caffemodel"
    damaged.write_bytes(setup.bytes[: len(setup.bytes) - 100])  # cut inside the last blob
    with pytest.raises(WeightsError) as error:
        zoo.checkpoint_for("fake-fcn32s", key="model_zoo")
    message = str(error.value)
    assert "does not convert" in message and f"delete {damaged}" in message
    assert not (setup.cache / "fake-fcn32s.ckpt").exists()
    assert not (setup.cache / "fake-fcn32s.ckpt.json").exists()


@pytest.mark.parametrize(
    "name",
    ["fake-fcn32s.ckpt", "fake-fcn32s.ckpt.json", ".fake-fcn32s.lock",
     "fake-fcn32s.caffemodel", "fake-fcn32s.caffemodel.part"],
)  # fmt: skip
def test_a_folder_where_the_cache_keeps_a_file_is_named_and_kept(setup, name):
    # Before: a traceback (lock, record, caffemodel) or advice to delete the intact
    # caffemodel when the checkpoint's path was the folder.
    folder = setup.cache / name
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("kept")
    with pytest.raises(WeightsError) as error:
        zoo.checkpoint_for("fake-fcn32s", key="model_zoo")
    message = str(error.value)
    assert message.startswith("model_zoo=fake-fcn32s: ")
    assert f"{folder} is a folder" in message and "\n" not in message
    assert (folder / "mine.txt").read_text() == "kept"
    assert setup.server.requests == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [([], "model_zoo=fake-fcn32s: a zoo model holds no data settings; choose the data "
          "with data=<preset>"),
     (["data=paper"], "model_zoo=fake-fcn32s predicts 7 classes but the data has 21")],
)  # fmt: skip
def test_eval_refuses_data_that_cannot_fit_a_zoo_model_before_its_download(
    setup, tmp_path, monkeypatch, capfd, args, expected
):
    # Before: the (537 MB) download and conversion came first, then the refusal, naming
    # ckpt_path=<the cache's file>, a key the user never typed.
    from tests.bad_input.harness import run_entry

    status = run_entry("eval", ["model_zoo=fake-fcn32s", "trainer=cpu", *args,
                                f"hydra.run.dir={tmp_path / 'out'}"], monkeypatch)  # fmt: skip
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and len(err) == 1 and err[0].startswith(f"error: {expected}"), err
    assert setup.server.requests == []


def test_init_from_a_zoo_model_of_other_classes_is_a_prerequisite_problem(setup, tmp_path):
    # Before: found after the (537 MB) download, as a score layer's shape mismatch.
    from fcn_lightning.prerequisites import prerequisite_problems

    setup.write_registry(num_classes=21)
    cfg = compose_train(tmp_path / "nodata", tmp_path / "run", "model.init_from=zoo:fake-fcn32s")
    problems, _ = prerequisite_problems(cfg)
    lines = [str(p) for p in problems if "model.init_from" in str(p)]
    assert len(lines) == 1, lines
    assert "model.init_from=zoo:fake-fcn32s: predicts 21 classes, the data has 7" in lines[0]
    assert setup.server.requests == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [({"mirrors": "http://x"}, "models.fake-fcn32s.mirrors='http://x': a list of URLs"),
     ({"mirrors": [None]}, "models.fake-fcn32s.mirrors=[None]: a list of URLs"),
     ({"num_classes": "seven"}, "models.fake-fcn32s.num_classes='seven': a number of classes"),
     ({"num_classes": -3}, "models.fake-fcn32s.num_classes=-3: a number of classes"),
     ({"md5": "z" * 32}, f"models.fake-fcn32s.md5='{'z' * 32}': 32 hex digits or null")],
)  # fmt: skip
def test_a_registry_value_of_the_wrong_kind_is_named(setup, changes, expected):
    # Before: a string of mirrors was tried letter by letter ("h: unknown url type"), and
    # num_classes: seven was taken, to fail after the download.
    setup.write_registry(**changes)
    with pytest.raises(ConfigError) as error:
        load_registry()
    assert str(error.value).startswith(f"{setup.registry}: {expected}"), str(error.value)
    assert setup.server.requests == []


BENCHMARKS = [
    ("siftflow", {"num_classes": 33, "data": "siftflow"}, "data=siftflow"),
    ("color_hha", {"num_classes": 40, "data": "nyud", "input": "color_hha"},
     "data=nyud data.input=color_hha"),
    ("hha", {"num_classes": 40, "data": "nyud", "input": "hha"}, "data=nyud data.input=hha"),
]  # fmt: skip


@pytest.mark.parametrize(("net", "changes", "shown"), BENCHMARKS, ids=[b[0] for b in BENCHMARKS])
def test_the_benchmarks_nets_convert_through_the_zoo_with_their_input(
    setup, capsys, net, changes, shown
):
    from fcn_lightning.zoo import main

    nets = Nets(DIV, num_classes=40)
    layers = nets.siftflow("fcn32s") if net == "siftflow" else nets.nyud(net)
    # A file name that says nothing: the registry's input decides the HHA net's.
    served = write_caffemodel(setup.tmp / "served" / "official" / "bench.caffemodel", layers)
    data = served.read_bytes()
    setup.write_registry(
        url=f"{setup.server.url}/official/bench.caffemodel", file="bench.caffemodel",
        md5=hashlib.md5(data).hexdigest(), size=len(data), **changes,
    )  # fmt: skip
    main(["show", "fake-fcn32s"])
    assert f"evaluate with: model_zoo=fake-fcn32s {shown}" in capsys.readouterr().out
    ckpt = zoo.checkpoint_for("fake-fcn32s", key="model_zoo")
    model = torch.load(ckpt, weights_only=True)["hyper_parameters"]["model"]
    assert (model["input"], model["num_classes"]) == (
        changes.get("input", "rgb"),
        changes["num_classes"],
    )
    heads = [h["name"] for h in model["heads"] or []]
    assert heads == (["sem", "geo"] if net == "siftflow" else [])


def test_a_zoo_entry_whose_input_the_file_contradicts_is_refused(setup):
    layers = Nets(DIV, num_classes=40).nyud("color_hha")
    served = write_caffemodel(setup.tmp / "served" / "official" / "bench.caffemodel", layers)
    data = served.read_bytes()
    setup.write_registry(
        url=f"{setup.server.url}/official/bench.caffemodel", file="bench.caffemodel",
        md5=hashlib.md5(data).hexdigest(), size=len(data), num_classes=40, input="color",
    )  # fmt: skip
    with pytest.raises(WeightsError, match=r"is a color_hha net .*--input color does not fit"):
        zoo.checkpoint_for("fake-fcn32s", key="model_zoo")
    assert not (setup.cache / "fake-fcn32s.ckpt").exists()
