"""`bi-console table add NAME --from-ddl FILE | --from-topic TOPIC`: a new table by
configuration alone (pipeline/orchestration/table_add.py writes its files).

The written paths go to stdout; with --dry-run, every file's new text (or what is added to
it) instead, and nothing is written. Exit codes as every command (README): 2 for a table
that exists, a file that is missing or a DDL that cannot be read, naming it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group("table")
def table_group() -> None:
    """Add a source table: its source contract, staging models and [[tables]] entry."""


@table_group.command("add")
@click.argument("name")
@click.option("--from-ddl", "ddl_file", type=click.Path(path_type=Path), help="The table's SQL Server CREATE TABLE.")
@click.option("--from-topic", "topic", help="Its Debezium topic: the newest message's schema (schemas on).")
@click.option(
    "--dbt-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The dbt project to write the models into (default: the one the pipeline runs).",
)
@click.option("--dry-run", is_flag=True, help="Print what would be written; write nothing.")
@click.pass_context
def add_command(
    ctx: click.Context, name: str, ddl_file: Path | None, topic: str | None, dbt_dir: Path | None, dry_run: bool
) -> None:
    """Write NAME's source contract, its base_/stg_ models, its bronze source and its [[tables]] entry."""
    from cli.main import EXIT_USAGE, err, settings_or_exit
    from pipeline.config import ConfigError
    from pipeline.orchestration.table_add import apply_table_add, plan_table_add

    if (ddl_file is None) == (topic is None):
        err("bi-console: table add: give exactly one of --from-ddl FILE and --from-topic TOPIC")
        sys.exit(EXIT_USAGE)
    settings = settings_or_exit(ctx)
    try:
        addition = plan_table_add(settings, name, ddl_file=ddl_file, topic=topic, dbt_dir=dbt_dir)
    except ConfigError as exc:
        err(f"bi-console: table add: {exc}")
        sys.exit(EXIT_USAGE)
    guesses = [c for c in addition.contract.columns if c.note]
    if dry_run:
        for planned in addition.files:
            verb = "would write" if planned.new else "would append to"
            click.echo(f"--- {verb} {planned.path}")
            click.echo(planned.added, nl=False)
    else:
        for path in apply_table_add(addition):
            click.echo(str(path))
    err(
        f"table add: {name}: {len(addition.contract.columns)} columns, key "
        f"{', '.join(addition.contract.key_columns)}, from {addition.contract.source}"
        + (f"; {len(guesses)} types guessed from the topic's schema (see their `note`)" if guesses else "")
    )
