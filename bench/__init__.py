"""`make bench`: the KPI benchmark (see bench/run.py)."""
