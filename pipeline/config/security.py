"""Credential hygiene: refuse known default credentials, redact secrets, and check that
compose files keep the project's rules (pinned images, healthchecks, 127.0.0.1 ports,
secrets only by interpolation).

Every message is one line naming the variable, service or image at fault.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values  # a dependency of pydantic-settings

from pipeline.config import ENV_PREFIX

REDACTED = "***"

# Values that ship as defaults in the images or in tutorials this pipeline came from.
KNOWN_DEFAULT_VALUES = frozenset(
    {
        "minioadmin",
        "admin",
        "administrator",
        "password",
        "passw0rd",
        "changeme",
        "change_me",
        "secret",
        "postgres",
        "analytics",
        "superset",
        "root",
        "test",
        "guest",
        "debezium",
        "sa",
        "123456",
        "12345678",
        "yourstrong(!)password",
        "yourstrongpassw0rd",
        "thisisasecret_1234",
        "your_secret_key",
        "supersecret",
    }
)
# Superset's documented placeholders for SECRET_KEY.
KNOWN_DEFAULT_SECRET_KEYS = (
    "thisISaSECRET_1234",
    "\2\1thisismyscretkey\1\2\\e\\y\\y\\h",
    "CHANGE_ME_TO_A_COMPLEX_RANDOM_SECRET",
    "YOUR_OWN_RANDOM_GENERATED_SECRET_KEY",
)
MIN_SECRET_KEY_LENGTH = 32


class DefaultCredentialError(ValueError):
    """A known default or too weak credential is configured. One line, naming the variable."""


_ARG_REFERENCE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def _is_known_default(value: str) -> bool:
    v = value.strip().lower()
    return v in KNOWN_DEFAULT_VALUES or v.startswith("change_me") or v.startswith("changeme")


def default_credential_problems(settings: Any, env: Mapping[str, str] | None = None) -> list[str]:
    """Every default or weak credential in `settings`, one line each, naming the variable.

    Secrets that only compose uses (BI_SOURCE_SA_PASSWORD) are not Settings fields: they
    are read from `env`, by default the process environment over `./.env`."""
    problems: list[str] = []
    fix = "run `bi-console init --compose` to generate a random one"

    def var(field: str) -> str:
        return ENV_PREFIX + field.upper()

    for field in (
        "pg_password",
        "pg_reader_password",
        "source_password",
        "s3_access_key",
        "s3_secret_key",
        "superset_password",
    ):
        value = getattr(settings, field, None)
        if value is None:
            if field == "superset_password":
                problems.append(f"{var(field)} is not set; compose mode needs it ({fix})")
            continue
        if _is_known_default(value):
            problems.append(f"{var(field)} is a known default credential ({value.strip()!r}); {fix}")
        elif len(value) < 8 and field != "s3_access_key":
            problems.append(f"{var(field)} is shorter than 8 characters; {fix}")

    user_pairs = (
        ("pg_password", "pg_user"),
        ("pg_reader_password", "pg_reader_user"),
        ("source_password", "source_user"),
        ("s3_secret_key", "s3_access_key"),
        ("superset_password", "superset_user"),
    )
    for secret_field, user_field in user_pairs:
        secret = getattr(settings, secret_field, None)
        user = getattr(settings, user_field, None)
        if secret and user and secret == user and not _is_known_default(secret):
            problems.append(f"{var(secret_field)} equals {var(user_field)}; {fix}")

    key = getattr(settings, "superset_secret_key", None)
    if key is None:
        problems.append(f"{var('superset_secret_key')} is not set; compose mode needs it ({fix})")
    elif key in KNOWN_DEFAULT_SECRET_KEYS or _is_known_default(key):
        problems.append(f"{var('superset_secret_key')} is Superset's published default SECRET_KEY; {fix}")
    elif len(key) < MIN_SECRET_KEY_LENGTH:
        problems.append(f"{var('superset_secret_key')} is shorter than {MIN_SECRET_KEY_LENGTH} characters; {fix}")

    sa_password = _extra(settings, "source_sa_password", env)
    if sa_password is not None:
        if _is_known_default(sa_password):
            problems.append(f"{var('source_sa_password')} is a known default credential; {fix}")
        elif not sql_server_password_ok(sa_password):
            problems.append(
                f"{var('source_sa_password')} does not meet SQL Server's password policy "
                f"(8+ characters from 3 of: upper, lower, digit, symbol); {fix}"
            )
    return problems


def check_default_credentials(settings: Any, env: Mapping[str, str] | None = None) -> None:
    """Raise DefaultCredentialError (one line) if compose mode would start with a default credential."""
    problems = default_credential_problems(settings, env)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DefaultCredentialError(problems[0] + more)


def sql_server_password_ok(value: str) -> bool:
    classes = [
        any(c.isupper() for c in value),
        any(c.islower() for c in value),
        any(c.isdigit() for c in value),
        any(not c.isalnum() for c in value),
    ]
    return len(value) >= 8 and sum(classes) >= 3


def _extra(settings: Any, field: str, env: Mapping[str, str] | None) -> str | None:
    """A secret that Settings does not declare (it ignores unknown variables)."""
    value = getattr(settings, field, None)
    if value is None:
        value = (getattr(settings, "model_extra", None) or {}).get(field)
    if value is None:
        if env is None:
            env = {**_dotenv(Path(".env")), **os.environ}
        value = env.get(ENV_PREFIX + field.upper())
    return value


def _dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of every secret in `text` with ***. Longest first, so a
    secret that contains another is redacted whole; empty and very short values are skipped."""
    values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
    for value in values:
        text = text.replace(value, REDACTED)
    return text


# --------------------------------------------------------------------------------------
# Compose policy
# --------------------------------------------------------------------------------------

