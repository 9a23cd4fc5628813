"""``make fuzz``: run each atheris harness for a set time; print inputs, executions/s, crashes.

Usage::

    python -m fuzz.run [--seconds 600] [--runs N] [--seeds] [json sparkplug api]

``--runs N`` stops a harness after N inputs (``--seconds`` still caps it): the README's figure
is ``--runs 10000000``.

Each harness starts from its seeds (``fuzz/corpus/<harness>/``) and its regression inputs
(``fuzz/regressions/<harness>/``); what libFuzzer finds interesting goes to
``fuzz/.work/<harness>/`` (kept between runs, not in git), crashes to
``fuzz/crashes/<harness>/``. ``--seeds`` (re)writes the seed files from :mod:`fuzz.common`.
Exit status 1 when any harness crashed or stopped early (a timeout or out of memory is a finding
too), else 0.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from fuzz.common import CORPUS, REGRESSIONS, api_seeds, json_seeds, sparkplug_seeds

HARNESSES: Final = ("json", "sparkplug", "api")
FUZZ_DIR: Final = Path(__file__).parent
WORK: Final = FUZZ_DIR / ".work"
CRASHES: Final = FUZZ_DIR / "crashes"
# Per input: a slower one is a finding (a quadratic path a client could trigger), not a wait.
_TIMEOUT_S: Final = 10
_RSS_LIMIT_MB: Final = 2048
"""libFuzzer's default. Its own bookkeeping grows with the inputs run (the decoders' memory is
flat: tests/unit/test_decoder_properties.py); long runs (``--runs 10000000``) need more."""


def write_seeds() -> None:
    """(Re)write ``fuzz/corpus/<harness>/`` from the seed generators of :mod:`fuzz.common`."""
    for name, seeds in (
        ("json", json_seeds()),
        ("sparkplug", sparkplug_seeds()),
        ("api", api_seeds()),
    ):
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for seed, data in seeds:
            (folder / seed).write_bytes(data)


def _stat(text: str, name: str) -> int:
    found = re.findall(rf"stat::{name}:\s*(\d+)", text)
    return int(found[-1]) if found else 0


def _peak_rss_mb(text: str) -> int:
    """The largest ``rss: NMb`` libFuzzer printed (its status lines), 0 when none."""
    return max((int(m) for m in re.findall(r"rss: (\d+)Mb", text)), default=0)


def run_one(
    name: str, seconds: int, runs: int = 0, rss_limit_mb: int = _RSS_LIMIT_MB
) -> dict[str, object]:
    """Fuzz one harness for ``seconds`` (or ``runs`` inputs when > 0); its figures."""
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    crashes = CRASHES / name
    crashes.mkdir(parents=True, exist_ok=True)
    summary = crashes / "summary.json"
    summary.unlink(missing_ok=True)
    seeds = [str(d) for d in (CORPUS / name, REGRESSIONS / name) if d.is_dir()]
    cmd = [
        sys.executable,
        "-m",
        f"fuzz.fuzz_{name}",
        str(work),
        *seeds,
        f"-max_total_time={seconds}",
        *([f"-runs={runs}"] if runs > 0 else []),
        f"-timeout={_TIMEOUT_S}",
        f"-rss_limit_mb={rss_limit_mb}",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=FUZZ_DIR.parent)
    took = time.monotonic() - started
    log = WORK / f"{name}.log"
    log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    found = json.loads(summary.read_text(encoding="utf-8")) if summary.exists() else {}
    inputs = _stat(proc.stderr, "number_of_executed_units")
    return {
        "harness": name,
        "inputs": inputs,
        "exec_per_s": _stat(proc.stderr, "average_exec_per_sec") or round(inputs / max(took, 1e-9)),
        "peak_rss_mb": _peak_rss_mb(proc.stderr),
        "crashing_inputs": int(found.get("crashing_inputs", 0)),
        "unique_crashes": len(found.get("unique", {})),
        "exit": proc.returncode,
        "log": str(log),
    }


def main() -> int:
    """Run the harnesses named on the command line (all by default); print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=600, help="per harness (default 600)")
    parser.add_argument(
        "--runs", type=int, default=0, help="stop each harness after this many inputs (0: no limit)"
    )
    parser.add_argument(
        "--rss-limit-mb",
        type=int,
        default=_RSS_LIMIT_MB,
        help=f"libFuzzer's -rss_limit_mb (default {_RSS_LIMIT_MB})",
    )
    parser.add_argument("--seeds", action="store_true", help="(re)write the seed corpus first")
    parser.add_argument("harness", nargs="*", help=f"of {', '.join(HARNESSES)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.harness) - set(HARNESSES))
    if unknown:
        parser.error(f"unknown harness {', '.join(unknown)}; known: {', '.join(HARNESSES)}")
    if args.seeds or not all((CORPUS / h).is_dir() for h in HARNESSES):
        write_seeds()
    rows = []
    for name in args.harness or HARNESSES:
        limit = f" or {args.runs:,} inputs" if args.runs > 0 else ""
        print(f"fuzzing {name} for {args.seconds} s{limit} ...", flush=True)
        rows.append(run_one(name, args.seconds, args.runs, args.rss_limit_mb))
    print(f"fuzzed on {time.strftime('%Y-%m-%d')}")
    print(
        f"{'harness':<10} {'inputs':>12} {'exec/s':>8} {'peak RSS MB':>11} {'crashing':>9} "
        f"{'unique':>7} {'exit':>5}"
    )
    failed = False
    for r in rows:
        print(
            f"{r['harness']!s:<10} {r['inputs']:>12,} {r['exec_per_s']:>8,} "
            f"{r['peak_rss_mb']:>11,} "
            f"{r['crashing_inputs']:>9,} {r['unique_crashes']:>7} {r['exit']:>5}"
        )
        if r["crashing_inputs"] or r["exit"]:
            failed = True
            print(f"  see {r['log']} and {CRASHES / str(r['harness'])}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
