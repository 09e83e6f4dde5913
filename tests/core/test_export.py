"""Export to BioImage.IO (validated by bioimageio.spec/core, offline) and to ONNX (onnxruntime)."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from napari_dlcb.cli import main
from napari_dlcb.data.normalize import Normalizer
from napari_dlcb.data.synthetic import synthetic_nuclei
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.segment import segment
from napari_dlcb.models.bioimageio import load_bioimageio
from napari_dlcb.models.bioimageio_export import check_package, export_bioimageio
from napari_dlcb.models.bioimageio_rdf import map_preprocessing, preprocessing_for
from napari_dlcb.models.classifier import CellClassifier
from napari_dlcb.models.dna import Basset, DeepBind
from napari_dlcb.models.onnx_export import export_onnx
from napari_dlcb.models.saved import ModelMeta, load_meta, save_model
from napari_dlcb.models.unet import UNet2D


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    """bioimageio tools write nothing outside the test (their cache goes to a temp folder)."""
    monkeypatch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "bioimageio_cache"))


def tiny_unet_folder(path: Path) -> Path:
    torch.manual_seed(0)
    net = UNet2D(1, 3, base=4, depth=2).eval()
    meta = ModelMeta(
        "segmentation",
        net.architecture(),
        ["background", "interior", "boundary"],
        label_kind="instances",
        normalization={"mode": "per_image_percentile", "p_low": 1.0, "p_high": 99.8},
        output_activation="softmax",
        parent="builtin:unet2d-nuclei",
        extra={"halo": 8, "postprocess": {"fg_threshold": 0.5, "seed_threshold": 0.6}},
    )
    return save_model(net, path, meta)


def tiny_classifier_folder(path: Path) -> Path:
    torch.manual_seed(0)
    net = CellClassifier(1, 3, width=4, blocks=(1, 1)).eval()
    meta = ModelMeta(
        "classification",
        net.architecture(),
        ["round", "long", "dim"],
        label_kind="classes",
        normalization={"mode": "zscore", "low": [100.0], "high": [20.0]},
        extra={"input_size": 24},
    )
    return save_model(net, path, meta)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny U-Net folder and its package (made once for the module)."""
    root = tmp_path_factory.mktemp("export")
    folder = tiny_unet_folder(root / "model")
    report = export_bioimageio(folder, root / "model.zip", authors=["A. Tester"])
    return folder, report


def rdf_of(package: Path) -> dict:
    with zipfile.ZipFile(package) as zf:
        return yaml.safe_load(zf.read("bioimageio.yaml"))


# ---------------------------------------------------------------------- BioImage.IO
def test_package_description(exported):
    folder, report = exported
    assert report.weights == ("torchscript", "onnx") and report.onnx_max_abs_diff < 1e-4
    rdf = rdf_of(report.path)
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model"
    inp, out = rdf["inputs"][0], rdf["outputs"][0]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    assert inp["axes"][2]["size"] == {"min": 20, "step": 4}  # 2**depth, above 2 x halo 8
    assert [p["id"] for p in inp["preprocessing"]][1] == "scale_range"
    assert inp["preprocessing"][1]["kwargs"]["max_percentile"] == pytest.approx(99.8)
    assert out["axes"][1]["channel_names"] == ["background", "interior", "boundary"]
    assert [a.get("halo") for a in out["axes"][2:]] == [8, 8]
    assert out["postprocessing"][0] == {"id": "softmax", "kwargs": {"axis": "channel"}}
    assert "10.15252/msb.20156651" in [c.get("doi") for c in rdf["cite"]]
    assert "10.1007/978-3-319-24574-4_28" in [c.get("doi") for c in rdf["cite"]]
    assert rdf["license"] == "BSD-3-Clause" and rdf["authors"] == [{"name": "A. Tester"}]
    assert rdf["config"]["napari-dlcb"]["parent"] == "builtin:unet2d-nuclei"
    with zipfile.ZipFile(report.path) as zf:
        for entry in rdf["weights"].values():
            assert hashlib.sha256(zf.read(entry["source"])).hexdigest() == entry["sha256"]
        readme = zf.read(rdf["documentation"]["source"]).decode()
        x = np.load(zf.open(inp["test_tensor"]["source"]))
        y = np.load(zf.open(out["test_tensor"]["source"]))
        from PIL import Image

        cover = Image.open(zf.open(rdf["covers"][0]["source"]))
    assert "## Validation" in readme and "builtin:unet2d-nuclei" in readme
    assert x.shape[2] % 4 == 0 and x.shape[2] >= 20 and y.shape == (1, 3, *x.shape[2:])
    np.testing.assert_allclose(y.sum(1), 1.0, atol=1e-5)  # softmax probabilities
    assert cover.size[0] >= 2 * cover.size[1] - 8 and cover.size[1] >= 256


