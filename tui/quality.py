"""Quality: Great Expectations results and the layer row counts side by side (mismatches
highlighted), freshness against the source, supplier distribution, multilingual coverage,
the data checks `--check` runs (reconciliation with the source and the topic, profile,
tables no suite covers), and what did not reach bronze (quarantined messages, rejected rows)."""

from __future__ import annotations

import json

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from pipeline.checks.views import QualitySnapshot
from tui.base import View, error_text, human_duration

COUNT_COLUMNS = ("bronze_total", "bronze_distinct", "staging_all", "staging_active", "marts")
COUNT_LABELS = ("bronze", "bronze keys", "staging", "stg active", "marts")


class QualityLoaded(Message):
    def __init__(self, snapshot: QualitySnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class ValidationDone(Message):
    def __init__(self, text: str, ok: bool) -> None:
        super().__init__()
        self.text, self.ok = text, ok


def _observed(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str, ensure_ascii=False)[:60]
    return str(value)[:60]


def _tolerated(expectation: dict) -> str | None:
    """For an expectation that passed with rows out of bounds (a `mostly` below 1): how many,
    and that they are within what the suite allows."""
    observed = expectation.get("observed_value")
    if not isinstance(observed, dict):
        return None
    unexpected, total = observed.get("unexpected_count"), observed.get("element_count")
    if not isinstance(unexpected, int) or unexpected <= 0:
        return None
    share = observed.get("unexpected_percent")
    if not isinstance(share, (int, float)):
        share = 100.0 * unexpected / total if total else None
    of = f" of {total}" if total is not None else ""
    pct = f" ({share:.1f}%)" if share is not None else ""
    return f"{unexpected}{of} unexpected{pct}, within the allowed share (mostly)"


def _verdict(result: dict) -> str:
    """ValidationResult.verdict, from its saved form: a table no suite covers never reads as passed."""
    if not result.get("suites"):
        return "not covered"
    return "passed" if result.get("success") else "FAILED"


class QualityView(View):
    BINDINGS = [
        Binding("g", "reload", "Reload", id="quality_reload"),
        Binding("v", "validate", "Validate", id="quality_validate"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.snapshot: QualitySnapshot | None = None
        self._loading = False
        self._validating = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="quality-body"):
            counts = DataTable(id="counts-table", cursor_type="row", show_cursor=False)
            counts.border_title = "layer row counts"
            yield counts
            with Horizontal(id="quality-facts"):
                yield Static("", id="freshness")
                yield Static("", id="suppliers")
            checks = DataTable(id="checks-table", cursor_type="row")
            checks.border_title = "checks"
            yield checks
            intake = DataTable(id="intake-table", cursor_type="row")
            intake.border_title = "quarantine & rejects"
            yield intake
            results = DataTable(id="ge-table", cursor_type="row")
            results.border_title = "Great Expectations"
            yield results

    def on_mount(self) -> None:
        counts = self.query_one("#counts-table", DataTable)
        counts.add_column("table", key="table")
        for key, label in zip(COUNT_COLUMNS, COUNT_LABELS, strict=True):
            counts.add_column(label, key=key)
        ge = self.query_one("#ge-table", DataTable)
        for label in ("", "suite / expectation", "column", "observed"):
            ge.add_column(label, key=label or "mark")
        checks = self.query_one("#checks-table", DataTable)
        for label in ("", "check", "evidence"):
            checks.add_column(label, key=label or "mark")
        intake = self.query_one("#intake-table", DataTable)
        for label in ("", "table", "position", "reason", "preview"):
            intake.add_column(label, key=label or "mark")

    # -- data --------------------------------------------------------------------------
    def refresh_data(self) -> None:
        if not self.live or self._loading:
            return
        self._loading = True
        self._load_worker()

    def worker_failed(self, worker) -> None:
        self._loading = self._validating = False

    @work(thread=True, exit_on_error=False, group="quality", name="quality")
    def _load_worker(self) -> None:
        from pipeline.checks.views import quality_snapshot

        try:
            snapshot = quality_snapshot(self.app.settings)
        finally:
            self._loading = False
        self.post_message(QualityLoaded(snapshot))

    @on(QualityLoaded)
    def _loaded(self, message: QualityLoaded) -> None:
        self.show_snapshot(message.snapshot)

    def show_snapshot(self, snap: QualitySnapshot) -> None:
        self.snapshot = snap
        counts = self.query_one("#counts-table", DataTable)
        counts.clear()
        for c in snap.counts:
            bad = c.mismatches()
            cells = [Text(c.table, style="bold")]
            for key in COUNT_COLUMNS:
                value = getattr(c, key)
                style = "bold white on red" if key in bad else ("dim" if value is None else "")
                shown = (
                    "not modelled" if key == "marts" and not c.marts_modelled else "-" if value is None else str(value)
                )
                cells.append(Text(shown, style=style, justify="right"))
            counts.add_row(*cells, key=c.table)
        mismatched = [c.table for c in snap.counts if c.mismatches()]
        counts.border_subtitle = (
            f"mismatch: {', '.join(mismatched)}" if mismatched else ("consistent" if snap.counts else "")
        )
        counts.set_class(bool(mismatched), "mismatch")

        facts = Text()
        if snap.error:
            facts.append(f"{snap.error}\n", style="bold red")
        lag = snap.freshness_lag
        limit = snap.freshness_max_minutes * 60
        facts.append("freshness ", style="bold")
        if lag is None:
            facts.append("no data\n", style="dim")
        else:
            facts.append(f"{human_duration(lag)} behind the source", style="green" if lag <= limit else "bold red")
            facts.append(f" (max {human_duration(limit)})\n")
        coverage = snap.multilingual_coverage
        facts.append("multilingual ", style="bold")
        if coverage is None:
            facts.append("no data\n", style="dim")
        else:
            facts.append(f"{coverage:.1%} complete\n", style="green" if coverage >= 1.0 else "yellow")
            facts.append("  " + ", ".join(f"{s} {n}" for s, n in snap.multilingual), style="dim")
        self.query_one("#freshness", Static).update(facts)

        total = sum(n for _, n in snap.suppliers) or 1
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold")
        grid.add_column(justify="right")
        grid.add_column()
        for name, n in snap.suppliers[:6]:
            grid.add_row(name, str(n), Text("█" * max(1, round(14 * n / total)), style="cyan"))
        if len(snap.suppliers) > 6:
            rest = sum(n for _, n in snap.suppliers[6:])
            grid.add_row(f"+{len(snap.suppliers) - 6} more", str(rest), "")
        suppliers = self.query_one("#suppliers", Static)
        suppliers.update(grid if snap.suppliers else Text("no supplier data", style="dim"))
        suppliers.border_title = "suppliers"

        self._show_checks(snap)
        self._show_intake(snap)

        ge = self.query_one("#ge-table", DataTable)
        ge.clear()
        if not snap.validation:
            ge.add_row("", Text("no validation results yet (v runs them)", style="dim"), "", "")
        for result in snap.validation.values():
            for suite in result.get("suites", []):
                ok = suite.get("success")
                ge.add_row(
                    Text("✓" if ok else "✗", style="green" if ok else "bold red"),
                    Text(f"{suite.get('name')} ({suite.get('layer')})", style="bold"),
                    "",
                    Text(suite.get("error") or "", style="red"),
                )
                for e in suite.get("expectations", []):
                    good = e.get("success")
                    mark, style = (
                        ("✓", "green")
                        if good
                        else (("✗", "bold red") if e.get("severity") == "error" else ("!", "yellow"))
                    )
                    observed: str | Text = _observed(e.get("observed_value"))
                    tolerated = _tolerated(e) if good else None
                    if tolerated:  # a bare count beside a ✓ reads as a contradiction: say why it passed
                        mark, style, observed = "✓!", "bold yellow", Text(tolerated, style="yellow")
                    ge.add_row(
                        Text(mark, style=style),
                        "  " + str(e.get("type", "?")).removeprefix("expect_"),
                        e.get("column") or "",
                        observed,
                    )
        ge.border_subtitle = ", ".join(
            f"{t}: {_verdict(r)} {str(r.get('started_at', ''))[:16]}" for t, r in snap.validation.items()
        )

    def _show_checks(self, snap: QualitySnapshot) -> None:
        table = self.query_one("#checks-table", DataTable)
        table.clear()
        marks = {"pass": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "bold red"), "skip": ("·", "dim")}
        for check in snap.checks:
            mark, style = marks[check.status]
            table.add_row(
                Text(mark, style=style),
                Text(check.name, style="" if check.ok else "bold"),
                Text(check.evidence, style="" if check.ok else style),
            )
        failing = [c for c in snap.checks if c.status == "fail"]
        warning = [c for c in snap.checks if c.status == "warn"]
        table.border_subtitle = (
            f"{len(failing)} failed · {len(warning)} warnings"
            if failing or warning
            else ("all pass" if snap.checks else "")
        )
        table.set_class(bool(failing), "mismatch")

    def _show_intake(self, snap: QualitySnapshot) -> None:
        """What did not reach bronze: quarantined messages (not replayed) and rejected rows."""
        intake = self.query_one("#intake-table", DataTable)
        intake.clear()
        for e in snap.quarantined:
            position = f"{e.topic}[{e.partition}]@{e.offset}" + (f" epoch {e.epoch}" if e.epoch else "")
            intake.add_row(
                Text("Q", style="bold yellow"),
                e.table,
                position,
                Text(e.reason, style="yellow"),
                Text((e.preview or "")[:80], style="dim"),
            )
        for r in snap.rejected:
            position = (
                f"{r.topic}[{r.partition}]@{r.offset}" + (f" epoch {r.epoch}" if r.epoch else "")
                if r.offset is not None
                else f"{r.object_key.rsplit('/', 1)[-1]} line {r.line_number}"
            )
            intake.add_row(
                Text("R", style="bold red"),
                r.table,
                position,
                Text(r.reason, style="red"),
                Text((r.preview or "")[:80], style="dim"),
            )
        if not snap.quarantined and not snap.rejected:
            intake.add_row("", "", Text("nothing quarantined or rejected", style="dim"), "", "")
        intake.border_subtitle = (
            f"{len(snap.quarantined)} quarantined · {len(snap.rejected)} rejected · "
            "`bi-console quarantine list|show|replay`"
            if snap.quarantined or snap.rejected
            else ""
        )
        intake.set_class(bool(snap.quarantined or snap.rejected), "attention")

    def layer_counts(self, table: str = "product") -> dict:
        for c in self.snapshot.counts if self.snapshot else []:
            if c.table == table:
                return {k: getattr(c, k) for k in COUNT_COLUMNS}
        return {}

    # -- actions ---------------------------------------------------------------------------
    def action_reload(self) -> None:
        self.refresh_data()

    def action_validate(self) -> None:
        if not self.live:
            return
        if self._validating:
            self.notify("validation already running", severity="warning")
            return
        self._validating = True
        self.notify("running Great Expectations…")
        self._validate_worker()

    @work(thread=True, exit_on_error=False, group="validate", name="validate")
    def _validate_worker(self) -> None:
        from pipeline.steps.contract_suite import suite_names
        from pipeline.steps.validate import run_validation

        texts, ok = [], True
        try:
            for table in self.app.settings.tables:
                if not suite_names(table, self.app.settings.dbt_project_dir):
                    continue
                try:
                    result = run_validation(self.app.settings, table)
                except Exception as exc:
                    ok = False
                    texts.append(f"{table.name}: {error_text(exc)}")
                    continue
                ok = ok and result.success
                texts.append(f"{table.name}: {'passed' if result.success else 'FAILED'}")
        finally:
            self._validating = False
        self.post_message(ValidationDone("; ".join(texts) or "no suites configured", ok))

    @on(ValidationDone)
    def _validated(self, message: ValidationDone) -> None:
        self.notify(message.text, severity="information" if message.ok else "error", title="validation")
        self.refresh_data()
