"""DanQ (CNN + bidirectional LSTM) and DeepSEA on the same engine, CLI and interpretation (issue 13)."""

from __future__ import annotations

import gzip
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from napari_dlcb.cli import main
from napari_dlcb.data.dna import one_hot
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.sequence import load_sequence_model, predict_sequences
from napari_dlcb.interpret.dna_attribution import (
    deeplift_shap,
    dna_integrated_gradients,
    gradient_x_input,
)
from napari_dlcb.interpret.ism import fast_path_supported, mutation_map, naive_mutation_map
from napari_dlcb.models.dna import DanQ, DeepSEA, build_dna_model, is_recurrent
from napari_dlcb.models.saved import build_model
from napari_dlcb.training.metrics import auroc

MOTIF = "TGATAAGA"
L = 60


def _planted(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = list(rng.choice(list("ACGT"), L))
        i = int(rng.integers(0, L - len(MOTIF)))
        s[i : i + len(MOTIF)] = MOTIF
        out.append("".join(s))
    return out


def _tiny_danq(n_tasks: int = 2) -> DanQ:
    torch.manual_seed(0)
    return DanQ(n_tasks, length=L, filters=6, kernel_size=7, pool=5, lstm=4, hidden=8).eval()


def _tiny_deepsea() -> DeepSEA:
    torch.manual_seed(0)
    return DeepSEA(2, length=L, filters=(6, 6, 6), kernels=(5, 5, 5), hidden=8).eval()


def test_architectures_rebuild_from_their_config():
    x = torch.as_tensor(one_hot(_planted(3, 1)))
    for model in (_tiny_danq(), _tiny_deepsea()):
        again = build_model(model.config)  # what loading a saved model does
        again.load_state_dict(model.state_dict())
        torch.testing.assert_close(again.eval()(x), model(x))
    assert is_recurrent(_tiny_danq()) and not is_recurrent(_tiny_deepsea())
    with pytest.raises(DlcbError, match="longer windows"):
        build_dna_model("danq", length=10, pool=13)


def test_danq_mutation_map_is_exact_batched_ism(caplog):
    model = _tiny_danq()
    x = one_hot(_planted(2, 2))
    assert not fast_path_supported(model)
    with caplog.at_level(logging.INFO, logger="napari_dlcb.interpret.ism"):
        auto = mutation_map(model, x, device="cpu", batch_size=37)
    assert "exact batched ISM" in caplog.text
    naive = naive_mutation_map(model, x, device="cpu")
    assert auto.shape == (2, 4, L, 2)
    np.testing.assert_allclose(auto, naive, atol=1e-5)
    # one reference: the alt-minus-ref logit at one position, by hand
    with torch.no_grad():
        xt = torch.as_tensor(x[:1]).clone()
        ref = model(xt)[0, 1]
        xt[0, :, 17] = 0
        xt[0, 2, 17] = 1
        alt = model(xt)[0, 1]
    assert auto[0, 2, 17, 1] == pytest.approx(float(alt - ref), abs=1e-5)
    with pytest.raises(DlcbError, match="recurrent"):
        mutation_map(model, x, device="cpu", method="fast")


def test_deepsea_fast_ism_matches_naive():
    model = _tiny_deepsea()
    x = one_hot(_planted(2, 3))
    np.testing.assert_allclose(
        mutation_map(model, x, device="cpu"), naive_mutation_map(model, x, device="cpu"), atol=1e-5
    )


def test_gradient_attributions_work_on_danq_and_deeplift_refuses_it():
    model = _tiny_danq()
    x = one_hot(_planted(3, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gxi = gradient_x_input(model, x, target=1, device="cpu")
    ig = dna_integrated_gradients(model, x, target=1, device="cpu", n_steps=16)
    for att in (gxi, ig):
        assert att.map.shape == (3, 4, L) and np.isfinite(att.map).all()
        assert np.abs(att.map).sum() > 0
    # integrated gradients are complete: attributions sum to f(x) - f(baseline)
    assert ig.completeness is not None and np.abs(ig.completeness).max() < 0.05
    assert not model.training and all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    with pytest.raises(DlcbError, match="recurrent"):
        deeplift_shap(model, x, target=0, device="cpu")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    d = tmp_path_factory.mktemp("danq")
    train = d / "train.seq.gz"
    with gzip.open(train, "wt") as fh:
        fh.write("seq\tBound\n")
        for s in _planted(400, 0):
            fh.write(f"{s}\t1\n")
    rng = np.random.default_rng(5)
    neg = ["".join(rng.choice(list("ACGT"), L)) for _ in range(100)]
    test = d / "test.tsv"
    pd.DataFrame({"seq": _planted(100, 9) + neg, "Bound": [1] * 100 + [0] * 100}).to_csv(
        test, sep="\t", index=False
    )
    return train, test


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "filters", "epochs"), [("danq", 16, 8), ("deepsea", 16, 8)])
def test_cli_trains_and_scores_with_architecture(arch, filters, epochs, table, tmp_path):
    train, test = table
    out = tmp_path / arch
    args = ["train", "sequence", "--table", str(train), "--out", str(out)]
    args += ["--architecture", arch, "--filters", str(filters), "--epochs", str(epochs)]
    args += ["--batch-size", "32"]
    args += ["--lr", "0.003", "--device", "cpu", "--seed", "0", "--folds", "1"]
    assert main(args) == 0 and (out / "model.pt").is_file()  # TorchScript export too
    model, meta = load_sequence_model(out, device="cpu")
    assert meta.architecture["name"] == arch and meta.architecture["length"] == L
    assert is_recurrent(model) == (arch == "danq")
    df = pd.read_csv(test, sep="\t")
    p = predict_sequences(model, df.seq.tolist(), meta=meta, device="cpu")[:, 0]
    assert auroc(p, df.Bound.to_numpy()) > 0.9  # it learnt the planted motif
    with pytest.raises(DlcbError, match="60 bp windows"):
        predict_sequences(model, ["ACGT" * 20], meta=meta, device="cpu")
