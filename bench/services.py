"""The embedded stack's services as the benchmarks see them: what each has spent."""

from __future__ import annotations

SERVICES = ("postgres", "kafka", "s3")


def service_cpu(settings) -> dict[str, float]:
    """CPU seconds used so far by each service of the embedded stack (with its child processes,
    e.g. PostgreSQL's backends; a backend that exited is counted by its parent's children times)."""
    import psutil

    from pipeline.runtime.embedded import EmbeddedRuntime

    runtime = EmbeddedRuntime(settings)
    out = {}
    for service in SERVICES:
        record = runtime.process(service).record()
        proc = record.process() if record else None
        if proc is None:
            continue
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system + (t.children_user + t.children_system if p is proc else 0.0)
            except psutil.Error:
                pass
        out[service] = total
    return out
