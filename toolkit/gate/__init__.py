"""The release gate: validate's thresholds and verdicts, the answer, bench --tune, repair and explain."""