@pytest.mark.slow
def test_package_passes_bioimageio_test_model(exported, tmp_path):
    """bioimageio.core runs both weight formats on the test tensors, offline (~30 s)."""
    _, report = exported
    assert check_package(report.path) == (True, "passed")
    clf = export_bioimageio(
        tiny_classifier_folder(tmp_path / "clf"), tmp_path / "clf.zip", test=True
    )
    assert clf.test_passed, clf.test_summary


def test_package_predicts_like_its_folder(exported):
    folder, report = exported
    img, _ = synthetic_nuclei((150, 130), seed=3)
    prob_f, labels_f = segment(str(folder), img, device="cpu")
    prob_p, labels_p = segment(str(report.path), img, device="cpu")
    np.testing.assert_allclose(prob_p, prob_f, atol=1e-5)
    assert labels_f.max() >= 1 and np.array_equal(labels_p, labels_f)
    _, meta = load_bioimageio(report.path)
    assert meta.label_kind == "instances" and meta.extra["postprocess"]["fg_threshold"] == 0.5
    assert meta.normalization == load_meta(folder).normalization


def test_classifier_package_roundtrip(tmp_path):
    from napari_dlcb.inference.classify import predict_proba
    from napari_dlcb.models.saved import load_model

    folder = tiny_classifier_folder(tmp_path / "clf")
    report = export_bioimageio(folder, tmp_path / "clf.zip", onnx=False)
    rdf = rdf_of(report.path)
    assert [a["type"] for a in rdf["outputs"][0]["axes"]] == ["batch", "channel"]
    assert rdf["inputs"][0]["axes"][2]["size"] == 24
    assert rdf["inputs"][0]["preprocessing"][1]["id"] == "fixed_zero_mean_unit_variance"
    model_p, meta_p = load_bioimageio(report.path)
    model_f, meta_f = load_model(folder)
    assert meta_p.task == "classification" and meta_p.classes == ["round", "long", "dim"]
    crops = [synthetic_nuclei((30, 30), seed=s, n_nuclei=1)[0] for s in range(4)]
    p_f, _ = predict_proba(model_f, meta_f, crops, device="cpu")
    p_p, _ = predict_proba(model_p, meta_p, crops, device="cpu")
    np.testing.assert_allclose(p_p, p_f, atol=1e-5)


@pytest.mark.parametrize(
    "norm",
    [
        {"mode": "percentile", "low": [10.0, 20.0], "high": [200.0, 90.0]},
        {"mode": "zscore", "low": [50.0, 60.0], "high": [5.0, 7.0]},
        {"mode": "per_image_zscore"},
        {"mode": "per_image_percentile", "p_low": 2.0, "p_high": 99.0},
    ],
)
def test_normaliser_maps_to_preprocessing_and_back(norm):
    """Fixed percentiles -> scale_linear, fixed z-score -> fixed_zero_mean_unit_variance, ..."""
    steps = preprocessing_for(norm, 2)
    back = map_preprocessing(steps, "raw")
    img = np.random.default_rng(0).gamma(2.0, 40.0, (2, 32, 32)).astype(np.float32)
    want = Normalizer.from_dict(norm)(img, channel_axis=0)
    np.testing.assert_allclose(
        Normalizer.from_dict(back)(img, channel_axis=0), want, rtol=1e-5, atol=1e-5
    )


