"""`make bench`: seqkern against torch.nn and the hardware floor, on this machine.

    python -m bench.report [--full | --smoke] [--only lstm,gru] [--threads 2] [--dtype float32]
                           [--device cpu|cuda|all] [--repeats 5] [--compare OLD.json] [--out DIR]

For every case, in this process: check that seqkern agrees with torch (outputs and, for a
training step, gradients), then time torch and seqkern in turns, and set both against the
floor: for recurrent layers the matmul FLOPs at the FLOP rate of one large torch.mm, for
pooling the bytes moved at the bandwidth of copy_(), both measured in this run. Prints a
table, writes <out>/<timestamp>.json (machine, versions, every sample) and a speedup chart
(<timestamp>.png and .svg). Exit status 1 when any case FAILED its check.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from . import cases as cases_module
from . import measure, output, plot
from .cases import Builders

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
          "float16": torch.float16}
CALIBRATION_REPEATS = 3


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--full", action="store_const", dest="grid", const="full",
                      help="add DeepBench-style LSTM/GRU shapes and 1d/3d pooling")
    grid.add_argument("--smoke", action="store_const", dest="grid", const="smoke",
                      help="tiny shapes: checks the set-up in seconds, timings mean nothing")
    parser.set_defaults(grid="default")
    parser.add_argument("--only", type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
                        help="comma-separated ops: lstm, gru, rnn, lstm_cell, gru_cell, rnn_cell, max_pool1d/2d/3d, "
                             "or recurrent, pool")
    parser.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads (default 2)")
    parser.add_argument("--dtype", type=lambda text: text.split(","),
                        help="comma-separated dtypes (default float32 on CPU, float32,bfloat16 on CUDA)")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                        help="where to run (default: CPU, and CUDA when available)")
    parser.add_argument("--repeats", type=int, default=5, help="timed samples per contender (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (default 1)")
    parser.add_argument("--min-sample-ms", type=float, default=50.0,
                        help="a sample repeats the call until it lasts this long (default 50)")
    parser.add_argument("--case-budget-s", type=float, default=10.0,
                        help="stop repeating a case after this long, once it has 3 samples (default 10)")
    parser.add_argument("--compare", metavar="OLD.json", help="print the change against an earlier run")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"result folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or min(args.warmup, args.min_sample_ms, args.case_budget_s) < 0:
        parser.error("--threads and --repeats must be >= 1; --warmup, --min-sample-ms, --case-budget-s >= 0")
    unknown = [name for name in (args.dtype or []) if name not in DTYPES]
    if unknown:
        parser.error(f"--dtype: unknown {', '.join(unknown)}; choose from {', '.join(DTYPES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    return args


def build_cases(args: argparse.Namespace) -> list:
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [device for device in devices if device == "cpu" or torch.cuda.is_available()]
    selected = []
    for device in devices:
        names = args.dtype or (["float32", "bfloat16"] if device == "cuda" else ["float32"])
        for name in names:
            selected += cases_module.grid(args.grid, device, DTYPES[name])
    return cases_module.select(selected, args.only)


class Progress:
    """One status line on stderr: redrawn in place on a terminal, one line per case otherwise."""

    def __init__(self, total: int, stream=None):
        self.total, self.begin = total, time.perf_counter()
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()

    def show(self, done: int, text: str) -> None:
        filled = 20 * done // max(self.total, 1)
        line = (f"bench [{'#' * filled}{'.' * (20 - filled)}] {done}/{self.total} "
                f"{time.perf_counter() - self.begin:5.0f}s {text}")
        if self.interactive:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.interactive:
            self.stream.write("\n")
        self.stream.flush()


def _error_text(error: BaseException) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}"[:300]


@dataclass
class Checked:
    """A case after its correctness check: the contenders that may be timed, and why not the others."""
    steps: Dict[str, Callable]
    status: str
    reason: str = ""
    check: Optional[dict] = None


def prepare_and_check(case, builders: Builders) -> Checked:
    """Build torch's and seqkern's step for ``case`` and compare one run of each. A seqkern
    that disagrees with torch, or raises, is FAILED and dropped from ``steps``; one that
    is not available here is "n/a"."""
    try:
        steps, missing = cases_module.prepare(case, builders)
        expected = steps["torch"]()
    except Exception as error:   # the baseline itself cannot run this case here
        return Checked({}, output.STATUS_NA, f"torch cannot run it: {_error_text(error)}")
    if missing is not None:
        return Checked(steps, output.STATUS_NA, missing)
    try:
        actual = steps["seqkern"]()
    except cases_module.UNAVAILABLE_ERRORS as error:
        del steps["seqkern"]
        return Checked(steps, output.STATUS_NA, _error_text(error))
    except Exception as error:
        del steps["seqkern"]
        return Checked(steps, output.STATUS_FAILED, f"seqkern raised {_error_text(error)}")
    error, tensor, bound = measure.compare(actual, expected, case.dtype, case.device)
    check = {"max_relative_error": error, "tensor": tensor, "bound": bound}
    if not error <= bound:
        del steps["seqkern"]     # a wrong kernel is not timed
        return Checked(steps, output.STATUS_FAILED,
                       f"seqkern disagrees with torch: {tensor} is off by {error:.3g} "
                       f"(max |diff| / max |torch|, bound {bound:g})", check)
    return Checked(steps, output.STATUS_OK, "", check)


def run_case(case, builders: Builders, args: argparse.Namespace) -> dict:
    """Check, then time one case; returns its JSON record without the floor."""
    checked = prepare_and_check(case, builders)
    record = {"key": case.key, "label": case.label, "op": case.op, "family": case.family, "mode": case.mode,
              "device": case.device, "dtype": str(case.dtype).replace("torch.", ""),
              "shape": case.describe(), "status": checked.status, "reason": checked.reason,
              "check": checked.check, "number": 0, "samples": {}, "summary": {}}
    steps = checked.steps
    if not steps:
        return record
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    measure.synchronize(case.device)
    once = measure.sample(steps["torch"], 1, case.device)
    number = measure.calls_per_sample(once, args.min_sample_ms / 1e3)
    samples = measure.interleaved_samples(steps, number, args.repeats, case.device, args.case_budget_s)
    record["number"] = number
    record["samples"] = samples
    record["summary"] = {name: measure.Summary.of(values).as_dict() for name, values in samples.items()}
    return record


def add_floors(records: List[dict], cases: list, calibration: List[dict]) -> None:
    rates = {(entry["kind"], entry["device"], entry["dtype"]): entry["median"] for entry in calibration}
    for record, case in zip(records, cases):
        kind, work = case.floor_work()
        rate = rates.get((kind, record["device"], record["dtype"]))
        floor = work / rate if rate else None
        record["floor"] = {"kind": kind, "work": work, "rate": rate, "seconds": floor}
        torch_median = record["summary"].get("torch", {}).get("median")
        seqkern_median = record["summary"].get("seqkern", {}).get("median")
        record["speedup"] = torch_median / seqkern_median if torch_median and seqkern_median else None
        record["torch_over_floor"] = torch_median / floor if torch_median and floor else None
        record["seqkern_over_floor"] = seqkern_median / floor if seqkern_median and floor else None


def calibrate(cases: list, samples: dict, small: bool) -> None:
    """Add one round of floor-rate samples for every (kind, device, dtype) the cases need."""
    needed = set()
    for case in cases:
        kind = case.floor_work()[0]
        needed |= {(each, case.device, case.dtype) for each in (kind, *measure.COMPANIONS[kind])}
    for kind, device, dtype in sorted(needed, key=str):
        measured = measure.CALIBRATIONS[kind](device, dtype, CALIBRATION_REPEATS, small)
        samples.setdefault((kind, device, dtype), []).extend(measured)


def _result_paths(out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base, suffix = os.path.join(out_dir, stamp), 1
    while os.path.exists(base + ".json"):
        base, suffix = os.path.join(out_dir, f"{stamp}-{suffix}"), suffix + 1
    return base


def chart_bars(document: dict) -> List[plot.Bar]:
    bars = []
    for case in document["cases"]:
        label = f"{case['label']} {case['device']} {case['dtype']}"
        if case["status"] == output.STATUS_OK:
            bars.append(plot.Bar(label, case["speedup"]))
        else:
            bars.append(plot.Bar(label, None, case["status"].upper()))
    return bars


def main(argv: Optional[List[str]] = None, builders: Optional[Builders] = None) -> int:
    """Run the report; ``builders`` replaces how the seqkern contender is made (tests)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        selected = build_cases(args)
        old = output.load_json(args.compare) if args.compare else None
    except (ValueError, OSError) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    builders = builders or Builders()
    load_before = os.getloadavg()
    calibration_samples: dict = {}
    calibrate(selected, calibration_samples, small=args.grid == "smoke")
    progress = Progress(len(selected))
    records = []
    for index, case in enumerate(selected):
        progress.show(index, case.key)
        records.append(run_case(case, builders, args))
    progress.show(len(selected), "calibrating the floors again")
    calibrate(selected, calibration_samples, small=args.grid == "smoke")
    progress.finish()
    calibration = [{"kind": kind, "device": device, "dtype": str(dtype).replace("torch.", ""),
                    "samples": values, "median": measure.quantile(values, 0.5)}
                   for (kind, device, dtype), values in calibration_samples.items()]
    add_floors(records, selected, calibration)
    document = {
        "schema": output.SCHEMA,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "argv": list(sys.argv[1:] if argv is None else argv),
        "machine": output.machine(),
        "seqkern_backends": output.seqkern_backends(sorted({case.device for case in selected})),
        "settings": {"grid": args.grid, "only": args.only, "repeats": args.repeats, "warmup": args.warmup,
                     "min_sample_ms": args.min_sample_ms, "case_budget_s": args.case_budget_s,
                     "threads": args.threads},
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "calibration": calibration,
        "cases": records,
    }
    base = _result_paths(args.out)
    output.write_json(base + ".json", document)
    info = document["machine"]
    plot.write_chart(base + ".png", base + ".svg",
                     "seqkern speedup over torch (ratio of medians; right of 1X = seqkern faster)",
                     f"{info['cpu_model']}, {info['threads']} threads, torch {info['torch']}, {document['created']}",
                     chart_bars(document))
    print(output.table(document))
    if old is not None:
        print()
        print(output.comparison(old, document))
    print(f"\nwrote {base}.json, {base}.png, {base}.svg")
    failed = [record["key"] for record in records if record["status"] == output.STATUS_FAILED]
    if failed:
        print(f"{len(failed)} case(s) FAILED the correctness check: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
