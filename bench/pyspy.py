"""One step of the benchmark under py-spy, and where each thread's time went.

    python -m bench.devstack --events 1000000 --compression lz4 --env /tmp/bench.env &
    env $(cat /tmp/bench.env) python -m bench.pyspy load '{"full": true}' --out bench/profiles/pyspy

py-spy samples every thread of the step's process (`bench.child STEP`), native frames and
idle threads included, so a thread blocked in libpq shows as waiting on PostgreSQL and
one blocked in librdkafka as waiting on the broker (bench/attribution.py says how samples
are charged). The recording (collapsed stacks, gzipped) and the attribution (JSON) are
written to --out; the attribution is printed, seconds per owner for each thread that did
anything. Sampling at 10/s costs the step a few per cent of its wall time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.attribution import attribute_pyspy

REPO = Path(__file__).resolve().parents[1]


def record(step: str, args: str, out: Path, rate: int) -> dict:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"{step}.raw"
    # py-spy pauses the process while it unwinds every thread's native stack: at 50 samples/s
    # that doubled an incremental refresh on 2 cores; at 10/s it costs a few per cent.
    command = [
        py_spy,
        "record",
        "--native",
        "--idle",
        "--threads",
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--output",
        str(raw),
        "--",
        sys.executable,
        "-m",
        "bench.child",
        step,
        args,
    ]
    done = subprocess.run(command, cwd=REPO, env=os.environ, capture_output=True, text=True)
    if done.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy exited {done.returncode}: {done.stderr[-2000:]}")
    # py-spy writes its own lines to the same stdout: the child's result is its last JSON line.
    result = json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith("{")))
    text = raw.read_text()
    threads = attribute_pyspy(text, rate)
    with gzip.open(raw.with_suffix(".raw.gz"), "wt") as fh:  # collapsed stacks: flamegraph.pl reads them
        fh.write(text)
    raw.unlink()
    # Threads that only ever waited without an owner (tqdm's monitor, idle pools) say nothing.
    threads = {name: owners for name, owners in threads.items() if set(owners) != {"other"}}
    report = {
        "step": step,
        "args": json.loads(args),
        "rate": rate,
        "seconds": result.get("seconds"),
        "threads": threads,
        "raw": raw.with_suffix(".raw.gz").name,
    }
    (out / f"{step}-attribution.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", help="a bench.child step: ingest, load, transform, test, validate, refresh, ...")
    parser.add_argument("args", nargs="?", default="{}", help="the step's JSON arguments")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "profiles" / "pyspy")
    parser.add_argument("--rate", type=int, default=10, help="samples per second")
    options = parser.parse_args()
    report = record(options.step, options.args, options.out, options.rate)
    print(f"{report['step']}: {report['seconds']:.1f}s (py-spy slows the process it samples)")
    for name, owners in report["threads"].items():
        total = sum(owners.values()) or 1.0
        print(f"  {name}: " + ", ".join(f"{owner} {s:.1f}s ({s / total:.0%})" for owner, s in owners.items()))


if __name__ == "__main__":
    main()
