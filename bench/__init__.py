"""Benchmarks of the pipeline at production scale, next to the runbook's procedure.

    python -m bench --events 100000      # one size: table on stdout, JSON in bench/results/latest.json
    python -m bench --scaling            # 100k, 300k and 1M: time per event at each (linearity)

See bench/README.md for the latest results and the machine they ran on.
"""
