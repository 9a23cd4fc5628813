"""``make fuzz``: run each atheris harness for a set time; print inputs, executions/s, crashes.

Usage::

    python -m fuzz.run [--seconds 600] [--runs N] [--seeds] [json sparkplug api]

``--runs N`` stops a harness after N inputs (``--seconds`` still caps it): the README's figure
is ``--runs 10000000``. A harness runs as libFuzzer processes of ``--chunk`` inputs (default
1,000,000) that share the corpus, because a process grows under atheris (see ``CHUNK_RUNS``).

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
"""libFuzzer's default."""
CHUNK_RUNS: Final = 1_000_000
"""Inputs per libFuzzer process. Measured 2026-12-06: the JSON harness grows about 1 KiB per
input under atheris (1.18 to 1.31 GB in 40 s at ~3,300 inputs/s) and stopped at 2 GiB after
4.86 million inputs, while the same decoder driven by a plain loop over the fuzzer's own corpus,
mutated, stays at 120 MB over 400,000 inputs: the growth is the instrumentation's, not the
decoder's (whose caches are bounded: tests/unit/test_decoder_properties.py)."""


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
    name: str,
    seconds: int,
    runs: int = 0,
    rss_limit_mb: int = _RSS_LIMIT_MB,
    chunk: int = CHUNK_RUNS,
) -> dict[str, object]:
    """Fuzz one harness for ``seconds`` (or ``runs`` inputs when > 0); its figures.

    The harness runs as a series of libFuzzer processes of at most ``chunk`` inputs each, sharing
    the corpus in ``fuzz/.work/<harness>/``: under atheris a process grows by about 1 KiB per
    input (atheris's instrumentation: the decoders run flat outside it, see :data:`CHUNK_RUNS`),
    so one process would stop at libFuzzer's memory limit after a few million inputs.
    """
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    crashes = CRASHES / name
    crashes.mkdir(parents=True, exist_ok=True)
    summary = crashes / "summary.json"
    seeds = [str(d) for d in (CORPUS / name, REGRESSIONS / name) if d.is_dir()]
    log = WORK / f"{name}.log"
    log.write_text("", encoding="utf-8")
    inputs, peak, crashing, exit_code = 0, 0, 0, 0
    unique: dict[str, str] = {}
    started = time.monotonic()
    while True:
        left_s = int(seconds - (time.monotonic() - started))
        left_runs = runs - inputs if runs > 0 else chunk
        if left_s <= 0 or left_runs <= 0:
            break
        summary.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            f"fuzz.fuzz_{name}",
            str(work),
            *seeds,
            f"-max_total_time={left_s}",
            f"-runs={min(chunk, left_runs)}",
            f"-timeout={_TIMEOUT_S}",
            f"-rss_limit_mb={rss_limit_mb}",
            f"-artifact_prefix={crashes}/",
            "-print_final_stats=1",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=FUZZ_DIR.parent)
        with log.open("a", encoding="utf-8") as fh:
            fh.write(proc.stdout + proc.stderr)
        done = _stat(proc.stderr, "number_of_executed_units")
        inputs += done
        peak = max(peak, _peak_rss_mb(proc.stderr))
        found = json.loads(summary.read_text(encoding="utf-8")) if summary.exists() else {}
        crashing += int(found.get("crashing_inputs", 0))
        unique.update(found.get("unique", {}))
        exit_code = exit_code or proc.returncode
        print(
            f"  {name}: {inputs:,} inputs, {crashing:,} crashing, peak RSS {peak:,} MB "
            f"({time.monotonic() - started:,.0f} s)",
            flush=True,
        )
        if proc.returncode or done == 0:
            break  # libFuzzer stopped on its own (an OOM, a timeout): not to be retried blindly
    took = time.monotonic() - started
    return {
        "harness": name,
        "inputs": inputs,
        "exec_per_s": round(inputs / max(took, 1e-9)),
        "peak_rss_mb": peak,
        "crashing_inputs": crashing,
        "unique_crashes": len(unique),
        "exit": exit_code,
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
    parser.add_argument(
        "--chunk",
        type=int,
        default=CHUNK_RUNS,
        help=f"inputs per libFuzzer process (default {CHUNK_RUNS:,})",
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
        rows.append(run_one(name, args.seconds, args.runs, args.rss_limit_mb, args.chunk))
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
