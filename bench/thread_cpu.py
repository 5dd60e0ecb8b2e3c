"""One step of the benchmark, and the CPU time each of its threads and each service used.

    python -m bench.devstack --events 1000000 --compression lz4 --env /tmp/bench.env &
    env $(cat /tmp/bench.env) python -m bench.thread_cpu ingest '{"full": true}'

py-spy (bench/pyspy.py) says where each thread's wall time went; on 2 busy cores a thread
that is ready to run but waits for a core is sampled at its current line, so wall-time
profiles overstate whichever code runs most often. This counts CPU instead: the kernel's
user and system time of every thread of the step's process (`bench.child STEP`), read
twice a second until the process ends, and the services' CPU over the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.services import service_cpu
from pipeline.config import load_settings

REPO = Path(__file__).resolve().parents[1]


def _thread_name(pid: int, tid: int) -> str:
    if tid == pid:
        return "main"
    try:  # librdkafka names its threads; Python's own threads are all "python"
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return "?"


def measure(step: str, args: str, interval: float = 0.5) -> dict:
    settings = load_settings(env_file=None)
    services_before = service_cpu(settings)
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.child", step, args], cwd=REPO, env=os.environ, stdout=subprocess.PIPE, text=True
    )
    process = psutil.Process(child.pid)
    threads: dict[int, dict] = {}
    # A thread's times are gone once it exits (the upload pool ends before the step does),
    # so the last reading of each is kept.
    while child.poll() is None:
        try:
            for thread in process.threads():
                seen = threads.setdefault(thread.id, {"name": _thread_name(child.pid, thread.id)})
                seen.update(user=thread.user_time, system=thread.system_time)
        except psutil.Error:
            pass
        time.sleep(interval)
    output = child.stdout.read() if child.stdout else ""
    if child.returncode != 0:
        raise RuntimeError(f"bench.child {step} exited {child.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    services_after = service_cpu(settings)
    by_thread = sorted(
        (
            {"thread": t["name"], "cpu_seconds": round(t["user"] + t["system"], 2)}
            for t in threads.values()
            if "user" in t
        ),
        key=lambda t: -t["cpu_seconds"],
    )
    return {
        "step": step,
        "args": json.loads(args),
        "seconds": result.get("seconds"),
        "process_cpu_seconds": result.get("cpu_seconds"),
        "threads": [t for t in by_thread if t["cpu_seconds"] >= 0.05],
        "service_cpu_seconds": {
            name: round(services_after[name] - services_before.get(name, 0.0), 2) for name in services_after
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", help="a bench.child step: ingest, load, transform, test, validate, refresh, ...")
    parser.add_argument("args", nargs="?", default="{}", help="the step's JSON arguments")
    parser.add_argument("--out", type=Path, help="also write the report here (JSON)")
    options = parser.parse_args()
    report = measure(options.step, options.args)
    if options.out:
        options.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{options.step}: {report['seconds']:.1f}s wall, our process {report['process_cpu_seconds']:.1f} CPU s")
    for thread in report["threads"]:
        print(f"  {thread['thread']:<20} {thread['cpu_seconds']:7.1f} CPU s")
    for name, seconds in report["service_cpu_seconds"].items():
        print(f"  service {name:<12} {seconds:7.1f} CPU s")


if __name__ == "__main__":
    main()