def test_parent_lineage_from_a_zoo_package(shared_data, tmp_path):
    """A model fine-tuned from a zoo package names it as parent, with its licence and citations."""
    src = shared_data / "bioimageio_unet2d_nuclei_broad"
    pkg = tmp_path / "zoo"
    pkg.mkdir()
    for name in ("weights.pt", "README.md"):
        shutil.copy(src / name, pkg / name)
    rdf = yaml.safe_load((src / "bioimageio.yaml").read_text())
    rdf["id"] = "affable-shark"
    rdf["weights"] = {"torchscript": dict(rdf["weights"]["torchscript"], parent=None)}
    (pkg / "bioimageio.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    model, meta = load_bioimageio(pkg, trusted=True)
    with torch.no_grad():
        list(model.parameters())[-1].add_(0.1)  # a stand-in for fine-tuning
    meta.extra.pop("bioimageio")  # as a fine-tuned model's metadata: only the parent path
    folder = save_model(model, tmp_path / "tuned", meta)
    report = export_bioimageio(folder, tmp_path / "tuned.zip", onnx=False)
    out = rdf_of(report.path)
    assert out["parent"]["id"] == "affable-shark"
    assert out["license"] == "MIT"
    assert "10.1007/978-3-319-24574-4_28" in [c.get("doi") for c in out["cite"]]
    assert out["inputs"][0]["preprocessing"][1]["id"] == "zero_mean_unit_variance"
    assert out["outputs"][0]["postprocessing"][0]["id"] == "sigmoid"
    assert out["inputs"][0]["axes"][2]["size"]["step"] == 8


def test_sequence_models_are_refused(tmp_path):
    net = DeepBind(2, filters=4)
    arch = {"name": "deepbind", "n_tasks": 2, "filters": 4}
    meta = ModelMeta("sequence", arch, ["a", "b"], input_axes="bcl", in_channels=4)
    with pytest.raises(DlcbError, match="export onnx") as err:
        export_bioimageio(net, tmp_path / "x.zip", meta=meta)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------- CLI
def train_from(base: Path, tmp_path: Path, *, side: int, seed: int) -> tuple[Path, Path]:
    """``train segmentation --base BASE`` for one epoch on two synthetic images: (images, model)."""
    imgs, labs, out = tmp_path / "images", tmp_path / "labels", tmp_path / "tuned"
    imgs.mkdir(), labs.mkdir()
    for i in range(2):
        img, lab = synthetic_nuclei((side, side), seed=seed + i)
        tifffile.imwrite(imgs / f"c{i}.tif", img)
        tifffile.imwrite(labs / f"c{i}.tif", lab.astype(np.uint16))
    argv = ["train", "segmentation", "--images", str(imgs), "--labels", str(labs)]
    argv += ["--out", str(out), "--labels-kind", "instances", "--base", str(base)]
    argv += ["--epochs", "1", "--patch-size", "48", "--samples-per-epoch", "2", "--device", "cpu"]
    assert main(argv) == 0
    return imgs, out


def test_cli_export_then_train_from_the_package(exported, tmp_path, capsys):
    """``train segmentation --base PACKAGE.zip`` fine-tunes from it and records it as parent."""
    _, report = exported
    imgs, out = train_from(report.path, tmp_path, side=64, seed=50)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["parent"] == str(report.path)
    assert meta["architecture"] == {"name": "torchscript"}
    pred = tmp_path / "pred"
    argv = ["predict", "segmentation", "--model", str(report.path), "--images", str(imgs)]
    assert main([*argv, "--out", str(pred)]) == 0
    assert tifffile.imread(pred / "c0.tif").shape == (64, 64)


@pytest.mark.slow
def test_cli_fine_tuned_model_exports_a_package_that_passes_test_model(exported, tmp_path, capsys):
    """Issue 11: train through the CLI, export, test_model passes, same labels as the folder."""
    _, report = exported
    imgs, tuned = train_from(report.path, tmp_path, side=72, seed=60)
    package = tmp_path / "tuned.zip"
    capsys.readouterr()
    argv = ["export", "bioimageio", "--model", str(tuned), "--out", str(package)]
    assert main([*argv, "--author", "A. Tester", "--test-image", str(imgs / "c0.tif")]) == 0
    printed = capsys.readouterr().out
    assert "bioimageio.core test_model: passed" in printed and "weights torchscript" in printed
    # a model fine-tuned from a package is TorchScript only; the exporter says why no ONNX
    assert "no ONNX weights" in printed or "max |ONNX - PyTorch|" in printed
    assert rdf_of(package)["config"]["napari-dlcb"]["parent"] == str(report.path)
    labels = {}
    for name, model in (("folder", tuned), ("package", package)):
        argv = ["predict", "segmentation", "--model", str(model), "--images", str(imgs)]
        assert main([*argv, "--out", str(tmp_path / name)]) == 0
        labels[name] = [tifffile.imread(tmp_path / name / f"c{i}.tif") for i in range(2)]
    for a, b in zip(labels["folder"], labels["package"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--out", "x.yaml"], "must be a .zip"),
        (["--model", "builtin:dna-multitask"], "export onnx"),
        (["--model", "nowhere/"], "not found"),
    ],
)
def test_cli_export_errors(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    full = ["export", "bioimageio", "--model", "builtin", "--out", "m.zip", *argv]
    assert main(full) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_cli_export_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "m.zip").write_bytes(b"keep me")
    assert (
        main(["export", "bioimageio", "--model", "builtin", "--out", str(tmp_path / "m.zip")]) == 2
    )
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "m.zip").read_bytes() == b"keep me"


