"""The transform step: run the dbt project (`dbt/`) in-process with dbtRunner.

No profiles.yml is committed. The profile is written from `Settings` into
`<data_dir>/dbt/profiles/profiles.yml`; the password is not written to disk but
read by dbt from the environment variable `BI_CONSOLE_DBT_PASSWORD`, set only for
the duration of an invocation. dbt's target and log directories also live under
`<data_dir>/dbt/`, so the repository (or an installed package) stays read-only.

Schema names reach the project as vars (`bronze_schema`, `staging_schema`,
`marts_schema` from the config file); the project's `generate_schema_name`
uses them verbatim (`staging_staging`, `marts`).

    project = DbtProject(settings, log=print)
    result = project.run("stg_product dim_product", full_refresh=False)
    result.success, result.counts, [(n.name, n.status, n.execution_time) for n in result.nodes]
    project.test("dim_product")
    project.debug().output
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import DEFAULT_DBT_DIR, Settings, load_settings
from pipeline.process.log_sink import Log

if TYPE_CHECKING:
    from dbt_common.events.base_types import EventMsg


DEFAULT_PROJECT_DIR = DEFAULT_DBT_DIR
PROFILE_NAME = "bi_console"
TARGET_NAME = "bi_console"
PASSWORD_ENV = "BI_CONSOLE_DBT_PASSWORD"

# dbt keeps process-global state (flags, adapters, event manager): one invocation at a time.
_DBT_LOCK = threading.Lock()


@dataclass
class NodeResult:
    """One model or test of a dbt invocation."""

    unique_id: str
    name: str
    resource_type: str  # model | test | seed | snapshot ...
    status: str  # success | error | skipped | pass | fail | warn | ...
    execution_time: float  # seconds
    message: str | None = None
    relation: str | None = None
    rows_affected: int | None = None
    failures: int | None = None  # tests: number of failing rows
    timing: dict[str, float] = field(default_factory=dict)  # phase ('compile', 'execute') -> seconds

    @property
    def ok(self) -> bool:
        return self.status in ("success", "pass", "warn", "skipped") and not (
            self.status == "skipped" and self.resource_type == "model" and self.message
        )


@dataclass
class DbtResult:
    """The outcome of one dbt invocation."""

    command: str
    args: list[str]
    success: bool
    elapsed: float  # seconds, wall clock of the whole invocation
    nodes: list[NodeResult] = field(default_factory=list)
    error: str | None = None  # exception text when dbt itself failed (parse, connection, ...)
    output: str = ""  # every logged line, joined (for `debug` this is its report)

    @property
    def counts(self) -> dict[str, int]:
        """Nodes per status, e.g. {'success': 2} or {'pass': 30, 'fail': 1}, plus 'total'."""
        out: dict[str, int] = {}
        for node in self.nodes:
            out[node.status] = out.get(node.status, 0) + 1
        out["total"] = len(self.nodes)
        return out

    @property
    def failed(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.status in ("error", "fail", "runtime error")]

    def node(self, name: str) -> NodeResult | None:
        for n in self.nodes:
            if n.name == name or n.unique_id == name:
                return n
        return None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = self.counts
        return data


def dbt_vars(settings: Settings) -> dict[str, str]:
    f = settings.file
    return {"bronze_schema": f.bronze_schema, "staging_schema": f.staging_schema, "marts_schema": f.marts_schema}


def work_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "dbt"


def write_profile(settings: Settings, threads: int = 4) -> Path:
    """Write profiles.yml for `settings` and return its directory (no secret in the file)."""
    directory = work_dir(settings) / "profiles"
    directory.mkdir(parents=True, exist_ok=True)
    output = {
        "type": "postgres",
        "host": settings.pg_host,
        "port": int(settings.pg_port),
        "user": settings.pg_user,
        "password": "{{ env_var('" + PASSWORD_ENV + "') }}",
        "dbname": settings.pg_database,
        "schema": settings.file.staging_schema,
        "threads": threads,
        "connect_timeout": 10,
        "keepalives_idle": 0,
        "application_name": "bi-console-dbt",
    }
    profile = {PROFILE_NAME: {"target": TARGET_NAME, "outputs": {TARGET_NAME: output}}}
    # JSON is valid YAML: no YAML library needed, and every value is quoted safely.
    path = directory / "profiles.yml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(profile, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return directory


def _selection(selector: str | Iterable[str] | None) -> list[str]:
    if selector is None:
        return []
    parts = selector.split() if isinstance(selector, str) else [p for s in selector for p in str(s).split()]
    return ["--select", *parts] if parts else []


class DbtProject:
    """The bi-console dbt project bound to one Settings.

    log: called with each dbt log line as it happens (info and above; also debug
    lines when debug=True). Secrets are redacted from the lines.
    """

    def __init__(
        self,
        settings: Settings,
        log: Log | None = None,
        *,
        debug: bool = False,
        project_dir: Path | str | None = None,
        threads: int = 4,
    ) -> None:
        self.settings = settings
        self.log = log or (lambda line: None)
        self.debug_logging = debug
        self.project_dir = Path(project_dir) if project_dir else settings.dbt_project_dir
        self.threads = threads
        self.manifest: object | None = None  # kept by warm(): later commands skip dbt's parse

    # -- public commands -------------------------------------------------

    def run(
        self, selector: str | Iterable[str] | None = None, full_refresh: bool = False, *, hot_path: bool = False
    ) -> DbtResult:
        """`dbt run [--select ...] [--full-refresh]`. hot_path: the continuous runner's frequent
        run (dbt_project.yml's `hot_path` var): changed keys only, views left as they are."""
        args = _selection(selector) + (["--full-refresh"] if full_refresh else [])
        if hot_path:
            args += ["--exclude", "config.materialized:view"]
        return self.invoke("run", args, hot_path=hot_path)

    def test(self, selector: str | Iterable[str] | None = None, *, within_selection: bool = False) -> DbtResult:
        """`dbt test [--select ...]`: data tests of the selected models.

        within_selection leaves out the tests that also read a model outside the selection
        (a relationships test to a table this run does not build): a refresh of some tables
        cannot judge them, and their other model may not exist yet."""
        cautious = ["--indirect-selection", "cautious"] if within_selection and selector else []
        return self.invoke("test", _selection(selector) + cautious)

    def build(self, selector: str | Iterable[str] | None = None, full_refresh: bool = False) -> DbtResult:
        args = _selection(selector) + (["--full-refresh"] if full_refresh else [])
        return self.invoke("build", args)

    def debug(self) -> DbtResult:
        """`dbt debug`: connection and project check; its report is in `.output`."""
        return self.invoke("debug", [])

    def parse(self) -> DbtResult:
        return self.invoke("parse", [])

    def warm(self) -> DbtResult:
        """Parse the project once and keep its manifest: every later command of this object
        starts without dbt's parse (the continuous runner's transform, a few times a second).
        A changed project needs a new DbtProject (or warm() again)."""
        self.manifest = None
        result = self.invoke("parse", [])
        if not result.success:
            raise RuntimeError(f"dbt parse failed: {result.error or result.output[-500:]}")
        return result

    # -- machinery -------------------------------------------------------

    def project_args(self, hot_path: bool = False) -> list[str]:
        return [
            "--project-dir",
            str(self.project_dir),
            "--profiles-dir",
            str(write_profile(self.settings, self.threads)),
            "--profile",
            PROFILE_NAME,
            "--target",
            TARGET_NAME,
            "--vars",
            json.dumps({**dbt_vars(self.settings), **({"hot_path": True} if hot_path else {})}),
        ]

    def invoke(self, command: str, extra: list[str], *, hot_path: bool = False) -> DbtResult:
        from dbt.cli.main import dbtRunner  # heavy import: only when dbt actually runs

        project_args = self.project_args(hot_path)
        work = work_dir(self.settings)
        (work / "logs").mkdir(parents=True, exist_ok=True)
        # Global flags go before the sub-command.
        global_args = [
            "--no-use-colors",
            "--no-send-anonymous-usage-stats",
            "--no-version-check",
            "--log-path",
            str(work / "logs"),
            "--log-level",
            "none",  # nothing on stdout: every line goes through the callback
            "--log-level-file",
            "debug" if self.debug_logging else "info",
        ]
        if self.debug_logging:
            global_args.append("--debug")
        cmd_args = [command, *project_args]
        if command != "debug":
            cmd_args += ["--target-path", str(work / "target")]
        argv = global_args + cmd_args + extra

        lines: list[str] = []
        secrets = [s for s in self.settings.secret_values() if s]
        want_debug = self.debug_logging

        def on_event(event: EventMsg) -> None:
            try:
                info = event.info
                level = getattr(info, "level", "info")
                if level == "debug" and not want_debug:
                    return
                text = getattr(info, "msg", "") or ""
                if not text:
                    return
                for secret in secrets:
                    text = text.replace(secret, "***")
                for line in str(text).splitlines() or [""]:
                    lines.append(line)
                    self.log(line)
            except Exception:  # a broken log sink must never break the dbt run
                pass

        started = time.monotonic()
        with _DBT_LOCK:
            previous = os.environ.get(PASSWORD_ENV)
            os.environ[PASSWORD_ENV] = self.settings.pg_password
            try:
                runner = dbtRunner(callbacks=[on_event], manifest=self.manifest)  # type: ignore[arg-type]
                res = runner.invoke(argv)
            finally:
                if previous is None:
                    os.environ.pop(PASSWORD_ENV, None)
                else:
                    os.environ[PASSWORD_ENV] = previous
        elapsed = time.monotonic() - started

        error = None
        if res.exception is not None:
            error = str(res.exception)
            for secret in secrets:
                error = error.replace(secret, "***")
            self.log(f"dbt {command} failed: {error}")
        if command == "parse" and success_of(res):
            self.manifest = res.result
        nodes = _node_results(res.result)
        success = bool(res.success) and error is None
        return DbtResult(
            command=command,
            args=argv,
            success=success,
            elapsed=elapsed,
            nodes=nodes,
            error=error,
            output="\n".join(lines),
        )


def success_of(res: object) -> bool:
    return bool(getattr(res, "success", False)) and getattr(res, "exception", None) is None


def _node_results(result: object) -> list[NodeResult]:
    out: list[NodeResult] = []
    for r in getattr(result, "results", None) or []:
        node = getattr(r, "node", None)
        if node is None:
            continue
        timing = {}
        for t in getattr(r, "timing", None) or []:
            if t.started_at and t.completed_at:
                timing[t.name] = (t.completed_at - t.started_at).total_seconds()
        adapter_response = getattr(r, "adapter_response", None) or {}
        rows = adapter_response.get("rows_affected") if isinstance(adapter_response, dict) else None
        status = getattr(r.status, "value", r.status)
        out.append(
            NodeResult(
                unique_id=node.unique_id,
                name=node.name,
                resource_type=str(getattr(node.resource_type, "value", node.resource_type)),
                status=str(status),
                execution_time=float(getattr(r, "execution_time", 0.0) or 0.0),
                message=getattr(r, "message", None),
                relation=getattr(node, "relation_name", None),
                rows_affected=rows,
                failures=getattr(r, "failures", None),
                timing=timing,
            )
        )
    return out


# -- in a child process ---------------------------------------------------


def debug_in_child(settings: Settings, timeout: float = 300.0, nice: int = 10) -> DbtResult:
    """`dbt debug` in a process of its own, at a lower priority.

    dbt holds the GIL for seconds while it loads and checks the project: run inside the
    TUI's process, it would freeze the screen while a troubleshooting panel diagnoses."""
    return _invoke_in_child(settings, ["debug"], None, timeout, nice)


def run_in_child(
    settings: Settings,
    selector: str,
    log: Log | None = None,
    *,
    debug: bool = False,
    timeout: float = 1800.0,
    nice: int = 10,
) -> DbtResult:
    """`dbt run --select SELECTOR` in a process of its own (for the TUI, as debug_in_child);
    each log line reaches `log` as dbt writes it."""
    return _invoke_in_child(settings, ["run", *(["--debug"] if debug else []), *selector.split()], log, timeout, nice)


def _invoke_in_child(settings: Settings, args: list[str], log: Log | None, timeout: float, nice: int) -> DbtResult:
    """`python -m pipeline.steps.transform ARGS`: its stdout carries one JSON object a line,
    {"log": line} while dbt runs, then {"result": ...}; stderr is kept for a crash report."""
    command, started = args[0], time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.steps.transform", *args],
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **settings.to_env()},
            preexec_fn=lambda: os.nice(nice),
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        report = None
        try:
            assert proc.stdout is not None  # stdout=PIPE
            for line in proc.stdout:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if "log" in item and log is not None:
                    log(item["log"])
                elif "result" in item:
                    report = item["result"]
            proc.wait()
        finally:
            timed_out = timer.finished.is_set()  # set here only if the timer fired
            timer.cancel()
        errors.seek(0)
        stderr = errors.read()
    elapsed = time.monotonic() - started
    if report is None:
        reason = (
            f"dbt {command} took over {timeout:.0f}s"
            if timed_out
            else f"dbt {command} exited {proc.returncode}: {stderr.strip()[-500:]}"
        )
        return DbtResult(command, [], False, elapsed, error=reason)
    return DbtResult(
        command,
        report["args"],
        report["success"],
        elapsed,
        nodes=[NodeResult(**node) for node in report["nodes"]],
        error=report["error"],
        output=report["output"],
    )


def _main(argv: list[str]) -> int:
    """`python -m pipeline.steps.transform debug | run [--debug] SELECTOR...`, for _invoke_in_child."""
    if not argv or argv[0] not in ("debug", "run"):
        print("usage: python -m pipeline.steps.transform debug | run [--debug] SELECTOR...", file=sys.stderr)
        return 2
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever dbt prints goes to stderr; stdout carries only our JSON lines

    def emit(item: dict[str, Any]) -> None:
        out.write(json.dumps(item, default=str) + "\n")
        out.flush()

    settings = load_settings(env_file=None)
    if argv[0] == "debug":
        result = DbtProject(settings).debug()
    else:
        debug = "--debug" in argv[1:]
        selector = [a for a in argv[1:] if a != "--debug"]
        result = DbtProject(settings, lambda line: emit({"log": line}), debug=debug).run(selector)
    emit({"result": result.as_dict()})
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
