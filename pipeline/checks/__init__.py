"""The check engine. One result type (`model.Check`: status, evidence, fix, category,
service) for `--check`, the Troubleshoot panels, the Quality and Connector views and the
BI staleness diagnosis.

- `probes`: every read of the stack (services, connector, checkpoints, topics, layer
  counts, raw zone, source, marts), returning data;
- `rules`: each judgement once, from probe data to a Verdict;
- `monitoring`: `--check`'s checks, in order; `diagnose`: the runbook's four problems;
  `stale_bi`: "BI shows stale data"; `views`: the Connector and Quality views' data;
- `fixes`: what the Troubleshoot panels' keys run; `alerts`: the webhook message.

To add a check: a probe if it reads something new, a rule, and a line in
`monitoring.table_checks` (it then shows in `--check` and the Quality view).
"""