ONE_SHOT_LABEL = "bi-console.one-shot"
_SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|(^|_)(ACCESS_|API_|PRIVATE_)?KEY($|_ID$)", re.IGNORECASE
)
_INTERPOLATION_ONLY = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?[?\-+][^}]*)?\}$")  # one ${...}, nothing else
_REQUIRED_INTERPOLATION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:?\?[^}]*\}$")
_LOOPBACK = {"127.0.0.1", "::1", "[::1]"}


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def image_pinned(image: str | None) -> bool:
    """An exact version or a digest; never `latest`, never missing."""
    if not image:
        return False
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return bool(tag) and tag.lower() != "latest" and "$" not in tag and any(ch.isdigit() for ch in tag)


def _environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str | None] = {}
        for item in env:
            name, sep, value = str(item).partition("=")
            out[name] = value if sep else None
        return out
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def _is_one_shot(service: Mapping[str, Any]) -> bool:
    labels = service.get("labels") or {}
    if isinstance(labels, list):
        labels = dict(str(item).partition("=")[::2] for item in labels)
    return str(labels.get(ONE_SHOT_LABEL, "")).lower() == "true"


def _port_problems(name: str, ports: list[Any] | None) -> list[str]:
    problems = []
    for port in ports or []:
        if isinstance(port, Mapping):
            host_ip = port.get("host_ip")
            if port.get("published") is not None and host_ip not in _LOOPBACK:
                problems.append(
                    f"service {name}: port {port.get('published')} is published on "
                    f"{host_ip or 'every interface'}, not 127.0.0.1"
                )
            continue
        shown = str(port)
        # [ip:]published:target[/proto]; an IPv6 host ip is bracketed. An interpolated
        # part (${VAR:-5433}) may hold a colon: read it as one opaque token.
        spec = re.sub(r"\$\{[^}]*\}", "VAR", shown)
        if spec.startswith("["):
            host_ip = spec[1 : spec.index("]")]
        else:
            parts = spec.split(":")
            host_ip = parts[0] if len(parts) == 3 else None
        if host_ip not in _LOOPBACK:
            problems.append(
                f"service {name}: port {shown} is published on {host_ip or 'every interface'}, not 127.0.0.1"
            )
    return problems


def compose_policy_problems(doc: Mapping[str, Any], *, base_dir: Path | None = None) -> list[str]:
    """Every breach of the project's compose rules in a parsed compose file, one line each."""
    problems: list[str] = []
    services: Mapping[str, Any] = doc.get("services") or {}
    for name, service in services.items():
        service = service or {}
        one_shot = _is_one_shot(service)
        image = service.get("image")
        if not image_pinned(image):
            problems.append(f"service {name}: image {image!r} is not pinned to an exact version")
        if "healthcheck" not in service or (service["healthcheck"] or {}).get("disable"):
            if not one_shot:
                problems.append(
                    f"service {name}: no healthcheck (only one-shot jobs labelled {ONE_SHOT_LABEL} may go without)"
                )
        if not one_shot and service.get("restart") in (None, "no"):
            problems.append(f"service {name}: a long-running service needs a restart policy")
        problems += _port_problems(name, service.get("ports"))
        for var, value in _environment(service).items():
            if not is_secret_name(var):
                continue
            if value is None or not _INTERPOLATION_ONLY.match(value.strip()):
                problems.append(
                    f"service {name}: {var} holds a literal value; secrets come from .env as ${{BI_...:?error}}"
                )
            elif not _REQUIRED_INTERPOLATION.match(value.strip()):
                problems.append(f"service {name}: {var} may fall back to a default; use ${{BI_...:?error}}")
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            problems.append(f"service {name}: depends_on lists services without a condition")
            depends = {}
        for dep, spec in depends.items():
            condition = (spec or {}).get("condition")
            target = services.get(dep) or {}
            wanted = "service_completed_successfully" if _is_one_shot(target) else "service_healthy"
            if condition != wanted:
                problems.append(f"service {name}: depends on {dep} with {condition}, not {wanted}")
        for volume in service.get("volumes") or []:
            source, read_only = _volume_source(volume)
            if source and (source.startswith((".", "/", "~"))) and not read_only:
                problems.append(
                    f"service {name}: bind mount {source} is writable; data goes in named "
                    f"volumes, bind mounts are read-only configuration"
                )
        build = service.get("build")
        if build and base_dir is not None:
            problems += dockerfile_problems(name, build, base_dir)
    return problems


def _volume_source(volume: Any) -> tuple[str | None, bool]:
    if isinstance(volume, Mapping):
        return volume.get("source"), bool(volume.get("read_only"))
    parts = str(volume).split(":")
    if len(parts) == 1:
        return None, False
    return parts[0], len(parts) > 2 and "ro" in parts[2].split(",")


def dockerfile_problems(service: str, build: Any, base_dir: Path) -> list[str]:
    """The FROM lines of a service's Dockerfile must be pinned too."""
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    path = (base_dir / context / dockerfile).resolve()
    if not path.is_file():
        return [f"service {service}: Dockerfile {path} does not exist"]
    problems = []
    defaults: dict[str, str] = {}  # FROM ${BASE}: the image is the ARG's default
    for line in path.read_text().splitlines():
        words = line.strip().split()
        if len(words) == 2 and words[0].upper() == "ARG" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            defaults[name] = value.strip('"')
        if len(words) >= 2 and words[0].upper() == "FROM":
            image = next(w for w in words[1:] if not w.startswith("--"))
            image = _ARG_REFERENCE.sub(lambda m: defaults.get(str(m.group(1)), str(m.group(0))), image)
            if not image_pinned(image):
                problems.append(f"service {service}: {path.name} starts FROM {image}, not a pinned version")
    return problems
