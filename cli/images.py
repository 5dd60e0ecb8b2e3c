"""`bi-console images build`: every image of the stand-in compose profile, built on this
host with no registry (an air-gapped install, and what CI runs).

The base is Debian itself (debootstrap, then `docker import`), the project's image is
`compose/Dockerfile` with that base as its BASE build argument and the dependencies
installed offline from a wheelhouse built on the host, and each stand-in is a thin
image over it (`compose/standin/Dockerfile.*`). Superset is the project's second own
image: `compose/superset/Dockerfile` on the same base, Superset installed offline from a
wheelhouse of its own (it pins SQLAlchemy 1.4, which cannot share the project's). An image
whose inputs (every file of its build context, its Dockerfile, its build arguments and its
parent image) did not change since it was built is not built again: the inputs' digest is
a label on the image.

Run as `python -m cli.images build [--force] [--only NAME]`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
STANDIN_DIR = ROOT / "compose" / "standin"
INPUTS_LABEL = "bi-console.inputs-sha256"
VERSION = "0.1.0"

BASE_IMAGE = "bi-console-base-debian:bookworm"
PROJECT_IMAGE = f"bi-console:{VERSION}"
# The exact release the image holds, so that its tag says what is in it; the embedded
# Superset follows install.SUPERSET_SPEC (the same minor), with the same extras.
SUPERSET_VERSION = "6.1.0"
SUPERSET_IMAGE = f"bi-console-superset:{SUPERSET_VERSION}-local"
SUPERSET_DIR = ROOT / "compose" / "superset"
DEBOOTSTRAP = ["--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm"]
DEBIAN_MIRROR = os.environ.get("BI_DEBIAN_MIRROR", "http://deb.debian.org/debian")

Log = Callable[[str], None]


@dataclass
class Image:
    """One image of the profile: its tag, Dockerfile and build context."""

    tag: str
    dockerfile: str
    context: Path
    parent: str | None = None
    buildargs: dict[str, str] = field(default_factory=dict)
    standin_for: str = ""


def standin_images() -> list[Image]:
    """The stand-ins: real parts that run here, in place of upstream images that cannot be had."""
    args = {"BI_CONSOLE_IMAGE": PROJECT_IMAGE}

    def standin(name: str, upstream: str) -> Image:
        return Image(
            f"bi-console-standin-{name}:{VERSION}", f"Dockerfile.{name}", STANDIN_DIR, PROJECT_IMAGE, args, upstream
        )

    return [
        standin("kafka-tansu", "apache/kafka (KRaft)"),
        standin("s3-moto", "minio/minio"),
        standin("postgres-debian", "postgres:16 (and the SQL Server source, as a PostgreSQL demo source)"),
        standin("connect-debezium-engine", "quay.io/debezium/connect"),
    ]


def cache_dir() -> Path:
    base = os.environ.get("BI_IMAGES_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bi-console", "images"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def context_digest(context: Path) -> str:
    """Every file of a build context, by relative path and content."""

    def parts():
        for path in sorted(p for p in context.rglob("*") if p.is_file()):
            yield str(path.relative_to(context)).encode()
            yield path.read_bytes()

    return digest(parts())


def dependency_spec() -> dict:
    """What decides the wheelhouse: the project's runtime dependencies (not its test markers)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"dependencies": project.get("dependencies", []), "requires-python": project.get("requires-python")}


def superset_requirements() -> list[str]:
    """What the Superset image installs: the release, install.py's extras (the same pins the
    embedded Superset is verified with), and async-timeout, which redis needs on Debian's
    Python 3.11.2 but does not declare for it."""
    from pipeline.superset.install import EXTRA_PACKAGES

    return [f"apache-superset=={SUPERSET_VERSION}", *EXTRA_PACKAGES, "async-timeout>=4.0.3"]


