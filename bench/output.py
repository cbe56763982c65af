"""What a run leaves behind: the table, the machine description, the JSON file, the chart
inputs, and the comparison with an earlier run's JSON."""
from __future__ import annotations

import importlib
import json
import math
import os
import platform
import subprocess
from typing import List, Optional

import torch

SCHEMA = "seqkern-bench/1"
STATUS_OK, STATUS_FAILED, STATUS_NA = "ok", "FAILED", "n/a"
BASELINE_NAMES = {"cpu": "torch", "cuda": "torch.nn on CUDA (cuDNN for the recurrent layers)"}
BACKEND_NAMES = {"cpp": "seqkern C++ backend", "triton": "seqkern Triton backend",
                 "reference": "seqkern NumPy reference backend (SEQKERN_BACKEND=reference)"}


def seqkern_backends(devices) -> dict:
    """The backend seqkern dispatches to on each device (SEQKERN_BACKEND can override it)."""
    from seqkern import BackendUnavailableError, backend_for

    chosen = {}
    for device in devices:
        try:
            chosen[device] = backend_for(torch.device(device))
        except BackendUnavailableError as error:
            chosen[device] = f"none ({error})"
    return chosen


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module_name: str) -> Optional[str]:
    try:
        return importlib.import_module(module_name).__version__
    except ImportError:
        return None


def _git_commit() -> Optional[str]:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        "seqkern": _version("seqkern"),
        "git_commit": _git_commit(),
        "cuda": None,
    }
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info["cuda"] = {"device": properties.name, "capability": f"{properties.major}.{properties.minor}",
                        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    return info


def write_json(path: str, document: dict) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1)
        handle.write("\n")


def load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    if document.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a seqkern benchmark result (schema {document.get('schema')!r}, "
                         f"expected {SCHEMA!r})")
    return document


# ---------------------------------------------------------------------------------------------
# Formatting


RATE_NAMES = {"flops": "GFLOP/s of one large torch.mm (the GEMM floor's rate)",
              "bytes": "GB/s read+written by copy_() into a preallocated tensor (the memory floor's rate)",
              "clone": "GB/s of clone() (for reference: also faults in fresh pages; no floor)"}
NOISY_SPREAD = 0.25


def noisy(case: dict) -> bool:
    """Whether either contender's IQR exceeds NOISY_SPREAD of its median."""
    return any(summary["iqr"] > NOISY_SPREAD * summary["median"] for summary in case["summary"].values())


def _ms(summary: Optional[dict]) -> str:
    if not summary:
        return "-"
    spread = 100.0 * summary["iqr"] / summary["median"] if summary["median"] > 0 else 0.0
    return f"{_ms_plain(summary['median'])} ±{spread:.0f}%" if spread < 1000 else f"{_ms_plain(summary['median'])} ±>999%"


def _ratio(value: Optional[float], suffix: str = "x") -> str:
    return "-" if value is None else f"{value:.2f}{suffix}"


def _render(headers: List[str], rows: List[List[str]]) -> List[str]:
    widths = [max(len(row[i]) for row in [headers] + rows) for i in range(len(headers))]

    def line(cells):
        return "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                         for i, (cell, width) in enumerate(zip(cells, widths))).rstrip()
    return [line(headers), line(["-" * width for width in widths])] + [line(row) for row in rows]


