"""Where a step's wall time went, from a pyinstrument session or a py-spy recording: our
Python, or waiting on PostgreSQL, the broker, the S3 server, dbt or Great Expectations.

Each sample's time is charged to the innermost frame that names an owner:
  * a call into a client library's C code is charged to the service it waits on
    (`Consumer.consume` -> broker, `cursor.copy_expert` -> PostgreSQL, ...);
  * frames of dbt, Great Expectations (and the SQLAlchemy it drives), botocore and
    psycopg2 are charged to those;
  * frames of this repository's `pipeline/` and `bench/` (and the builtins they call, such
    as JSON parsing) are "our Python";
  * waiting on our own worker threads (a future, a join) is charged to "our threads": the
    threads themselves run in the same process and show in its CPU time; a library waiting
    on its own threads (dbt's node threads) stays that library's;
  * a C call that calls back into Python (psycopg2's COPY reading our row generator) shows
    its blocked time as its caller's own time; that is charged to the service it waits on.

pyinstrument samples the thread that started it; the threads' CPU is in "own CPU s".
py-spy (`attribute_pyspy`) samples every thread, native frames included: a sample inside
libpq or librdkafka is charged to PostgreSQL or the broker however it got there, so the
profile of a thread that waits on a socket says which service it waits on. Time spent
importing a library is charged to it, marked "(import)"; a thread blocked on a module that
another thread is importing (refresh imports dbt and GX ahead, pipeline/process/background_import.py)
shows as "import in another thread".
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OURS = (str(REPO / "pipeline") + "/", str(REPO / "bench") + "/", str(REPO / "cli") + "/")

# Builtins (C calls) named by pyinstrument as "Class.method" or "function".
BUILTIN_OWNERS = {
    "Consumer.consume": "broker",
    "Consumer.poll": "broker",
    "Consumer.assign": "broker",
    "Consumer.commit": "broker",
    "Consumer.close": "broker",
    "Producer.flush": "broker",
    "Producer.poll": "broker",
    "AdminClient.list_topics": "broker",
    "Consumer.list_topics": "broker",
    "Consumer.get_watermark_offsets": "broker",
    "cursor.execute": "PostgreSQL",
    "cursor.executemany": "PostgreSQL",
    "cursor.copy_expert": "PostgreSQL",
    "cursor.fetchone": "PostgreSQL",
    "cursor.fetchall": "PostgreSQL",
    "connection.commit": "PostgreSQL",
    "connection.close": "PostgreSQL",
    "connect": "PostgreSQL",
    "_connect": "PostgreSQL",
}
PACKAGE_OWNERS = [
    ("/dbt/", "dbt"),
    ("/dbt_common/", "dbt"),
    ("/dbt_adapters/", "dbt"),
    ("/dbt_postgres/", "dbt"),
    ("/great_expectations/", "Great Expectations"),
    ("/sqlalchemy/", "Great Expectations"),
    ("/psycopg2/", "PostgreSQL"),
    ("/botocore/", "S3"),
    ("/boto3/", "S3"),
    ("/urllib3/", "S3"),
    ("/s3transfer/", "S3"),
    ("/confluent_kafka/", "broker"),
]
THREAD_WAITS = ("concurrent/futures/", "/threading.py")


SERVICES = {"PostgreSQL", "broker", "S3"}


def _is_builtin(frame) -> bool:
    path = frame.file_path or ""
    return not path or path.startswith("<built-in>")


def _owner(frame, inherited: str) -> str | None:
    path = frame.file_path or ""
    function = frame.function or ""
    if _is_builtin(frame):
        return BUILTIN_OWNERS.get(function)
    return _path_owner(path, inherited)


def _path_owner(path: str, inherited: str) -> str | None:
    """The owner of a Python frame by its file: a thread wait, a library, or our code."""
    if any(part in path for part in THREAD_WAITS):
        # A wait on a worker thread belongs to whoever started the thread: dbt waits on its
        # own node threads, we wait on ours (uploads, load workers).
        return "our threads" if inherited == "our Python" else None
    for part, owner in PACKAGE_OWNERS:
        if part in path:
            return owner
    # py-spy names our files relative to the directory it ran in.
    if path.startswith(OURS) or path.startswith(("/pipeline/", "/bench/", "/cli/")):
        return "our Python"
    return None


def attribute(session) -> dict[str, float]:
    """Seconds per owner over the whole session; unowned library time is "other"."""
    totals: dict[str, float] = defaultdict(float)

    def walk(frame, inherited: str) -> None:
        owner = _owner(frame, inherited)
        # A builtin called from our code (json parsing, joins) is our work; one called from a
        # library (its own C helpers) belongs to that library.
        mine = owner or inherited
        self_time = frame.time - sum(child.time for child in frame.children)
        if self_time > 0:
            # A C call that calls back into Python (COPY reading a Python file object) shows
            # its blocked time as its caller's own time: charge it to the service it waits on.
            waited = [c for c in frame.children if _is_builtin(c) and _owner(c, mine) in SERVICES]
            totals[_owner(waited[0], mine) if waited else mine] += self_time
        for child in frame.children:
            walk(child, mine)

    root = session.root_frame()
    if root is not None:
        walk(root, "other")
    return {k: round(v, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def format_attribution(totals: dict[str, float]) -> str:
    whole = sum(totals.values()) or 1.0
    return ", ".join(f"{owner} {seconds:.1f}s ({seconds / whole:.0%})" for owner, seconds in totals.items())


# Native libraries, as py-spy names them ("PQgetResult (libpq-a17e3caa.so.5.17)").
NATIVE_OWNERS = [
    ("libpq", "PostgreSQL"),
    ("psycopg2/_psycopg", "PostgreSQL"),
    ("librdkafka", "broker"),
    ("confluent_kafka/cimpl", "broker"),
]


def _pyspy_owner(frame: str, inherited: str) -> str | None:
    """The owner of one py-spy frame, "function (file:line)" or "function (library)"."""
    location = frame[frame.rfind("(") + 1 : -1] if frame.endswith(")") else ""
    path = "/" + location.rsplit(":", 1)[0].lstrip("/")
    for part, owner in NATIVE_OWNERS:
        if part in location:
            return owner
    return _path_owner(path, inherited)


def attribute_pyspy(raw: str, rate: float) -> dict[str, dict[str, float]]:
    """Seconds per owner for each thread of a `py-spy record --format raw` recording taken
    at `rate` samples per second (with --idle, so a thread waiting on a socket counts)."""
    threads: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread (") else "?"
        owner, importing = "other", False
        for frame in frames[1:]:
            if "importlib._bootstrap" in frame:
                importing = True  # the first package named after this is the one being imported
                continue
            found = _pyspy_owner(frame, owner)
            if found:
                owner = found
                if importing:
                    owner = f"{owner} (import)"
                    break
        else:
            if importing:  # blocked on a module lock: another thread is importing that module
                owner = "import in another thread"
        threads[thread][owner] += int(count) / rate
    return {
        name: {k: round(v, 2) for k, v in sorted(owners.items(), key=lambda kv: -kv[1])}
        for name, owners in sorted(threads.items(), key=lambda kv: -sum(kv[1].values()))
    }
