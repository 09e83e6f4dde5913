"""BioImage Model Zoo import: the real unet2d_nuclei_broad package from ../shared/data."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_dlcb.errors import DlcbError
from napari_dlcb.models.bioimageio import is_bioimageio_package, load_bioimageio
from napari_dlcb.models.registry import resolve_base
from napari_dlcb.models.saved import load_model, save_model
from napari_dlcb.models.trust import UntrustedModelError, is_trusted, trust_this_session

PKG = "bioimageio_unet2d_nuclei_broad"


@pytest.fixture(autouse=True, scope="module")
def _consent():
    """The zoo package's TorchScript is agreed to, as ``--trust-model`` does (see test_consent)."""
    trust_this_session(True)
    yield
    trust_this_session(False)


@pytest.fixture(scope="module")
def package(shared_data) -> Path:
    return shared_data / PKG


@pytest.fixture(scope="module")
def loaded(package):
    return load_bioimageio(package)


@pytest.fixture(scope="module")
def test_tensors(package) -> tuple[np.ndarray, np.ndarray]:
    return np.load(package / "test_input.npy"), np.load(package / "test_output.npy")


def zscore(x: np.ndarray) -> np.ndarray:
    # bioimage.io zero_mean_unit_variance over x, y with eps = 1e-6
    return ((x - x.mean()) / (x.std() + 1e-6)).astype(np.float32)


def crop_input(test_tensors, size: int = 256) -> torch.Tensor:
    x = zscore(test_tensors[0])
    return torch.from_numpy(np.ascontiguousarray(x[..., :size, :size]))


