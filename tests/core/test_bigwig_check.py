"""Corrupt bigWigs are refused in one line before pyBigWig (C) can crash the process."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import pytest

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.bigwig import check_bigwig

pyBigWig = pytest.importorskip("pyBigWig")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    p = tmp_path_factory.mktemp("bw") / "ok.bw"
    bw = pyBigWig.open(str(p), "w")
    bw.addHeader([("chr1", 100_000), ("chr2", 50_000)], maxZooms=3)
    starts = list(range(0, 100_000, 50))
    bw.addEntries(
        ["chr1"] * len(starts),
        starts,
        ends=[s + 50 for s in starts],
        values=[float(i % 7) for i in range(len(starts))],
    )
    bw.addEntries(["chr2", "chr2"], [0, 100], ends=[50, 200], values=[1.0, 2.0])
    bw.close()
    return p


def _variants(data: bytes) -> dict[str, bytes]:
    header_only = data[:64]
    bad_chrom_id = bytearray(data)
    # the first chromosome tree leaf item: 64 header + 3 zooms * 24 + 40 summary + 32 + 4 + key
    bad_chrom_id[176 + 36 + 4 : 176 + 36 + 8] = (0x3D40_0000).to_bytes(4, "little")
    return {
        "magic-only": data[:4],
        "header-only": header_only,
        "half": data[: len(data) // 2],
        "nine-tenths": data[: len(data) * 9 // 10],
        "bad-chrom-id": bytes(bad_chrom_id),
    }


def test_a_good_bigwig_passes_and_reports_its_chromosomes(good):
    assert check_bigwig(good) == {"chr1": 100_000, "chr2": 50_000}


def test_corrupt_bigwigs_are_one_line_errors_in_process(good, tmp_path):
    # header-only and bad-chrom-id crashed python inside pyBigWig (SIGSEGV) before the
    # check; run in a child so that a crash is a failure, not the end of the test run
    names = []
    for name, data in _variants(good.read_bytes()).items():
        (tmp_path / f"{name}.bw").write_bytes(data)
        names.append(name)
    code = textwrap.dedent(
        f"""
        import sys
        from napari_dlcb.errors import DlcbError
        from napari_dlcb.io.tracks import SignalTrack
        for name in {names!r}:
            try:
                SignalTrack(r"{tmp_path}/" + name + ".bw")
            except DlcbError as err:
                print(name, "|", err)
            else:
                print(name, "| opened")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-500:]}"
    lines = dict(ln.split(" | ", 1) for ln in proc.stdout.splitlines())
    assert set(lines) == set(names)
    for name, message in lines.items():
        assert "corrupt or truncated bigWig" in message, (name, message)
        assert message.startswith(f"{name}.bw: ")
    assert proc.stderr.strip() == ""  # nothing from the C library either


def test_not_a_bigwig_at_all(tmp_path):
    p = tmp_path / "x.bw"
    p.write_bytes(b"\x00\x01\x02\x03" * 20)
    with pytest.raises(DlcbError, match="not a bigWig file"):
        check_bigwig(p)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fuzzed_bigwigs_never_crash_once_checked(good):
    """Byte flips in the header and indexes: refused, or safe for pyBigWig to read."""
    data = good.read_bytes()
    rng = random.Random(12)
    path = good.with_name("fuzz.bw")
    refused = crashed = 0
    for _ in range(250):
        b = bytearray(data)
        k = rng.choice([1, 2, 4, 8])
        pos = rng.choice([rng.randrange(0, 400), rng.randrange(len(data) - 1200, len(data) - k)])
        b[pos : pos + k] = bytes(rng.randrange(256) for _ in range(k))
        path.write_bytes(bytes(b))
        try:
            check_bigwig(path)
        except DlcbError:
            refused += 1
            continue
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1), os.dup2(null, 2)
            try:
                bw = pyBigWig.open(str(path))
                for c, n in bw.chroms().items():
                    bw.values(c, 0, n, numpy=True), bw.stats(c, 0, n), bw.intervals(c, 0, n)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        crashed += os.WIFSIGNALED(status)
    assert crashed == 0
    assert 20 < refused < 250  # the check refuses corruption, not everything