# ---------------------------------------------------------------------- ONNX
def _meta(net, task, classes, **kw):
    arch = net.architecture() if hasattr(net, "architecture") else {"name": type(net).__name__}
    return ModelMeta(task, arch, classes, **kw)


@pytest.mark.parametrize(
    "case",
    ["unet", "classifier", "deepbind", "basset"],
)
def test_onnx_matches_pytorch(case, tmp_path):
    torch.manual_seed(0)
    if case == "unet":
        net = UNet2D(2, 3, base=4, depth=3).eval()
        meta = _meta(net, "segmentation", ["a", "b", "c"], in_channels=2)
        dynamic = {0: "batch", 2: "y", 3: "x"}
    elif case == "classifier":
        net = CellClassifier(1, 4, width=4, blocks=(1, 1)).eval()
        meta = _meta(net, "classification", list("abcd"), extra={"input_size": 28})
        dynamic = {0: "batch", 2: "y", 3: "x"}
    elif case == "deepbind":
        net = DeepBind(3, filters=8, hidden=16).eval()
        meta = _meta(
            net, "sequence", list("abc"), input_axes="bcl", in_channels=4, extra={"length": 101}
        )
        dynamic = {0: "batch", 2: "length"}
    else:
        net = Basset(2, length=120, filters=(8, 8, 8), hidden=(16, 16)).eval()
        meta = _meta(
            net, "sequence", list("ab"), input_axes="bcl", in_channels=4, extra={"length": 120}
        )
        dynamic = {0: "batch"}  # flattens a fixed length into its dense layers
    report = export_onnx(net, tmp_path / f"{case}.onnx", meta=meta)
    assert report.max_abs_diff < 1e-4
    assert report.dynamic_axes == dynamic
    assert len(report.checked_shapes) == 2 and report.path.stat().st_size > 1000
    if case == "unet":  # sizes that are not multiples of 2**depth
        import onnxruntime as ort

        session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
        x = torch.randn(1, 2, 37, 53)
        with torch.no_grad():
            want = net(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-4


def test_cli_export_onnx_of_a_saved_model(tmp_path, capsys):
    folder = tiny_classifier_folder(tmp_path / "clf")
    out = tmp_path / "clf.onnx"
    assert main(["export", "onnx", "--model", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "max |ONNX - PyTorch|" in printed


def test_cli_export_onnx_of_the_builtin_dna_model(tmp_path, capsys):
    """The shipped DNA CNN: ONNX agrees with PyTorch on one-hot sequences of another length."""
    import onnxruntime as ort

    from napari_dlcb.models.registry import resolve_base

    out = tmp_path / "dna.onnx"
    assert main(["export", "onnx", "--model", "builtin:dna-multitask", "--out", str(out)]) == 0
    assert "free axes batch, length" in capsys.readouterr().out
    net, _ = resolve_base("builtin:dna-multitask")
    bases = np.random.default_rng(0).integers(0, 4, (3, 260))
    x = np.eye(4, dtype=np.float32)[bases].transpose(0, 2, 1)  # (N, 4, L) one-hot
    with torch.no_grad():
        want = net.eval()(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4