def copy_package(package: Path, dest: Path, edit=None) -> Path:
    """Copy the yaml and TorchScript weights to ``dest``, optionally editing the yaml."""
    dest.mkdir(parents=True)
    shutil.copy(package / "weights.pt", dest / "weights.pt")
    rdf = yaml.safe_load((package / "bioimageio.yaml").read_text())
    if edit is not None:
        edit(rdf)
    (dest / "bioimageio.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return dest


def test_reproduces_the_package_test_output(loaded, test_tensors):
    model, meta = loaded
    x, expected = test_tensors
    assert x.shape == (1, 1, 512, 512)
    with torch.no_grad():
        prob = torch.sigmoid(model(torch.from_numpy(zscore(x)))).numpy()
    assert prob.shape == expected.shape
    np.testing.assert_allclose(prob, expected, atol=1e-4, rtol=0)
    # the raw (unnormalised) input would not reproduce it: normalisation matters
    with torch.no_grad():
        raw = torch.sigmoid(model(torch.from_numpy(x[..., :256, :256].copy()))).numpy()
    assert np.abs(raw - expected[..., :256, :256]).max() > 0.1


def test_metadata_mapping(loaded, package):
    model, meta = loaded
    assert isinstance(model, torch.jit.ScriptModule)
    assert not model.training
    assert meta.task == "segmentation"
    assert meta.architecture == {"name": "torchscript"}
    assert meta.normalization["mode"] == "per_image_zscore"
    assert meta.normalization["eps"] == pytest.approx(1e-6)
    assert meta.output_activation == "sigmoid"
    assert meta.classes == ["background", "foreground"]
    assert meta.class_values == [0, 1]
    assert meta.in_channels == 1
    assert meta.input_axes == "bcyx"
    assert meta.extra["halo"] == 32
    assert meta.extra["size_multiple"] == 8  # three 2x poolings
    assert meta.parent == str(package.resolve())
    info = meta.extra["bioimageio"]
    assert info["name"] == "UNet 2D Nuclei Broad"
    assert info["license"] == "MIT"
    assert (
        info["weights_sha256"] == hashlib.sha256((package / "weights.pt").read_bytes()).hexdigest()
    )


def test_declared_halo_is_used_for_inference(package, loaded, tmp_path):
    """Issue 9: the package's output halo was stored and never used (inference used 32)."""
    from napari_dlcb.inference.segment import segment
    from napari_dlcb.inference.tiled import predict_tiled
    from napari_dlcb.models.spec import InferenceSpec

    def halo_48(rdf):
        for axis in rdf["outputs"][0]["axes"][2:]:
            axis["halo"] = 48

    model, meta = load_bioimageio(copy_package(package, tmp_path / "h48", halo_48))
    spec = InferenceSpec.from_meta(meta)
    assert meta.extra["halo"] == 48 and spec.halo == 48
    assert InferenceSpec.from_meta(loaded[1]).halo == 32  # the package as published
    img = np.load(package / "test_input.npy")[0, 0, 100:196, 100:196]
    prob, _ = segment((model, meta), img, tile=128, device="cpu")
    options = {"tile": 128, "device": "cpu", "normalizer": spec.normalizer()}
    with_48 = predict_tiled(model, img, halo=48, activation="sigmoid", **options)
    with_32 = predict_tiled(model, img, halo=32, activation="sigmoid", **options)
    np.testing.assert_allclose(prob, with_48, atol=1e-6)
    assert np.abs(prob - with_32).max() > 1e-4  # the halo really changes the tiles


def test_yaml_path_and_resolve_base(package, loaded, test_tensors):
    x = crop_input(test_tensors)
    model, meta = resolve_base(package / "bioimageio.yaml", task="segmentation")
    assert meta.extra["source"] == str((package / "bioimageio.yaml").resolve())
    assert is_bioimageio_package(package) and is_bioimageio_package(package / "bioimageio.yaml")
    with torch.no_grad():
        assert torch.equal(model(x), loaded[0](x))


def test_model_is_trainable(package, test_tensors):
    model, _ = load_bioimageio(package)
    params = list(model.parameters())
    assert params and all(p.requires_grad for p in params)
    x = crop_input(test_tensors, 128)
    target = (x > 0.5).float()
    with torch.no_grad():
        before = model(x).clone()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
    loss.backward()
    assert all(p.grad is not None for p in params)
    opt.step()
    model.eval()
    with torch.no_grad():
        after = model(x)
    assert (after - before).abs().max() > 1e-3


def test_fine_tuned_import_saves_and_loads(package, test_tensors, tmp_path):
    model, meta = load_bioimageio(package)
    with torch.no_grad():
        list(model.parameters())[-1].add_(0.25)  # a stand-in for a fine-tuning step
    x = crop_input(test_tensors)
    with torch.no_grad():
        want = model(x)
    meta.parent = str(package)
    save_model(model, tmp_path / "tuned", meta)
    again, meta2 = load_model(tmp_path / "tuned")
    assert isinstance(again, torch.jit.ScriptModule)
    assert meta2.output_activation == "sigmoid" and meta2.extra["halo"] == 32
    with torch.no_grad():
        assert torch.equal(again(x), want)


def test_zip_package(package, tmp_path, loaded, test_tensors):
    z = tmp_path / "model.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(package / "bioimageio.yaml", "bioimageio.yaml")
        zf.write(package / "weights.pt", "weights.pt")
    assert is_bioimageio_package(z)
    model, meta = load_bioimageio(z)
    assert meta.parent == str(z.resolve())
    x = crop_input(test_tensors, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded[0](x))


def test_wrong_sha256_is_refused(package, tmp_path):
    def edit(rdf):
        rdf["weights"]["torchscript"]["sha256"] = "0" * 64

    pkg = copy_package(package, tmp_path / "pkg", edit)
    with pytest.raises(DlcbError, match="sha256 of weights.pt does not match") as err:
        load_bioimageio(pkg)
    assert "\n" not in str(err.value)


def test_modified_weights_are_refused(package, tmp_path):
    pkg = copy_package(package, tmp_path / "pkg")
    with open(pkg / "weights.pt", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(DlcbError, match="sha256"):
        load_bioimageio(pkg)


def test_format_04_description(package, tmp_path):
    """The same network described in the older 0.4 format (axes strings, 'name' keys)."""
    sha = hashlib.sha256((package / "weights.pt").read_bytes()).hexdigest()
    rdf = {
        "format_version": "0.4.10",
        "type": "model",
        "name": "old style",
        # the fields a valid 0.4 description needs (bioimageio.spec validates it)
        "description": "the nuclei U-Net described in format 0.4",
        "authors": [{"name": "Test Author"}],
        "documentation": "README.md",
        "license": "MIT",
        "timestamp": "2019-12-11T11:22:32+00:00",
        "test_inputs": ["test_input.npy"],
        "test_outputs": ["test_output.npy"],
        "inputs": [
            {
                "name": "raw",
                "axes": "bcyx",
                "data_type": "float32",
                "shape": {"min": [1, 1, 64, 64], "step": [0, 0, 16, 16]},
                "preprocessing": [
                    {
                        "name": "scale_range",
                        "kwargs": {
                            "mode": "per_sample",
                            "axes": "xy",
                            "min_percentile": 1,
                            "max_percentile": 99.6,
                        },
                    }
                ],
            }
        ],
        "outputs": [
            {
                "name": "prob",
                "axes": "bcyx",
                "data_type": "float32",
                "shape": {
                    "reference_tensor": "raw",
                    "scale": [1, 1, 1, 1],
                    "offset": [0, 0, 0, 0],
                },
                "halo": [0, 0, 16, 24],
                "postprocessing": [{"name": "sigmoid"}],
            }
        ],
        "weights": {
            "torchscript": {"source": "./weights.pt", "sha256": sha, "pytorch_version": "1.5"}
        },
    }
    d = tmp_path / "old"
    d.mkdir()
    shutil.copy(package / "weights.pt", d / "weights.pt")
    (d / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    _, meta = load_bioimageio(d)
    assert meta.normalization == {
        "mode": "per_image_percentile",
        "p_low": 1.0,
        "p_high": 99.6,
        "eps": 1e-6,
        "per_channel": True,
    }
    assert meta.output_activation == "sigmoid"
    assert meta.extra["halo"] == 24
    assert meta.extra["min_size"] == [64, 64]
    assert meta.extra["size_multiple"] == 8


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(type="dataset"), "not a 'model'"),
        (lambda r: r["weights"].pop("torchscript"), "no TorchScript weights"),
        (
            lambda r: r["weights"]["torchscript"].update(source="https://example.org/w.pt"),
            "downloads nothing",
        ),
        (lambda r: r["weights"]["torchscript"].update(source="other.pt"), "missing"),
        (
            lambda r: r["inputs"][0]["preprocessing"].insert(
                0, {"id": "binarize", "kwargs": {"threshold": 0.5}}
            ),
            "unsupported preprocessing 'binarize'",
        ),
        (
            lambda r: r["outputs"][0].update(postprocessing=[{"id": "scale_range"}]),
            "unsupported postprocessing",
        ),
        (
            lambda r: r["inputs"][0]["axes"].insert(2, {"type": "space", "id": "z", "size": 8}),
            "'bczyx'",
        ),
        (lambda r: r["inputs"].append(dict(r["inputs"][0], id="raw2")), "2 inputs"),
    ],
)
def test_unsupported_packages(package, tmp_path, edit, message):
    pkg = copy_package(package, tmp_path / "pkg", edit)
    with pytest.raises(DlcbError, match=message):
        load_bioimageio(pkg)


