"""The `make bench` report machinery on the smoke grid (T=3, B=2, H=8; 2x3x9x9 pooling).

Timings are meaningless here; what is checked is the plumbing: the JSON schema, the table,
the chart files, --compare, and that a wrong seqkern is reported FAILED with exit status 1.
The seqkern contender is injected through ``Builders`` (a known-correct copy of torch, a
deliberately wrong one, an unavailable one), so these tests do not depend on which seqkern
kernels have landed; one test runs the real seqkern and requires it never to FAIL.
"""
import copy
import glob
import json
import math
import os
import struct
import sys
import zlib

import pytest
import torch

# bench/ is a top-level folder of the checkout, not part of the installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import cases, measure, plot, report  # noqa: E402
from bench.cases import Builders, SeqkernUnavailable  # noqa: E402

FAST = ["--smoke", "--repeats", "2", "--warmup", "0", "--min-sample-ms", "1", "--threads", "1"]
SMOKE_CASES = len(cases.grid("smoke", "cpu", torch.float32))


def copy_of_torch():
    """A seqkern stand-in that is exactly torch: every case must pass its check."""
    return Builders(recurrent=lambda case, module: copy.deepcopy(module),
                    pooling=lambda case, function: function)


def wrong_recurrent(case, module):
    wrong = copy.deepcopy(module)
    with torch.no_grad():
        (wrong.weight_hh if isinstance(wrong, torch.nn.RNNCellBase) else wrong.weight_hh_l0).add_(0.5)
    return wrong


def wrong_pooling(case, function):
    return lambda x: function(x) * 1.5


def unavailable(case, baseline):
    raise SeqkernUnavailable("not built in this test")


def run(tmp_path, capsys, extra, builders, name="run"):
    out = tmp_path / name
    status = report.main(FAST + ["--out", str(out)] + extra, builders=builders)
    printed = capsys.readouterr()
    (json_path,) = glob.glob(str(out / "*.json"))
    with open(json_path, encoding="utf-8") as handle:
        document = json.load(handle)
    return status, printed, document, json_path


def read_png(path):
    """(width, height, raw scanlines) of an 8-bit RGB PNG, checking its chunk CRCs."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks[kind] = chunks.get(kind, b"") + body
        position += 12 + length
    width, height, depth, color_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color_type) == (8, 2)
    return width, height, zlib.decompress(chunks[b"IDAT"])


def test_report_json_table_chart_and_compare(tmp_path, capsys):
    status, printed, document, json_path = run(tmp_path, capsys, [], copy_of_torch(), "first")
    assert status == 0
    assert document["schema"] == "seqkern-bench/1"
    machine = document["machine"]
    for key in ("cpu_model", "threads", "torch", "triton", "numpy", "platform"):
        assert key in machine
    assert machine["threads"] == 1 and machine["torch"] == torch.__version__
    assert len(document["load_average"]["before"]) == 3 and len(document["load_average"]["after"]) == 3
    kinds = {entry["kind"] for entry in document["calibration"]}
    assert kinds == {"flops", "bytes", "clone"}
    assert all(len(entry["samples"]) == 2 * report.CALIBRATION_REPEATS and entry["median"] > 0
               for entry in document["calibration"])
    assert len(document["cases"]) == SMOKE_CASES
    for case in document["cases"]:
        assert case["status"] == "ok", case
        assert case["check"]["max_relative_error"] == 0.0
        assert set(case["samples"]) == {"torch", "seqkern"}
        assert all(len(values) == 2 and min(values) > 0 for values in case["samples"].values())
        assert case["summary"]["seqkern"]["median"] > 0
        assert case["floor"]["seconds"] > 0
        assert math.isclose(case["speedup"],
                            case["summary"]["torch"]["median"] / case["summary"]["seqkern"]["median"])
    table = printed.out
    assert "seqkern/floor" in table and "lstm train T=3 B=2 H=8" in table and "lstm_cell train T=3 B=2 H=8" in table
    assert "max_pool2d fwd+bwd k3s2p1 NHWC 2x3x9x9" in table
    assert "FAILED" not in table and "bench [" in printed.err

    base = json_path[:-len(".json")]
    width, height, scanlines = read_png(base + ".png")
    assert len(scanlines) == height * (1 + 3 * width)
    assert height > SMOKE_CASES * plot.ROW_H
    svg = open(base + ".svg", encoding="utf-8").read()
    assert svg.startswith("<svg") and svg.count("lstm ") == 2 and svg.count("lstm_cell ") == 2

    status, printed, _, _ = run(tmp_path, capsys, ["--compare", json_path], copy_of_torch(), "second")
    assert status == 0
    assert "change against the run of" in printed.out
    assert f"{SMOKE_CASES} cases in both runs" in printed.out


def test_wrong_seqkern_is_failed_and_not_timed(tmp_path, capsys):
    builders = Builders(recurrent=wrong_recurrent, pooling=wrong_pooling)
    status, printed, document, _ = run(tmp_path, capsys, ["--only", "lstm,lstm_cell,max_pool2d"], builders)
    assert status == 1
    assert {case["op"] for case in document["cases"]} == {"lstm", "lstm_cell", "max_pool2d"}
    for case in document["cases"]:
        assert case["status"] == "FAILED", case
        assert case["check"]["max_relative_error"] > case["check"]["bound"]
        assert set(case["samples"]) == {"torch"}
        assert case["speedup"] is None
    assert "seqkern disagrees with torch" in printed.out
    assert "FAILED the correctness check" in printed.err


def test_unavailable_seqkern_is_reported_not_a_crash(tmp_path, capsys):
    builders = Builders(recurrent=unavailable, pooling=unavailable)
    status, printed, document, _ = run(tmp_path, capsys, ["--only", "gru,max_pool2d"], builders)
    assert status == 0
    assert all(case["status"] == "n/a" and case["reason"] == "not built in this test"
               for case in document["cases"])
    assert "n/a: not built in this test" in printed.out


def test_real_seqkern_never_fails_its_check(tmp_path, capsys):
    status, printed, document, _ = run(tmp_path, capsys, [], None)
    assert {case["status"] for case in document["cases"]} <= {"ok", "n/a"}, printed.out
    assert status == 0


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert report.main(["--only", "lstn", "--out", str(tmp_path)]) == 2
    assert "unknown lstn" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        report.main(["--dtype", "float31"])
    assert raised.value.code == 2


def test_relative_error_flags_shape_and_nan_mismatches():
    a = torch.tensor([1.0, 2.0, float("nan")])
    assert measure.relative_error(a, a.clone()) == 0.0
    assert measure.relative_error(a, torch.tensor([1.0, 2.0, 3.0])) == math.inf
    assert measure.relative_error(a[:2], a) == math.inf
    assert measure.relative_error(torch.tensor([1.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert measure.quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
