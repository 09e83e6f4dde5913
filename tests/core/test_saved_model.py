"""Saved-model format, architecture registry and base-model resolution."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.models import architectures, saved
from napari_dlcb.models.registry import (
    BUILTIN_MODELS,
    is_model_dir,
    list_builtin,
    load_builtin,
    resolve_base,
)
from napari_dlcb.models.saved import (
    ModelMeta,
    build_model,
    load_meta,
    load_model,
    load_weights,
    register_architecture,
    save_model,
    save_weights,
)
from napari_dlcb.models.unet import UNet2D


def tiny_unet(n_classes: int = 2) -> UNet2D:
    torch.manual_seed(0)
    return UNet2D(1, n_classes, base=4, depth=2)


def meta_for(net: nn.Module, **kw) -> ModelMeta:
    arch = net.architecture() if hasattr(net, "architecture") else {"name": "torchscript"}
    classes = kw.pop("classes", ["background", "nuclei"])
    return ModelMeta("segmentation", arch, classes, **kw)


@pytest.fixture(scope="module")
def _saved_template(tmp_path_factory) -> tuple[Path, UNet2D]:
    tmp_path = tmp_path_factory.mktemp("saved")
    net = tiny_unet()
    # non-trivial BN statistics, so a round trip that forgot buffers would fail
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 1, 32, 32) * 3 + 1)
    net.eval()
    meta = meta_for(
        net,
        label_kind="scribbles",
        class_values=[1, 2],
        normalization={"mode": "per_image_zscore"},
        parent="builtin:unet2d-nuclei",
        extra={"epochs": np.int64(3), "loss": np.float32(0.25), "curve": np.arange(3)},
    )
    folder = save_model(net, tmp_path / "model", meta, example_input=torch.randn(1, 1, 24, 24))
    return folder, net


@pytest.fixture
def saved_dir(_saved_template, tmp_path) -> tuple[Path, UNet2D]:
    """A fresh copy of a saved model folder (tests may break it) and its network."""
    folder, net = _saved_template
    return Path(shutil.copytree(folder, tmp_path / "model")), copy.deepcopy(net)


# ---------------------------------------------------------------------------- round trip
def test_save_writes_the_three_files(saved_dir):
    folder, _ = saved_dir
    assert sorted(p.name for p in folder.iterdir()) == [
        "metadata.json",
        "model.pt",
        "weights.safetensors",
    ]
    d = json.loads((folder / "metadata.json").read_text())
    assert d["format_version"] == 1
    assert d["extra"] == {"epochs": 3, "loss": 0.25, "curve": [0, 1, 2]}


def test_round_trip_identical_outputs_and_meta(saved_dir, device):
    folder, net = saved_dir
    model, meta = load_model(folder, device=device)
    assert isinstance(model, UNet2D)
    assert not model.training
    assert next(model.parameters()).device.type == device
    assert all(p.requires_grad for p in model.parameters())
    assert meta.classes == ["background", "nuclei"]
    assert meta.class_values == [1, 2]
    assert meta.parent == "builtin:unet2d-nuclei"
    assert meta.normalization == {"mode": "per_image_zscore"}
    x = torch.randn(2, 1, 37, 50)
    with torch.no_grad():
        assert torch.equal(model(x.to(device)).cpu(), net.to(device)(x.to(device)).cpu())
    for k, v in net.state_dict().items():
        assert torch.equal(v.cpu(), model.state_dict()[k].cpu()), k


def test_torchscript_export_matches_eager(saved_dir):
    folder, net = saved_dir
    ts = torch.jit.load(str(folder / "model.pt"))
    assert not ts.training
    for shape in [(37, 50), (64, 64), (7, 9)]:
        x = torch.randn(1, 1, *shape)
        with torch.no_grad():
            torch.testing.assert_close(ts(x), net(x), rtol=1e-5, atol=1e-6)


def test_save_hands_the_model_back_unchanged(tmp_path):
    net = tiny_unet().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    save_model(net, tmp_path / "m", meta_for(net))
    assert net.training
    assert all(m.training for m in net.modules())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_saved_files_get_normal_permissions(saved_dir, tmp_path):
    folder, _ = saved_dir
    ref = tmp_path / "reference.txt"
    ref.write_text("x")  # permissions a plain open() gives under the current umask
    for name in ("metadata.json", "weights.safetensors", "model.pt"):
        assert (folder / name).stat().st_mode == ref.stat().st_mode, name


def test_load_meta_and_path_to_metadata_file(saved_dir):
    folder, _ = saved_dir
    assert load_meta(folder).classes == ["background", "nuclei"]
    model, meta = load_model(folder / "metadata.json")
    assert meta.task == "segmentation"


def test_resave_over_existing_folder(saved_dir):
    folder, _ = saved_dir
    other = tiny_unet(n_classes=3)
    save_model(other, folder, meta_for(other, classes=["a", "b", "c"]))
    model, meta = load_model(folder)
    assert meta.classes == ["a", "b", "c"]
    assert model.n_classes == 3
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_float16_weights_load_into_float32_model(tmp_path):
    net = tiny_unet()
    save_weights(net, tmp_path / "w.safetensors", dtype=torch.float16)
    size16 = (tmp_path / "w.safetensors").stat().st_size
    save_weights(net, tmp_path / "w32.safetensors")
    assert size16 < 0.6 * (tmp_path / "w32.safetensors").stat().st_size
    fresh = UNet2D(1, 2, base=4, depth=2)
    load_weights(fresh, tmp_path / "w.safetensors")
    assert fresh.head.weight.dtype == torch.float32
    torch.testing.assert_close(fresh.head.weight, net.head.weight, atol=1e-3, rtol=1e-3)


# ------------------------------------------------------------------------------ errors
def test_missing_folder(tmp_path):
    with pytest.raises(DlcbError, match="not found"):
        load_model(tmp_path / "nope")


def test_folder_without_metadata(tmp_path):
    with pytest.raises(DlcbError, match="metadata.json"):
        load_model(tmp_path)


def test_corrupt_metadata(saved_dir):
    folder, _ = saved_dir
    (folder / "metadata.json").write_text("{not json")
    with pytest.raises(DlcbError, match="cannot read"):
        load_model(folder)


def test_metadata_missing_fields(saved_dir):
    folder, _ = saved_dir
    (folder / "metadata.json").write_text(json.dumps({"task": "segmentation"}))
    with pytest.raises(DlcbError, match="missing architecture, classes"):
        load_model(folder)


def test_newer_format_version_is_refused(saved_dir):
    folder, _ = saved_dir
    d = json.loads((folder / "metadata.json").read_text())
    d["format_version"] = 99
    (folder / "metadata.json").write_text(json.dumps(d))
    with pytest.raises(DlcbError, match="upgrade"):
        load_model(folder)


def test_missing_weights(saved_dir):
    folder, _ = saved_dir
    (folder / "weights.safetensors").unlink()
    with pytest.raises(DlcbError, match="not found"):
        load_model(folder)


def test_random_bytes_weights(saved_dir):
    folder, _ = saved_dir
    (folder / "weights.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DlcbError, match="corrupt or truncated") as err:
        load_model(folder)
    assert "\n" not in str(err.value)


def test_truncated_weights(saved_dir):
    folder, _ = saved_dir
    f = folder / "weights.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(DlcbError, match="corrupt or truncated"):
        load_model(folder)


def test_mismatched_shapes(saved_dir):
    folder, _ = saved_dir
    d = json.loads((folder / "metadata.json").read_text())
    d["architecture"]["n_classes"] = 4
    (folder / "metadata.json").write_text(json.dumps(d))
    with pytest.raises(DlcbError, match=r"do not match the model: 2 with another shape"):
        load_model(folder)


def test_missing_and_unexpected_tensors(saved_dir):
    folder, net = saved_dir
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("head.")}
    state["extra.weight"] = torch.zeros(3)
    save_weights(state, folder / "weights.safetensors")
    with pytest.raises(DlcbError, match="2 missing .*1 unexpected"):
        load_model(folder)


def test_nan_weights(saved_dir):
    folder, net = saved_dir
    state = dict(net.state_dict())
    state["head.bias"] = torch.full_like(state["head.bias"], float("nan"))
    save_weights(state, folder / "weights.safetensors")
    with pytest.raises(DlcbError, match="NaN"):
        load_model(folder)


def test_unknown_architecture(saved_dir):
    folder, _ = saved_dir
    d = json.loads((folder / "metadata.json").read_text())
    d["architecture"] = {"name": "resnet9000"}
    (folder / "metadata.json").write_text(json.dumps(d))
    with pytest.raises(DlcbError, match="unknown model architecture 'resnet9000'"):
        load_model(folder)


def test_meta_that_does_not_describe_the_model(tmp_path):
    net = tiny_unet()
    meta = ModelMeta("segmentation", {**net.architecture(), "base": 8}, ["a", "b"])
    with pytest.raises(DlcbError, match="does not describe this model"):
        save_model(net, tmp_path / "m", meta)
    assert not (tmp_path / "m" / "weights.safetensors").exists()


def test_meta_validation():
    with pytest.raises(DlcbError, match="output_activation"):
        ModelMeta("segmentation", {"name": "unet2d"}, ["a"], output_activation="relu").validate()
    with pytest.raises(DlcbError, match="class_values"):
        ModelMeta("segmentation", {"name": "unet2d"}, ["a", "b"], class_values=[1]).validate()
    with pytest.raises(DlcbError, match="classes"):
        ModelMeta.from_dict({"task": "x", "architecture": {"name": "a"}, "classes": [1]})
    with pytest.warns(UserWarning, match="unknown"):
        m = ModelMeta.from_dict(
            {"task": "x", "architecture": {"name": "a"}, "classes": ["c"], "future": 1}
        )
    assert m.classes == ["c"]


def test_class_values_message_names_the_mismatch():
    """Issue 8: 'must be one integer per class' did not say which lists disagreed."""
    meta = ModelMeta("segmentation", {"name": "unet2d"}, ["background", "nuclei"])
    meta.class_values = [1, 2, 3]
    with pytest.raises(DlcbError) as err:
        meta.validate()
    text = str(err.value)
    assert "\n" not in text
    assert "[1, 2, 3] has 3 value(s)" in text and "['background', 'nuclei'] has 2" in text
    meta.class_values = [1, "2"]
    with pytest.raises(DlcbError, match="list of integers"):
        meta.validate()


def test_metadata_needs_no_torch():
    import subprocess
    import sys

    code = (
        "import sys; from napari_dlcb.models.meta import ModelMeta; "
        "from napari_dlcb.models.spec import InferenceSpec; "
        "InferenceSpec.from_meta(ModelMeta('segmentation', {'name': 'unet2d'}, ['a', 'b'])); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(saved.__file__).parents[2])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_inference_spec_from_meta():
    from napari_dlcb.models.spec import DEFAULT_HALO, InferenceSpec

    meta = ModelMeta(
        "segmentation",
        {"name": "unet2d"},
        ["background", "a", "b"],
        label_kind="scribbles",
        output_activation="none",
        normalization={"mode": "per_image_zscore"},
        extra={"postprocess": {"min_size": 3}, "size_multiple": 8},
    )
    spec = InferenceSpec.from_meta(meta)
    assert spec.activation is None and spec.halo == DEFAULT_HALO and spec.size_multiple == 8
    assert spec.class_values == (1, 2, 3) and spec.label_mode == "classes"
    assert spec.normalizer().mode == "per_image_zscore"
    assert spec.postprocess_options({"h": 1.0}) == {"min_size": 3, "h": 1.0}
    assert InferenceSpec.from_meta(meta.to_dict()) == spec
    meta.extra["halo"] = "wide"
    with pytest.raises(DlcbError, match="halo"):
        InferenceSpec.from_meta(meta)


# ------------------------------------------------------------------- torchscript models
def test_torchscript_architecture_round_trip_and_fine_tuning(tmp_path):
    net = tiny_unet()
    scripted = torch.jit.script(net)
    meta = meta_for(scripted)
    save_model(scripted, tmp_path / "ts", meta)
    model, meta2 = load_model(tmp_path / "ts")
    assert isinstance(model, torch.jit.ScriptModule)
    assert meta2.architecture == {"name": "torchscript"}
    x = torch.randn(1, 1, 30, 41)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net.eval()(x), rtol=0, atol=0)
    # fine-tune the ScriptModule, save again, and get the new weights back
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 2, (1, 30, 41)))
    loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        tuned = model(x)
    assert not torch.allclose(tuned, net(x))
    save_model(model, tmp_path / "ts2", meta2)
    again, _ = load_model(tmp_path / "ts2")
    with torch.no_grad():
        torch.testing.assert_close(again(x), tuned, rtol=0, atol=0)


def test_corrupt_torchscript_file(tmp_path):
    scripted = torch.jit.script(tiny_unet())
    save_model(scripted, tmp_path / "ts", meta_for(scripted))
    (tmp_path / "ts" / "model.pt").write_bytes(b"garbage" * 100)
    with pytest.raises(DlcbError, match="model.pt"):
        load_model(tmp_path / "ts")


# ---------------------------------------------------------------------- registry of nets
class PlainMLP(nn.Module):
    """A small non-UNet architecture, as other tasks register them."""

    def __init__(self, n_in: int = 4, n_out: int = 2, hidden: int = 8) -> None:
        super().__init__()
        self.n_in, self.n_out, self.hidden = n_in, n_out, hidden
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Unscriptable(PlainMLP):
    def forward(self, x, *args, **kwargs):  # **kwargs cannot be scripted
        return self.net(x)


@pytest.fixture
def registered():
    added = []

    def add(name, builder):
        register_architecture(name, builder)
        added.append(name)

    yield add
    for name in added:
        saved.ARCHITECTURES.pop(name, None)


def test_register_architecture_callable(tmp_path, registered):
    registered("test-mlp", PlainMLP)
    net = build_model({"name": "test-mlp", "n_in": 3, "hidden": 5})
    assert isinstance(net, PlainMLP) and net.hidden == 5
    meta = ModelMeta(
        "classification",
        {"name": "test-mlp", "n_in": 3, "hidden": 5},
        ["x", "y"],
        input_axes="bf",
        in_channels=3,
    )
    save_model(net, tmp_path / "mlp", meta)
    loaded, m = load_model(tmp_path / "mlp")
    x = torch.randn(5, 3)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert m.input_axes == "bf"


def test_register_architecture_lazy_string(registered):
    registered("test-unet-alias", "napari_dlcb.models.unet:UNet2D")
    net = build_model({"name": "test-unet-alias", "n_classes": 2, "base": 4, "depth": 2})
    assert isinstance(net, UNet2D)


def test_every_listed_architecture_resolves():
    # the table names other tasks' networks lazily, so load_model works in a fresh process
    for name in list(saved.ARCHITECTURES):
        assert callable(architectures.resolve_builder(name)), name
    register_architecture("unet2d", UNet2D)  # the same class as the lazy string: accepted


def test_register_architecture_errors(registered):
    with pytest.raises(ValueError, match="reserved"):
        register_architecture("torchscript", PlainMLP)
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("unet2d", PlainMLP)
    with pytest.raises(ValueError, match="module:attribute"):
        register_architecture("x", "no_colon_here")
    registered("test-broken", "napari_dlcb.does_not_exist:Net")
    with pytest.raises(DlcbError, match="unavailable"):
        build_model({"name": "test-broken"})
    with pytest.raises(DlcbError, match="cannot build"):
        build_model({"name": "unet2d", "nonsense": 1})
    with pytest.raises(DlcbError, match="no builder"):
        build_model({"name": "torchscript"})


def test_unscriptable_model_needs_example_input(tmp_path, registered):
    registered("test-unscriptable", Unscriptable)
    net = Unscriptable()
    meta = ModelMeta("classification", {"name": "test-unscriptable"}, ["a", "b"])
    with pytest.raises(DlcbError, match="example_input"):
        save_model(net, tmp_path / "u", meta)
    x = torch.randn(2, 4)
    save_model(net, tmp_path / "u", meta, example_input=x)
    ts = torch.jit.load(str(tmp_path / "u" / "model.pt"))
    with torch.no_grad():
        torch.testing.assert_close(ts(x), net(x))


# ------------------------------------------------------------------- built-in + resolve
def test_builtin_table():
    assert "unet2d-nuclei" in list_builtin()
    assert "unet2d-nuclei" in list_builtin("segmentation")
    assert "unet2d-nuclei" not in list_builtin("sequence")
    entry = BUILTIN_MODELS["unet2d-nuclei"]
    assert entry.available
    weights = Path(saved.__file__).parent / "weights"
    assert (weights / entry.weights).stat().st_size < 5 * 2**20
    assert (weights / entry.card).is_file()


def test_load_builtin_unknown_name():
    with pytest.raises(DlcbError, match="no built-in model named 'nope'"):
        load_builtin("nope")


def test_resolve_base_builtin_forms():
    m1, meta1 = resolve_base("builtin")
    m2, meta2 = resolve_base("builtin:unet2d-nuclei", task="segmentation")
    assert meta1.extra["source"] == meta2.extra["source"] == "builtin:unet2d-nuclei"
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(m1(x), m2(x))


def test_resolve_base_saved_folder(saved_dir):
    folder, net = saved_dir
    model, meta = resolve_base(str(folder))
    assert meta.extra["source"] == str(folder.resolve())
    x = torch.randn(1, 1, 20, 20)
    with torch.no_grad():
        assert torch.equal(model(x), net(x))


def test_is_model_dir_from_file_names(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    assert not is_model_dir(folder)
    assert not is_model_dir(tmp_path / "missing")
    (folder / "metadata.json").write_text("{}")
    assert is_model_dir(folder)
    assert is_model_dir(str(folder / "metadata.json"))
    package = tmp_path / "package"
    package.mkdir()
    (package / "rdf.yaml").write_text("type: model\n")
    assert is_model_dir(package)


def test_resolve_base_errors(tmp_path, saved_dir):
    with pytest.raises(DlcbError, match="not found"):
        resolve_base(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DlcbError, match="cannot use .* as a base model"):
        resolve_base(tmp_path / "empty")
    with pytest.raises(DlcbError, match="no built-in model"):
        resolve_base("builtin:nope")
    with pytest.raises(DlcbError, match="no default built-in model"):
        resolve_base("builtin", task="astrology")
    folder, _ = saved_dir
    with pytest.raises(DlcbError, match="is a segmentation model, not a sequence model"):
        resolve_base(folder, task="sequence")
    with pytest.raises(DlcbError):
        resolve_base("")


def test_models_package_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, napari_dlcb.models as m; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'load_model' in dir(m); print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(saved.__file__).parents[2])},
        check=False,
    )
    assert out.returncode == 0, out.stderr