def test_missing_package(tmp_path):
    with pytest.raises(DlcbError, match="not found"):
        load_bioimageio(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DlcbError, match="no bioimageio.yaml"):
        load_bioimageio(tmp_path / "empty")
    assert not is_bioimageio_package(tmp_path / "empty")


def test_validation_with_bioimageio_spec(package, tmp_path):

    def edit(rdf):
        rdf["inputs"][0]["preprocessing"][1]["id"] = "zero_mean_unit_variancex"

    pkg = copy_package(package, tmp_path / "pkg", edit)
    with pytest.raises(DlcbError, match="invalid bioimage.io description") as err:
        load_bioimageio(pkg)
    assert "\n" not in str(err.value) and "zero_mean_unit_variancex" in str(err.value)


# ------------------------------------------------------------------ files named by the package
@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("../../weights.pt", "outside"),
        ("sub/../../weights.pt", "outside"),
        ("/etc/passwd", "outside"),
        ("/dev/zero", "absolute path"),  # bioimageio.spec refuses it first
    ],
)
def test_weights_outside_the_package_are_refused(package, tmp_path, source, message):
    """Issue 12: a weights source may not leave the package (nothing is read from there)."""

    def edit(rdf):
        rdf["weights"]["torchscript"]["source"] = source

    pkg = copy_package(package, tmp_path / "a" / "b" / "pkg", edit)
    shutil.copy(package / "weights.pt", tmp_path / "weights.pt")  # what ../../ would reach
    with pytest.raises(DlcbError, match=message) as err:
        load_bioimageio(pkg)
    assert "\n" not in str(err.value) and "sha256" not in str(err.value)