def tracked_files(root: Path) -> list[str]:
    """The repository's files as git knows them: a build context without venvs, secrets or caches."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], check=True, capture_output=True).stdout
    return [name for name in out.decode().split("\0") if name and (root / name).is_file()]


# --------------------------------------------------------------------------------------


class Builder:
    def __init__(self, log: Log = click.echo, force: bool = False, nice: int = 15):
        import docker

        self.log = log
        self.force = force
        self.nice = nice
        try:
            self.client = docker.from_env(timeout=1800)
            self.client.ping()
        except Exception as exc:  # noqa: BLE001 - one line naming the engine, whatever the SDK raised
            raise click.ClickException(f"Docker engine not reachable: {' '.join(str(exc).split())[:200]}") from None
        self.cache = cache_dir()
        self.timings: dict[str, float] = {}

    def _image_inputs(self, tag: str) -> str | None:
        import docker

        try:
            image = self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return None
        return (image.labels or {}).get(INPUTS_LABEL)

    def _image_id(self, tag: str) -> str:
        return self.client.images.get(tag).id

    def _niced(self, argv: list[str]) -> list[str]:
        return ["nice", "-n", str(self.nice), *argv] if shutil.which("nice") and self.nice else argv

    # -- base -----------------------------------------------------------------
    def base(self) -> None:
        inputs = digest([json.dumps([DEBOOTSTRAP, DEBIAN_MIRROR]).encode()])
        if not self.force and self._image_inputs(BASE_IMAGE) == inputs:
            self.log(f"{BASE_IMAGE}: up to date, not rebuilt")
            return
        if not shutil.which("debootstrap"):
            raise click.ClickException("debootstrap is not installed (apt-get install debootstrap)")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.cache, prefix="rootfs-") as rootfs:
            self.log(f"{BASE_IMAGE}: debootstrap {' '.join(DEBOOTSTRAP)} from {DEBIAN_MIRROR}")
            self._run(self._niced(["debootstrap", *DEBOOTSTRAP, rootfs, DEBIAN_MIRROR]), "debootstrap")
            self.log(f"{BASE_IMAGE}: docker import")
            tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
            imported = subprocess.run(
                [
                    "docker",
                    "import",
                    "-c",
                    f"LABEL {INPUTS_LABEL}={inputs}",
                    "-c",
                    'CMD ["/bin/bash"]',
                    "-",
                    BASE_IMAGE,
                ],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
            )
            tar.wait()
            if imported.returncode or tar.returncode:
                raise click.ClickException(f"docker import of {BASE_IMAGE} failed: {imported.stderr.strip()}")
        self.timings[BASE_IMAGE] = time.monotonic() - started
        self.log(f"{BASE_IMAGE}: built in {self.timings[BASE_IMAGE]:.0f}s")

    def _run(self, argv: list[str], what: str, progress: tuple[str, ...] = ()) -> None:
        """Run argv; lines starting with `progress` are counted and the count shown now and then."""
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail: list[str] = []
        done = 0
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-20:]
            if progress and line.lstrip().startswith(progress):
                done += 1
                if done % 25 == 0:
                    self.log(f"  {what}: {done} done")
            if line.startswith(("I: Retrieving", "I: Extracting", "I: Installing", "I: Configuring", "I: Base")):
                continue  # hundreds of these; the last lines are shown on failure
        if proc.wait():
            raise click.ClickException(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))

    # -- wheelhouse -----------------------------------------------------------
    def wheelhouse(self) -> Path:
        """The project's dependencies as wheels, built with the host's pip (which reaches the index)."""
        path = self.cache / "wheelhouse"
        inputs = digest([json.dumps(dependency_spec()).encode(), sys.version.encode()])
        stamp = path / ".inputs"
        if not self.force and stamp.is_file() and stamp.read_text() == inputs:
            self.log(f"wheelhouse: up to date ({len(list(path.glob('*.whl')))} wheels), not rebuilt")
            return path
        started = time.monotonic()
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        self.log(f"wheelhouse: pip wheel of the project's dependencies into {path}")
        self._run(
            self._niced(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--quiet",
                    "--wheel-dir",
                    str(path),
                    str(ROOT),
                    "setuptools>=68",
                    "wheel",
                ]
            ),
            "pip wheel",
        )
        for own in path.glob("bi_console-*.whl"):
            own.unlink()  # the project goes in from source, so a code change does not rebuild the deps layer
        stamp.write_text(inputs)
        self.timings["wheelhouse"] = time.monotonic() - started
        self.log(f"wheelhouse: {len(list(path.glob('*.whl')))} wheels in {self.timings['wheelhouse']:.0f}s")
        return path

    def superset_wheelhouse(self) -> Path:
        """Superset's wheels, fetched by the host's pip. Wheels already in the directory are
        used first, offline; only what they do not satisfy is fetched from the index."""
        path = self.cache / "superset-wheelhouse"
        requirements = "\n".join(superset_requirements()) + "\n"
        inputs = digest([requirements.encode(), sys.version.encode()])
        stamp = path / ".inputs"
        if not self.force and stamp.is_file() and stamp.read_text() == inputs:
            self.log(f"superset wheelhouse: up to date ({len(list(path.glob('*.whl')))} wheels), not rebuilt")
            return path
        started = time.monotonic()
        path.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        (path / "requirements.txt").write_text(requirements)
        pip_wheel = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--progress-bar",
            "off",
            "--wheel-dir",
            str(path),
            "--find-links",
            str(path),
            "-r",
            str(path / "requirements.txt"),
        ]
        self.log(f"superset wheelhouse: {' '.join(superset_requirements())} into {path}")
        wheel_lines = ("Saved ", "File was already downloaded")  # one per wheel: the progress
        try:
            self._run(self._niced([*pip_wheel, "--no-index"]), "pip wheel (offline)", progress=wheel_lines)
        except click.ClickException:
            self.log("superset wheelhouse: the wheels at hand do not satisfy it; fetching from the index")
            self._run(self._niced(pip_wheel), "pip wheel", progress=wheel_lines)
        stamp.write_text(inputs)
        self.timings["superset wheelhouse"] = time.monotonic() - started
        self.log(
            f"superset wheelhouse: {len(list(path.glob('*.whl')))} wheels in {self.timings['superset wheelhouse']:.0f}s"
        )
        return path

    # -- docker build ---------------------------------------------------------
    def superset(self, wheels: Path) -> None:
        with tempfile.TemporaryDirectory(dir=self.cache, prefix="superset-context-") as tmp:
            context = Path(tmp)
            for source in SUPERSET_DIR.iterdir():
                if source.is_file():
                    shutil.copy2(source, context / source.name)
            house = context / ".wheelhouse"
            house.mkdir()
            for wheel in wheels.glob("*.whl"):
                os.link(wheel, house / wheel.name)
            shutil.copy2(wheels / "requirements.txt", house / "requirements.txt")
            self.build(Image(SUPERSET_IMAGE, "Dockerfile", context, BASE_IMAGE, {"SUPERSET_BASE": BASE_IMAGE}))

    def project(self, wheels: Path) -> None:
        with tempfile.TemporaryDirectory(dir=self.cache, prefix="context-") as tmp:
            context = Path(tmp)
            for name in tracked_files(ROOT):
                target = context / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target)
            (context / ".wheelhouse").mkdir()
            for wheel in wheels.glob("*.whl"):
                os.link(wheel, context / ".wheelhouse" / wheel.name)
            self.build(Image(PROJECT_IMAGE, "compose/Dockerfile", context, BASE_IMAGE, {"BASE": BASE_IMAGE}))

    def build(self, image: Image) -> None:
        parent_id = self._image_id(image.parent) if image.parent else ""
        inputs = digest(
            [
                context_digest(image.context).encode(),
                image.dockerfile.encode(),
                json.dumps(image.buildargs, sort_keys=True).encode(),
                parent_id.encode(),
            ]
        )
        if not self.force and self._image_inputs(image.tag) == inputs:
            self.log(f"{image.tag}: up to date, not rebuilt")
            return
        started = time.monotonic()
        self.log(
            f"{image.tag}: docker build -f {image.dockerfile}"
            + (f" (stand-in for {image.standin_for})" if image.standin_for else "")
        )
        labels = {INPUTS_LABEL: inputs}
        if image.standin_for:
            labels["bi-console.standin-for"] = image.standin_for
        stream = self.client.api.build(
            path=str(image.context),
            dockerfile=image.dockerfile,
            tag=image.tag,
            buildargs=image.buildargs,
            labels=labels,
            rm=True,
            forcerm=True,
            decode=True,
            pull=False,
        )
        for chunk in stream:
            if "error" in chunk:
                raise click.ClickException(f"docker build of {image.tag} failed: {chunk['error'].strip()}")
            text = (chunk.get("stream") or "").rstrip()
            if text.startswith(("Step ", "Successfully built", "Successfully tagged")):
                self.log(f"  {text}")
        self.timings[image.tag] = time.monotonic() - started
        self.log(f"{image.tag}: built in {self.timings[image.tag]:.0f}s")

    def all(self, only: str | None = None) -> None:
        self.base()
        wheels = self.wheelhouse()
        self.project(wheels)
        self.superset(self.superset_wheelhouse())
        for image in standin_images():
            if only and only not in image.tag:
                continue
            self.build(image)


@click.group()
def images() -> None:
    """Images of the stand-in compose profile (no registry needed)."""


@images.command("build")
@click.option("--force", is_flag=True, help="Rebuild even when the inputs did not change.")
@click.option(
    "--only", help="Only the stand-in whose tag contains this text (the base, bi-console and Superset always)."
)
def build_command(force: bool, only: str | None) -> None:
    """Build the base, bi-console, Superset and every stand-in image; skip those whose inputs did not change."""
    started = time.monotonic()
    builder = Builder(force=force)
    builder.all(only)
    click.echo(f"images: done in {time.monotonic() - started:.0f}s")


@images.command("list")
def list_command() -> None:
    """The profile's images, with the upstream image each stand-in replaces."""
    for image in [
        Image(BASE_IMAGE, "", ROOT),
        Image(PROJECT_IMAGE, "compose/Dockerfile", ROOT),
        Image(SUPERSET_IMAGE, "compose/superset/Dockerfile", SUPERSET_DIR),
        *standin_images(),
    ]:
        click.echo(f"{image.tag:55} {('stand-in for ' + image.standin_for) if image.standin_for else ''}")


if __name__ == "__main__":
    images()
