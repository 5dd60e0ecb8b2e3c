"""README screenshots: an SVG of each view, written with `app.save_screenshot()`.

python -m tui.screenshots                      # the recorded state (deterministic)
python -m tui.screenshots --env-file .env      # the live stack of this settings file
python -m tui.screenshots --size 160x48 --out docs/screenshots
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIEWS = {"services": "1", "connector": "2", "pipeline": "3", "quality": "4", "troubleshoot": "5"}


def recorded_settings():
    from pipeline.config import DEFAULT_CONFIG, load_settings

    # Recorded views never connect; the secrets only satisfy the settings' required fields.
    unused = {
        name: secrets.token_urlsafe(12)
        for name in ("pg_password", "pg_reader_password", "source_password", "s3_access_key", "s3_secret_key")
    }
    return load_settings(
        env_file=None,
        data_dir=tempfile.mkdtemp(prefix="bi-console-shots-"),
        config_file=str(DEFAULT_CONFIG),
        runtime="embedded",
        **unused,
    )


async def export(app, out: Path, size: tuple[int, int], settle: float) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    async with app.run_test(size=size) as pilot:
        await pilot.pause(settle)
        for name, key in VIEWS.items():
            await pilot.press(key)
            await pilot.pause(settle)
            path = out / f"{name}.svg"
            app.save_screenshot(filename=path.name, path=str(out))
            written.append(path)
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        app.save_screenshot(filename="help.svg", path=str(out))
        written.append(out / "help.svg")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export an SVG screenshot of each TUI view.")
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    parser.add_argument("--size", default="120x36", help="COLSxROWS")
    parser.add_argument("--env-file", help="screenshot the live stack of this settings file instead")
    args = parser.parse_args(argv)
    cols, rows = (int(v) for v in args.size.lower().split("x"))
    sys.path.insert(0, str(REPO))
    from tui.app import BiConsoleApp

    if args.env_file:
        from pipeline.config import load_settings

        app, settle = BiConsoleApp(load_settings(env_file=args.env_file)), 3.0
    else:
        app, settle = BiConsoleApp(recorded_settings(), recorded=True), 0.2
    for path in asyncio.run(export(app, Path(args.out), (cols, rows), settle)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
