"""Superset in its own virtualenv under `<data_dir>/superset/`.

Superset 6.1 pins SQLAlchemy 1.4, which cannot share the project's virtualenv, so it
gets one of its own, created on first use. Layout:

    <data_dir>/superset/
        venv/                  python -m venv; marker file `.bi-console-superset`
        superset_config.py     no secret in it: SECRET_KEY comes from the environment
        superset.db            SQLite metadata
        cache/data/            FileSystemCache for chart data (shared by all workers)
        .initialized           db upgrade / init / admin done, for which version

Every step is idempotent; `ensure_installed` is safe to call before every start.
Secrets (secret key, admin password) reach Superset through the child's environment,
never through argv (which any local user can read with `ps`).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from pipeline.config import ConfigError, Settings
from pipeline.process.log_sink import Log, no_log

SUPERSET_SPEC = "apache-superset==6.1.*"
# Pins verified with 6.1: newer flask-caching/cachelib break `superset` start; rich is
# imported by its CLI; psycopg2 is the PostgreSQL driver for the analytics database;
# cachetools is imported by superset/db_engine_specs/aws_iam.py but not declared, and
# without it loading ANY engine spec fails ("Could not load database driver: postgresql").
EXTRA_PACKAGES = ("flask-caching==2.3.1", "cachelib==0.13.0", "rich", "psycopg2-binary", "cachetools")
MARKER = ".bi-console-superset"
INIT_MARKER = ".initialized"
MIN_SECRET_KEY_LENGTH = 32
DEFAULT_CACHE_TIMEOUT = 300  # seconds; the runbook's documented default
PIP_TIMEOUT = 3600
CLI_TIMEOUT = 1200


class SupersetInstallError(Exception):
    """Installing or initialising Superset failed. One line, naming the command."""


# --------------------------------------------------------------------------- paths


def superset_home(settings: Settings) -> Path:
    return Path(settings.data_dir) / "superset"


def venv_dir(settings: Settings) -> Path:
    return superset_home(settings) / "venv"


def config_path(settings: Settings) -> Path:
    return superset_home(settings) / "superset_config.py"


def metadata_path(settings: Settings) -> Path:
    return superset_home(settings) / "superset.db"


def data_cache_dir(settings: Settings) -> Path:
    return superset_home(settings) / "cache" / "data"


def _bin(venv: Path, name: str) -> Path:
    return venv / "bin" / name


def listen_port(settings: Settings) -> int:
    parts = urlsplit(settings.superset_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"BI_SUPERSET_URL={settings.superset_url!r} is not an http URL")
    if parts.hostname not in ("127.0.0.1", "localhost"):
        # The embedded Superset only ever binds the loopback interface.
        raise ConfigError(f"BI_SUPERSET_URL={settings.superset_url!r}: the embedded Superset listens on 127.0.0.1 only")
    return parts.port or (443 if parts.scheme == "https" else 80)


def health_url(settings: Settings) -> str:
    """GET it: Superset answers 200 "OK" once it serves requests."""
    return settings.superset_url.rstrip("/") + "/health"


# --------------------------------------------------------------------------- secrets


def require_secrets(settings: Settings) -> tuple[str, str]:
    """The secret key and admin password, or ConfigError. There is no default for either."""
    key = settings.superset_secret_key
    if not key:
        raise ConfigError("BI_SUPERSET_SECRET_KEY is not set; run `bi-console init` to generate one")
    if len(key) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            f"BI_SUPERSET_SECRET_KEY is {len(key)} characters; Superset needs at least {MIN_SECRET_KEY_LENGTH} "
            "(run `bi-console init` to generate one)"
        )
    password = settings.superset_password
    if not password:
        raise ConfigError("BI_SUPERSET_PASSWORD is not set; run `bi-console init` to generate one")
    return key, password


# --------------------------------------------------------------------------- processes


def _clean_env() -> dict[str, str]:
    """The parent's environment minus the project venv and bi-console's own secrets."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BI_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    return env


