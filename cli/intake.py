"""`bi-console quarantine list|show|replay` and `bi-console raw-zone audit|recover`: what
did not reach bronze, and the raw objects bronze was loaded from.

Data on stdout, diagnostics on stderr; exit codes as every command (README).
"""

from __future__ import annotations

import json
import sys

import click


def _settings(ctx: click.Context):
    from cli.main import settings_or_exit

    return settings_or_exit(ctx)


def _err(message: str) -> None:
    click.echo(message, err=True)


def _tables(settings, table: str | None):
    return [settings.table(table)] if table else list(settings.tables)


def _shorten(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


@click.group("quarantine")
def quarantine_group() -> None:
    """Messages ingest quarantined and rows load rejected, with where they came from and why."""


@quarantine_group.command("list")
@click.option("--table", default=None, help="One configured table (default: all).")
@click.option("--limit", default=50, show_default=True, help="At most this many of each kind.")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@click.pass_context
def list_command(ctx: click.Context, table: str | None, limit: int, as_json: bool) -> None:
    """Quarantined messages (offset, reason, preview) and rejected rows (offset, reason)."""
    from pipeline.steps import quarantine

    settings = _settings(ctx)
    entries, rejects = [], []
    for cfg in _tables(settings, table):
        entries += quarantine.list_entries(settings, cfg, limit=limit)
        rejects += quarantine.list_rejects(settings, cfg, limit=limit)
    if as_json:
        click.echo(
            json.dumps(
                {"quarantined": [vars(e) for e in entries], "rejected": [vars(r) for r in rejects]},
                indent=2,
                default=str,
            )
        )
        return
    click.echo(f"{'KIND':11} {'TABLE':14} {'POSITION':38} {'BYTES':>9}  REASON / PREVIEW")
    for e in entries:
        state = "replayed" if e.replayed_at else "quarantined"
        click.echo(
            f"{state:11} {e.table:14} {_position(e.topic, e.partition, e.offset, e.epoch):38} "
            f"{e.value_bytes:>9}  {_shorten(e.reason, 70)}"
        )
        click.echo(f"{'':11} {'':14} {'':38} {'':>9}  {_shorten(e.preview, 70)}")
    for r in rejects:
        position = (
            _position(r.topic, r.partition, r.offset, r.epoch)
            if r.offset is not None
            else f"{r.object_key.rsplit('/', 1)[-1]}:{r.line_number}"
        )
        click.echo(f"{'rejected':11} {r.table:14} {position:38} {'':>9}  {_shorten(r.reason, 70)}")
    _err(f"{len(entries)} quarantined message(s), {len(rejects)} rejected row(s)")


def _position(topic: str | None, partition: int | None, offset: int | None, epoch: int | None) -> str:
    return f"{topic}[{partition}]@{offset}" + (f" epoch {epoch}" if epoch else "")


@quarantine_group.command("show")
@click.option("--table", required=True, help="The configured table.")
@click.option("--offset", type=int, required=True)
@click.option("--partition", type=int, default=0, show_default=True)
@click.option("--epoch", type=int, default=0, show_default=True, help="The topic's epoch (after a broker reset).")
@click.option("--topic", default=None, help="Default: the table's topic.")
@click.option("--json", "as_json", is_flag=True, help="Position, reason, key and value as JSON.")
@click.pass_context
def show_command(
    ctx: click.Context, table: str, offset: int, partition: int, epoch: int, topic: str | None, as_json: bool
) -> None:
    """The whole original message. Without --json the value's bytes go to stdout as they
    arrived (pipe them to a file or `jq`), the position and reason to stderr."""
    from pipeline.steps import quarantine

    settings = _settings(ctx)
    cfg = settings.table(table)
    try:
        message = quarantine.show(settings, cfg, topic or cfg.topic, partition, offset, epoch)
    except quarantine.QuarantineNotFound as exc:
        _err(f"bi-console: {exc}")
        sys.exit(1)
    entry = message.entry
    if as_json:

        def text(raw: bytes | None) -> str | None:
            return None if raw is None else raw.decode("utf-8", "backslashreplace")

        click.echo(
            json.dumps(
                {**vars(entry), "timestamp": message.timestamp, "key": text(message.key), "value": text(message.value)},
                indent=2,
                default=str,
            )
        )
        return
    _err(
        f"{_position(entry.topic, entry.partition, entry.offset, entry.epoch)}: {entry.reason} "
        f"({entry.value_bytes} bytes, quarantined {entry.quarantined_at:%Y-%m-%d %H:%M:%S})"
    )
    sys.stdout.buffer.write(message.value or b"")
    sys.stdout.buffer.flush()


@quarantine_group.command("replay")
@click.option("--table", default=None, help="One configured table (default: all).")
@click.pass_context
def replay_command(ctx: click.Context, table: str | None) -> None:
    """Check the quarantined messages against today's rules (after the cause is fixed, e.g.
    BI_INGEST_MAX_VALUE_BYTES raised) and hand those that pass to load. Idempotent.
    Exit 1 while some still fail."""
    from pipeline.checks.fixes import holding_refresh_lock
    from pipeline.orchestration.refresh import RefreshLocked
    from pipeline.steps import quarantine

    settings = _settings(ctx)
    try:
        with holding_refresh_lock(settings, "quarantine replay"):
            results = [quarantine.replay(settings, cfg, log=_err) for cfg in _tables(settings, table)]
    except RefreshLocked as exc:
        _err(f"bi-console: {exc}")
        sys.exit(4)
    replayed = sum(r.replayed for r in results)
    failing = [f for r in results for f in r.failing]
    for topic, partition, epoch, offset, reason in failing:
        _err(f"still quarantined: {_position(topic, partition, offset, epoch)}: {reason}")
    click.echo(
        json.dumps(
            {"replayed": replayed, "still_failing": len(failing), "objects": [o for r in results for o in r.objects]}
        )
    )
    if replayed:
        _err(
            f"replayed {replayed} message(s) into the raw zone; the next refresh loads them "
            "(`bi-console refresh --incremental`)"
        )
    sys.exit(1 if failing else 0)


@click.group("raw-zone")
def raw_zone_group() -> None:
    """The raw zone against the load manifest: the objects every full refresh rebuilds bronze from."""


@raw_zone_group.command("audit")
@click.option("--table", default=None, help="One configured table (default: all).")
@click.pass_context
def audit_command(ctx: click.Context, table: str | None) -> None:
    """Loaded objects missing from the raw zone. Exit 1 when any is."""
    from pipeline.checks.raw_zone import audit_raw_zone
    from pipeline.stores.db import connect

    settings = _settings(ctx)
    conn = connect(settings)
    try:
        audits = [audit_raw_zone(settings, cfg, conn) for cfg in _tables(settings, table)]
    finally:
        conn.close()
    for audit in audits:
        click.echo(f"{'✓' if audit.ok else '✗'} {audit.table}: {audit.evidence(settings.s3_bucket)}")
        for key in audit.missing:
            click.echo(f"    missing {key}")
    sys.exit(0 if all(a.ok for a in audits) else 1)


@raw_zone_group.command("recover")
@click.pass_context
def recover_command(ctx: click.Context) -> None:
    """Rewrite the missing objects from the topic while it holds their offsets (the
    Troubleshoot view's bronze fix). Exit 1 when some are no longer in the topic."""
    from pipeline.checks.fixes import fix_bronze_load
    from pipeline.orchestration.refresh import RefreshLocked

    settings = _settings(ctx)
    try:
        repair = fix_bronze_load(settings, log=_err)
    except RefreshLocked as exc:
        _err(f"bi-console: {exc}")
        sys.exit(4)
    click.echo(json.dumps({"recovered": repair.recovered, "lost": repair.lost}))
    sys.exit(1 if repair.lost else 0)