def table(document: dict) -> str:
    """The results table, one block per (device, dtype), then the n/a and FAILED reasons."""
    lines: List[str] = []
    headers = ["case", "torch ms", "seqkern ms", "speedup", "floor ms", "torch/floor", "seqkern/floor", "check"]
    blocks: dict = {}
    for case in document["cases"]:
        blocks.setdefault((case["device"], case["dtype"]), []).append(case)
    for (device, dtype), cases in blocks.items():
        info = document["machine"]
        where = info["cpu_model"] if device == "cpu" else (info["cuda"] or {}).get("device", device)
        lines.append(f"{device} {dtype} — {where}, {info['threads']} threads — "
                     f"torch = {BASELINE_NAMES.get(device, 'torch')}, "
                     f"seqkern = {BACKEND_NAMES.get(document['seqkern_backends'][device], document['seqkern_backends'][device])}")
        rows = []
        for case in cases:
            summary = case["summary"]
            check = case["status"]
            if case["status"] == STATUS_OK and case["check"]:
                check = f"ok {case['check']['max_relative_error']:.0e}"
            rows.append([case["label"], _ms(summary.get("torch")), _ms(summary.get("seqkern")),
                         _ratio(case["speedup"]) + (" ?" if noisy(case) else ""), _ms_plain(case["floor"]["seconds"]),
                         _ratio(case["torch_over_floor"]), _ratio(case["seqkern_over_floor"]), check])
        lines += _render(headers, rows) + [""]
    reasons: dict = {}
    for case in document["cases"]:
        if case["status"] != STATUS_OK:
            reasons.setdefault((case["status"], case["reason"]), []).append(case["label"])
    for (status, reason), labels in reasons.items():
        lines.append(f"{status}: {reason} ({len(labels)} case{'s' if len(labels) != 1 else ''})")
    calibration = document["calibration"]
    for entry in calibration:
        lines.append(f"{entry['device']} {entry['dtype']}: {entry['median'] / 1e9:.1f} {RATE_NAMES[entry['kind']]}, "
                     f"median of {len(entry['samples'])} samples taken before and after the cases")
    lines.append("times: median per call over the repeats, ±IQR/median; speedup = torch median / seqkern median; "
                 f"? = a spread above {NOISY_SPREAD:.0%} of the median: that ratio is unreliable")
    busiest = max(document["load_average"]["before"][0], document["load_average"]["after"][0])
    cpus = document["machine"]["logical_cpus"] or 1
    if busiest > 0.5 * cpus:
        lines.append(f"warning: 1-minute load average up to {busiest:.1f} on {cpus} CPUs around this run: "
                     "other processes competed for the CPU, so times are inflated and noisy "
                     "(torch and seqkern were interleaved, so their ratio suffers less)")
    return "\n".join(lines)


def _ms_plain(seconds: Optional[float]) -> str:
    """Milliseconds to 4 significant digits, never in exponent form."""
    if seconds is None:
        return "-"
    milliseconds = seconds * 1e3
    if milliseconds <= 0:
        return "0"
    decimals = max(0, 3 - math.floor(math.log10(milliseconds)))
    return f"{milliseconds:.{decimals}f}"


def _change(old: Optional[float], new: Optional[float]) -> str:
    if old is None or new is None or old <= 0:
        return "-"
    return f"{100.0 * (new / old - 1.0):+.1f}%"


def _median(case: dict, contender: str) -> Optional[float]:
    summary = case["summary"].get(contender)
    return summary["median"] if summary else None


def comparison(old: dict, new: dict) -> str:
    """Per case present in both runs: torch and seqkern times old -> new and the speedups."""
    lines = [f"change against the run of {old['created']} ({old['machine']['cpu_model']}, "
             f"{old['machine']['threads']} threads); negative = faster now"]
    if (old["machine"]["cpu_model"], old["machine"]["threads"]) != (new["machine"]["cpu_model"],
                                                                   new["machine"]["threads"]):
        lines.append("note: the runs differ in CPU model or thread count")
    old_cases = {case["key"]: case for case in old["cases"]}
    headers = ["case", "torch ms old", "new", "change", "seqkern ms old", "new", "change",
               "speedup old", "new"]
    rows = []
    for case in new["cases"]:
        before = old_cases.get(case["key"])
        if before is None:
            continue
        torch_old, torch_new = _median(before, "torch"), _median(case, "torch")
        seqkern_old, seqkern_new = _median(before, "seqkern"), _median(case, "seqkern")
        rows.append([f"{case['label']} [{case['device']} {case['dtype']}]",
                     _ms_plain(torch_old), _ms_plain(torch_new), _change(torch_old, torch_new),
                     _ms_plain(seqkern_old), _ms_plain(seqkern_new), _change(seqkern_old, seqkern_new),
                     _ratio(before["speedup"]), _ratio(case["speedup"])])
    if rows:
        lines += _render(headers, rows)
    unmatched = len(new["cases"]) - len(rows)
    lines.append(f"{len(rows)} cases in both runs; {unmatched} only in this run, "
                 f"{len(old_cases) - len(rows)} only in the old one")
    return "\n".join(lines)