def superset_env(settings: Settings) -> dict[str, str]:
    """Environment for every Superset process (CLI and server)."""
    key, _ = require_secrets(settings)
    venv = venv_dir(settings)
    env = _clean_env()
    env.update(
        {
            "VIRTUAL_ENV": str(venv),
            "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "SUPERSET_CONFIG_PATH": str(config_path(settings)),
            "SUPERSET_HOME": str(superset_home(settings)),
            "SUPERSET_SECRET_KEY": key,
            "FLASK_APP": "superset.app:create_app()",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def _stream(
    argv: Sequence[str],
    log: Log,
    *,
    env: dict[str, str] | None = None,
    timeout: float,
    what: str,
    cwd: Path | None = None,
) -> list[str]:
    """Run argv, sending each output line to log as it comes. Returns the lines."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
    except OSError as exc:
        raise SupersetInstallError(f"{what}: cannot start {argv[0]}: {exc}") from None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            log(line)
            if time.monotonic() > deadline:
                raise SupersetInstallError(f"{what}: still running after {timeout:.0f}s; stopped")
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise SupersetInstallError(f"{what}: still running after {timeout:.0f}s; stopped") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc != 0:
        tail = next((ln.strip() for ln in reversed(lines) if ln.strip()), "no output")
        raise SupersetInstallError(f"{what} failed (exit {rc}): {tail}")
    return lines


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- venv


def _wanted() -> dict[str, Any]:
    return {"spec": SUPERSET_SPEC, "extras": list(EXTRA_PACKAGES)}


def installed_version(venv: Path) -> str | None:
    """The Superset version recorded by a completed install, or None."""
    try:
        data = json.loads((venv / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if {k: data.get(k) for k in ("spec", "extras")} != _wanted():
        return None
    if not _bin(venv, "superset").exists():
        return None
    version: str | None = data.get("version")
    return version


def install_venv(venv: Path, log: Log = no_log) -> str:
    """Create `venv` and pip-install Superset into it unless a matching install is there.

    Returns the installed Superset version. Interrupted installs are resumed (pip is
    idempotent); the marker is written only after pip succeeded.
    """
    venv = Path(venv)
    with _locked(venv.parent / f".{venv.name}.install.lock"):
        version = installed_version(venv)
        if version:
            return version
        python = _bin(venv, "python")
        if not python.exists():
            log(f"creating virtualenv {venv}")
            _stream(
                [sys.executable, "-m", "venv", str(venv)], log, timeout=300, what="python -m venv", env=_clean_env()
            )
        log(f"installing {SUPERSET_SPEC} {' '.join(EXTRA_PACKAGES)} (several minutes on first use)")
        _stream(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--progress-bar",
                "off",
                "--no-input",
                SUPERSET_SPEC,
                *EXTRA_PACKAGES,
            ],
            log,
            timeout=PIP_TIMEOUT,
            what="pip install apache-superset",
            env=_clean_env(),
        )
        out = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('apache-superset'))"],
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=60,
        )
        version = out.stdout.strip()
        if out.returncode != 0 or not version:
            raise SupersetInstallError(
                f"pip install apache-superset: package not importable afterwards: "
                f"{out.stderr.strip().splitlines()[-1:] or out.returncode}"
            )
        (venv / MARKER).write_text(
            json.dumps({**_wanted(), "version": version, "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        )
        log(f"Superset {version} installed in {venv}")
        return version


# --------------------------------------------------------------------------- config

_CONFIG_TEMPLATE = """\
# Written by bi-console (pipeline/superset/install.py); rewritten on every start.
# It holds no secret: SECRET_KEY comes from the environment bi-console starts Superset with.
import os

SECRET_KEY = os.environ["SUPERSET_SECRET_KEY"]
if len(SECRET_KEY) < {min_key}:
    raise RuntimeError("SUPERSET_SECRET_KEY is shorter than {min_key} characters")

SQLALCHEMY_DATABASE_URI = {metadata_uri!r}
DATA_DIR = {home!r}

# Chart data: on disk, so every gunicorn worker and the CLI see the same entries,
# and the cache keys are recorded in the metadata database so that
# POST /api/v1/cachekey/invalidate can drop them per dataset.
STORE_CACHE_KEYS_IN_METADATA_DB = True
DATA_CACHE_CONFIG = {{
    "CACHE_TYPE": "FileSystemCache",
    "CACHE_DIR": {data_cache!r},
    "CACHE_DEFAULT_TIMEOUT": {timeout},
    "CACHE_THRESHOLD": 5000,
    "CACHE_KEY_PREFIX": "bi_console_",
}}
# Superset 6.1's /api/v1/cachekey/invalidate deletes the recorded keys from CACHE_CONFIG,
# not from DATA_CACHE_CONFIG where chart data lives: the same store for both makes the
# endpoint actually evict chart data.
CACHE_CONFIG = dict(DATA_CACHE_CONFIG)

WTF_CSRF_ENABLED = True
WTF_CSRF_TIME_LIMIT = None
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_HTTPONLY = True

FEATURE_FLAGS = {{
    # Charts and dashboards are provisioned through the REST API; nothing extra needed.
    "DASHBOARD_RBAC": False,
    "ALERT_REPORTS": False,
}}

SUPERSET_WEBSERVER_ADDRESS = "127.0.0.1"
SUPERSET_WEBSERVER_PORT = {port}
ROW_LIMIT = 50000
"""


def write_config(settings: Settings) -> Path:
    home = superset_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    data_cache_dir(settings).mkdir(parents=True, exist_ok=True)
    text = _CONFIG_TEMPLATE.format(
        min_key=MIN_SECRET_KEY_LENGTH,
        metadata_uri=f"sqlite:///{metadata_path(settings)}?check_same_thread=false",
        home=str(home),
        data_cache=str(data_cache_dir(settings)),
        timeout=DEFAULT_CACHE_TIMEOUT,
        port=listen_port(settings),
    )
    path = config_path(settings)
    tmp = path.with_suffix(".py.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- metadata init

# Runs inside Superset's venv: creates the admin or resets its password. The password
# comes through the environment so that it never appears in a process listing.
_ADMIN_SCRIPT = r"""
import os, sys
from superset.app import create_app
app = create_app()
with app.app_context():
    from superset.extensions import appbuilder
    sm = appbuilder.sm
    username = os.environ["BI_CONSOLE_ADMIN_USER"]
    password = os.environ["BI_CONSOLE_ADMIN_PASSWORD"]
    role = sm.find_role("Admin")
    if role is None:
        sys.exit("role Admin does not exist (superset init did not run)")
    user = sm.find_user(username=username)
    if user is None:
        if not sm.add_user(username, "BI", "Console", username + "@localhost.invalid", role, password=password):
            sys.exit("could not create admin user " + username)
        print("created admin user " + username)
    else:
        sm.reset_password(user.id, password)
        if role not in user.roles:
            user.roles.append(role)
            sm.update_user(user)
        print("updated admin user " + username)
"""


def _admin_fingerprint(settings: Settings) -> str:
    key, password = require_secrets(settings)
    return hmac.new(key.encode(), f"{settings.superset_user}\0{password}".encode(), hashlib.sha256).hexdigest()


def _init_state(settings: Settings) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((superset_home(settings) / INIT_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return state


def initialise(settings: Settings, version: str, log: Log = no_log) -> None:
    """db upgrade + init (once per version and metadata file), then the admin user
    (again whenever its user name or password changed)."""
    env = superset_env(settings)
    superset = str(_bin(venv_dir(settings), "superset"))
    python = str(_bin(venv_dir(settings), "python"))
    home = superset_home(settings)
    state = _init_state(settings)
    if state.get("version") != version or not metadata_path(settings).exists():
        log("superset db upgrade")
        _stream([superset, "db", "upgrade"], log, env=env, timeout=CLI_TIMEOUT, what="superset db upgrade", cwd=home)
        log("superset init")
        _stream([superset, "init"], log, env=env, timeout=CLI_TIMEOUT, what="superset init", cwd=home)
        state = {"version": version}
        _write_state(settings, state)
    fingerprint = _admin_fingerprint(settings)
    if state.get("admin") != fingerprint:
        log(f"superset admin user {settings.superset_user}")
        _, password = require_secrets(settings)
        admin_env = dict(env, BI_CONSOLE_ADMIN_USER=settings.superset_user, BI_CONSOLE_ADMIN_PASSWORD=password)
        _stream(
            [python, "-c", _ADMIN_SCRIPT], log, env=admin_env, timeout=CLI_TIMEOUT, what="superset admin user", cwd=home
        )
        state["admin"] = fingerprint
        _write_state(settings, state)


def _write_state(settings: Settings, state: dict[str, Any]) -> None:
    path = superset_home(settings) / INIT_MARKER
    path.write_text(json.dumps(state))
    os.chmod(path, 0o600)


def ensure_installed(settings: Settings, log: Log = no_log) -> str:
    """Install (first use), write the config, initialise metadata and the admin. Returns the version.

    Raises ConfigError when the secret key or admin password is missing or too short,
    SupersetInstallError when pip or a Superset command fails.
    """
    require_secrets(settings)
    listen_port(settings)
    home = superset_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    version = install_venv(venv_dir(settings), log)
    with _locked(home / ".init.lock"):
        write_config(settings)
        initialise(settings, version, log)
    return version


# --------------------------------------------------------------------------- serving


def run_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """argv and environment that serve Superset on 127.0.0.1:<port of BI_SUPERSET_URL>.

    gunicorn (a Superset dependency) with one worker and threads: on a 2-core machine
    shared with the rest of the stack, more workers cost ~300 MB each for nothing.
    """
    port = listen_port(settings)
    env = superset_env(settings)
    venv = venv_dir(settings)
    if installed_version(venv) is None or not config_path(settings).exists():
        raise SupersetInstallError(
            f"Superset is not installed in {superset_home(settings)}; "
            "run ensure_installed (the Superset install step) first"
        )
    gunicorn = _bin(venv, "gunicorn")
    if gunicorn.exists():
        argv = [
            str(gunicorn),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "8",
            "--timeout",
            "120",
            "--graceful-timeout",
            "10",
            "--limit-request-line",
            "0",
            "--limit-request-field_size",
            "0",
            "--access-logfile",
            "-",
            "--error-logfile",
            "-",
            "--chdir",
            str(superset_home(settings)),
        ]
        if _gunicorn_has_control_socket(venv):
            # gunicorn >= 24 opens ~/.gunicorn/gunicorn.ctl by default: one path for every
            # gunicorn of the user, which another instance would clobber. Not needed here.
            argv.append("--no-control-socket")
        argv.append("superset.app:create_app()")
    else:
        argv = [str(_bin(venv, "superset")), "run", "-h", "127.0.0.1", "-p", str(port), "--with-threads"]
    return argv, env


def _gunicorn_has_control_socket(venv: Path) -> bool:
    for config in venv.glob("lib/python*/site-packages/gunicorn/config.py"):
        try:
            return "--no-control-socket" in config.read_text()
        except OSError:
            return False
    return False


def health(settings: Settings, timeout: float = 5.0) -> tuple[bool, str]:
    """The one probe of Superset's /health: (healthy, evidence naming the URL)."""
    url = health_url(settings)
    started = time.monotonic()
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return False, f"GET {url}: {type(exc).__name__}: {str(exc) or 'no answer'}".splitlines()[0]
    ms = (time.monotonic() - started) * 1000
    if response.status_code == 200 and response.text.strip() == "OK":
        return True, f"GET {url} -> OK in {ms:.0f} ms"
    return False, f"GET {url} -> {response.status_code}: {response.text.strip()[:80]!r}"


def is_healthy(settings: Settings, timeout: float = 3.0) -> bool:
    return health(settings, timeout)[0]


def wait_until_healthy(
    settings: Settings, timeout: float = 180.0, *, interval: float = 0.5, alive: Callable[[], bool] | None = None
) -> float:
    """Poll /health until "OK"; returns the seconds waited. `alive` lets a caller stop early
    when the server process died."""
    start = time.monotonic()
    while True:
        if is_healthy(settings):
            return time.monotonic() - start
        if alive is not None and not alive():
            raise SupersetInstallError(f"GET {health_url(settings)}: the Superset process exited before it was healthy")
        if time.monotonic() - start > timeout:
            raise SupersetInstallError(f"GET {health_url(settings)}: not OK after {timeout:.0f}s")
        time.sleep(interval)
