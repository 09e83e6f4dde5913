"""DNA models from elsewhere: TorchScript and ONNX files with a sidecar (models.external_dna)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from napari_dlcb.data.dna import one_hot
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.sequence import load_sequence_model, predict_sequences
from napari_dlcb.models.external_dna import load_external_model, read_sidecar
from napari_dlcb.models.trust import UntrustedModelError, is_trusted

L = 60


class _Profile(nn.Module):
    """A bpnet-like toy: (N, 4, L) -> profile (N, 2, L) and a count head (N, 2)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 7, padding=3)
        self.head = nn.Conv1d(8, 2, 5, padding=2)

    def forward(self, x):
        prof = self.head(torch.relu(self.conv(x)))
        return prof, prof.mean(-1)


class _Keras(nn.Module):
    """(N, L, 4) input in T, G, C, A order -> probabilities (N, 1), as a Keras export would be."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 3, 5)
        self.lin = nn.Linear(3, 1)

    def forward(self, x):
        h = torch.relu(self.conv(x.transpose(1, 2))).amax(-1)
        return torch.sigmoid(self.lin(h))


def _seqs(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGT"), L)) for _ in range(n)]


def _save(tmp_path, net, fmt, sidecar, name="m"):
    torch.manual_seed(0)
    net.eval()
    x = torch.randn(2, 4, L)
    if sidecar.get("layout") == "NLC":
        x = x.transpose(1, 2).contiguous()
    if fmt == "pt":
        path = tmp_path / f"{name}.pt"
        torch.jit.trace(net, x).save(str(path))
    else:
        path = tmp_path / f"{name}.onnx"
        torch.onnx.export(
            net, (x,), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}}
        )
    (tmp_path / f"{name}.json").write_text(json.dumps(sidecar))
    return path


PROFILE = {"input_length": L, "tasks": ["plus", "minus"], "output": "profile"}


@pytest.mark.parametrize("fmt", ["pt", "onnx"])
def test_profile_outputs_are_summed_over_the_window(tmp_path, fmt):
    torch.manual_seed(1)
    net = _Profile()
    path = _save(tmp_path, net, fmt, PROFILE)
    model, meta = load_external_model(path, trust=True, device="cpu")
    x = torch.as_tensor(one_hot(_seqs()))
    with torch.no_grad():
        prof = net(x)[0]
        whole = model(x)
        mid = model.windowed((20, 40))(x)
    assert meta.classes == ["plus", "minus"] and meta.extra["length"] == L
    assert whole.shape == (5, 2)
    np.testing.assert_allclose(whole.numpy(), prof.sum(-1).numpy(), atol=1e-4)
    np.testing.assert_allclose(mid.numpy(), prof[..., 20:40].sum(-1).numpy(), atol=1e-4)
    # predictions through the same path as our models: no strand averaging, raw values
    pred = predict_sequences(model, one_hot(_seqs()), meta=meta, device="cpu")
    np.testing.assert_allclose(pred, prof.sum(-1).numpy(), atol=1e-3)
    with pytest.raises(DlcbError, match="does not fit"):
        model.windowed((50, 70))(x)


def test_torchscript_needs_consent_and_onnx_does_not(tmp_path):
    path = _save(tmp_path, _Profile(), "pt", PROFILE)
    with pytest.raises(UntrustedModelError, match="--trust-model"):
        load_sequence_model(path, device="cpu")
    assert not is_trusted(path)
    load_sequence_model(path, device="cpu", trust=True)
    assert is_trusted(path)  # consent is remembered by sha256 ...
    load_sequence_model(path, device="cpu")  # ... so the same file opens again
    onnx_path = _save(tmp_path, _Profile(), "onnx", PROFILE, name="o")
    model, _ = load_sequence_model(onnx_path, device="cpu")
    assert model.fmt == "onnx"


@pytest.mark.parametrize("fmt", ["pt", "onnx"])
def test_alphabet_layout_and_probabilities_are_mapped(tmp_path, fmt):
    torch.manual_seed(2)
    net = _Keras()
    side = {"input_length": L, "tasks": ["bound"], "alphabet": "TGCA", "layout": "NLC"}
    side["activation"] = "probabilities"
    path = _save(tmp_path, net, fmt, side)
    model, meta = load_external_model(path, trust=True, device="cpu")
    x = torch.as_tensor(one_hot(_seqs()))
    with torch.no_grad():
        p = net(x[:, [3, 2, 1, 0]].transpose(1, 2))
        logits = model(x)
    np.testing.assert_allclose(torch.sigmoid(logits).numpy(), p.numpy(), atol=1e-5)
    assert meta.extra["task_type"] == "binary"


def test_mutation_map_on_an_onnx_profile_model(tmp_path):
    from napari_dlcb.interpret.ism import mutation_map

    net = _Profile()
    model, _ = load_external_model(_save(tmp_path, net, "onnx", PROFILE), device="cpu")
    model = model.windowed((25, 35))
    x = one_hot(_seqs(1))
    ism = np.asarray(mutation_map(model, x, device="cpu"))
    # exact against a naive reference with the PyTorch original
    xt = torch.as_tensor(x)
    with torch.no_grad():
        ref = net(xt)[0][..., 25:35].sum(-1)
        pos, base = 30, int(np.argmax(x[0, :, 30]) + 1) % 4
        mut = xt.clone()
        mut[0, :, pos] = 0
        mut[0, base, pos] = 1
        want = (net(mut)[0][..., 25:35].sum(-1) - ref)[0]
    assert ism.shape == (1, 4, L, 2)
    np.testing.assert_allclose(ism[0, base, pos], want.numpy(), atol=1e-4)
    assert np.abs(ism[0, :, :15]).max() < 1e-5  # outside the window's receptive field
    assert np.abs(ism[0, :, 25:35]).max() > 1e-3


def test_sidecar_errors_are_one_line(tmp_path):
    path = _save(tmp_path, _Profile(), "onnx", PROFILE)
    (tmp_path / "m.json").unlink()
    with pytest.raises(DlcbError, match="no sidecar"):
        read_sidecar(path)
    (tmp_path / "m.json").write_text(json.dumps({"tasks": ["a"], "alphabet": "ACGN"}))
    with pytest.raises(DlcbError, match="'alphabet'"):
        read_sidecar(path)
    (tmp_path / "m.json").write_text(json.dumps({**PROFILE, "tasks": ["only-one"]}))
    with pytest.raises(DlcbError, match=r"expected profile outputs \(N, 1, L\)"):
        load_external_model(path, device="cpu")


def test_cli_predicts_with_a_profile_window(tmp_path, monkeypatch):
    from napari_dlcb.cli import main
    from napari_dlcb.models import trust

    monkeypatch.setattr(trust, "_SESSION", {"trust_all": False})  # --trust-model sets it

    net = _Profile()
    path = _save(tmp_path, net, "pt", PROFILE)
    seqs = _seqs(3)
    (tmp_path / "t.tsv").write_text("seq\n" + "\n".join(seqs) + "\n")
    out = tmp_path / "p.tsv"
    args = ["predict", "sequence", "--model", str(path), "--table", str(tmp_path / "t.tsv")]
    args += ["--out", str(out), "--device", "cpu", "--profile-window", "10:50"]
    assert main(args) != 0  # TorchScript without consent: a one-line refusal
    assert main([*args, "--trust-model"]) == 0
    import pandas as pd

    got = pd.read_csv(out, sep="\t")[["score_plus", "score_minus"]].to_numpy()
    with torch.no_grad():
        want = net(torch.as_tensor(one_hot(seqs)))[0][..., 10:50].sum(-1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_cli_scores_the_variants_of_a_region_of_an_indexed_vcf(tmp_path):
    import pandas as pd

    from napari_dlcb.cli import main
    from napari_dlcb.io.tabix import compress_and_index

    path = _save(tmp_path, _Profile(), "onnx", PROFILE)
    rng = np.random.default_rng(3)
    chrom = "".join(rng.choice(list("ACGT"), 600))
    (tmp_path / "g.fa").write_text(">chr1\n" + chrom + "\n")
    rows = [(150, "a"), (180, "b"), (420, "c")]
    body = "".join(
        f"chr1\t{p}\t{i}\t{chrom[p - 1]}\t{'A' if chrom[p - 1] != 'A' else 'C'}\n" for p, i in rows
    )
    (tmp_path / "v.vcf").write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n" + body)
    gz = compress_and_index(tmp_path / "v.vcf", preset="vcf")
    out = tmp_path / "s.tsv"
    base = ["score-variants", "--model", str(path), "--fasta", str(tmp_path / "g.fa")]
    base += ["--vcf", str(gz), "--out", str(out), "--device", "cpu"]
    assert main([*base, "--region", "chr1:100-200"]) == 0
    t = pd.read_csv(out, sep="\t")
    assert sorted(t["id"]) == ["a", "b"] and (t["status"] == "ok").all()
    assert main([*base, "--region", "chr1:500-600"]) == 2  # no variant there: one line
