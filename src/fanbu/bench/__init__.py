"""``fanbu bench ...``: benchmarks that print a table and write JSON; targets are ratios within one run."""
