"""Consent before running code-carrying model files (TorchScript)."""

from __future__ import annotations

import json

import pytest
import torch

from napari_dlcb.cli import main
from napari_dlcb.models import trust
from napari_dlcb.models.meta import ModelMeta
from napari_dlcb.models.saved import load_model, save_model
from napari_dlcb.models.trust import UntrustedModelError, is_trusted, require_trust


class _Writer(torch.nn.Module):
    """A code-carrying model (its bytes differ per ``factor``, and so does its digest)."""

    def __init__(self, factor: float = 2.0):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def _foreign_torchscript_folder(tmp_path, factor=2.0):
    """A model folder with TorchScript this installation did not write (a zoo download)."""
    folder = tmp_path / "foreign"
    folder.mkdir()
    torch.jit.save(torch.jit.script(_Writer(factor)), str(folder / "model.pt"))
    from safetensors.torch import save_file

    save_file({}, str(folder / "weights.safetensors"))
    meta = ModelMeta("segmentation", {"name": "torchscript"}, ["background", "nuclei"])
    (folder / "metadata.json").write_text(json.dumps({"format_version": 1, **meta.to_dict()}))
    return folder


def test_foreign_torchscript_needs_consent(tmp_path, monkeypatch):
    monkeypatch.setattr(trust, "_SESSION", {"trust_all": False})
    folder = _foreign_torchscript_folder(tmp_path)
    with pytest.raises(UntrustedModelError, match="can run code on this computer"):
        load_model(folder)
    assert not is_trusted(folder / "model.pt")
    require_trust(folder / "model.pt", trusted=True)  # the user agrees once...
    model, _ = load_model(folder)  # ...and the same file loads from then on
    assert torch.equal(model(torch.ones(1, 1, 4, 4)), torch.full((1, 1, 4, 4), 2.0))
    (folder / "model.pt").write_bytes((folder / "model.pt").read_bytes() + b"\0")
    with pytest.raises(UntrustedModelError):  # a changed file is asked about again
        require_trust(folder / "model.pt")


def test_cli_refuses_without_trust_model_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trust, "_SESSION", {"trust_all": False})
    folder = _foreign_torchscript_folder(tmp_path, factor=3.0)
    images = tmp_path / "imgs"
    images.mkdir()
    import tifffile

    tifffile.imwrite(images / "a.tif", (torch.rand(32, 32) * 255).byte().numpy())
    code = main(
        [
            "predict",
            "segmentation",
            "--model",
            str(folder),
            "--images",
            str(images),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--trust-model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_our_own_models_never_ask(tmp_path, monkeypatch):
    from napari_dlcb.models.unet import UNet2D

    monkeypatch.setattr(trust, "_SESSION", {"trust_all": False})
    net = UNet2D(1, 2, base=4, depth=2)
    folder = save_model(
        net, tmp_path / "m", ModelMeta("segmentation", net.architecture(), ["background", "nuclei"])
    )
    load_model(folder)  # safetensors + architecture: no program runs, no consent needed


def test_save_model_is_one_atomic_folder_swap(tmp_path):
    from napari_dlcb.errors import DlcbError
    from napari_dlcb.models.unet import UNet2D

    net = UNet2D(1, 2, base=4, depth=2)
    meta = ModelMeta("segmentation", net.architecture(), ["background", "nuclei"])
    folder = save_model(net, tmp_path / "m", meta)
    (folder / "notes.txt").write_text("mine")
    save_model(net, folder, meta)  # replace: the user's extra files stay
    assert (folder / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no debris
    data = tmp_path / "data"
    data.mkdir()
    (data / "image.tif").write_bytes(b"precious")
    with pytest.raises(DlcbError, match="other files"):
        save_model(net, data, meta)  # never over a folder of other things
    assert (data / "image.tif").read_bytes() == b"precious"