def test_weights_linking_outside_the_package_are_refused(package, tmp_path):
    pkg = copy_package(package, tmp_path / "pkg")
    outside = tmp_path / "elsewhere.pt"
    shutil.copy(pkg / "weights.pt", outside)
    (pkg / "weights.pt").unlink()
    (pkg / "weights.pt").symlink_to(outside)
    with pytest.raises(DlcbError, match="links outside"):
        load_bioimageio(pkg)


def test_weights_that_are_not_a_regular_file_are_refused(package, tmp_path):
    import os

    pkg = copy_package(package, tmp_path / "pkg")
    (pkg / "weights.pt").unlink()
    os.mkfifo(pkg / "weights.pt")  # reading it would block forever
    with pytest.raises(DlcbError, match="not a regular file"):
        load_bioimageio(pkg)


@pytest.mark.parametrize("as_zip", [False, True])
def test_reads_are_bounded_by_the_declared_size(package, tmp_path, monkeypatch, as_zip):
    import napari_dlcb.models.bioimageio_package as bio

    pkg = copy_package(package, tmp_path / "pkg")
    if as_zip:
        z = tmp_path / "pkg.zip"
        with zipfile.ZipFile(z, "w") as zf:
            for f in pkg.iterdir():
                zf.write(f, f.name)
        pkg = z
    monkeypatch.setattr(bio, "MAX_FILE_BYTES", 100_000)
    with pytest.raises(DlcbError, match="larger than 100,000 bytes"):
        load_bioimageio(pkg)


def test_missing_bioimageio_spec_is_one_line(package, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_spec(name, *args, **kwargs):
        if name.startswith("bioimageio"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_spec)
    with pytest.raises(DlcbError, match=r"napari-dlcb\[bioimageio\]"):
        load_bioimageio(package)


def test_zip_package_with_base_and_registry(package, tmp_path, loaded, test_tensors):
    """A .zip is accepted wherever a model is: resolve_base (``--base``) and the predictor."""
    from napari_dlcb.inference.segment import segment

    z = tmp_path / "model.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(package / "bioimageio.yaml", "bioimageio.yaml")
        zf.write(package / "weights.pt", "weights.pt")
    model, meta = resolve_base(z, task="segmentation")
    assert meta.extra["source"] == str(z.resolve()) and meta.parent == str(z.resolve())
    img = np.load(package / "test_input.npy")[0, 0, :96, :96]
    prob_zip, _ = segment(str(z), img, device="cpu")
    prob_dir, _ = segment(str(package), img, device="cpu")
    np.testing.assert_array_equal(prob_zip, prob_dir)


def test_consent_before_running_the_package_weights(package, tmp_path):
    """TorchScript weights are code: a package runs only once the user agreed to its weights."""
    net = torch.jit.load(str(package / "weights.pt"), map_location="cpu")
    with torch.no_grad():
        list(net.parameters())[-1].add_(0.5)  # other weights: never agreed to
    pkg = copy_package(package, tmp_path / "pkg")
    torch.jit.save(net, str(pkg / "weights.pt"))
    digest = hashlib.sha256((pkg / "weights.pt").read_bytes()).hexdigest()
    rdf = yaml.safe_load((pkg / "bioimageio.yaml").read_text())
    rdf["weights"]["torchscript"]["sha256"] = digest
    (pkg / "bioimageio.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    z = tmp_path / "pkg.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in pkg.iterdir():
            zf.write(f, f.name)
    trust_this_session(False)
    try:
        for source in (pkg, z):
            with pytest.raises(UntrustedModelError, match="--trust-model") as err:
                load_bioimageio(source)
            assert "\n" not in str(err.value) and err.value.sha256 == digest
        assert not is_trusted(z, sha256=digest)
        load_bioimageio(z, trusted=True)  # the user agrees once...
        assert is_trusted(z, sha256=digest)
        model, _ = load_bioimageio(pkg)  # ...for these weights, in any package
        assert isinstance(model, torch.jit.ScriptModule)
    finally:
        trust_this_session(True)
