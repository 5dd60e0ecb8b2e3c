"""The checks: what `--check` and the TUI's troubleshooting panels report."""
