"""Measuring: bench's plan and rows, the row worker, targets, drift, latency and repeats, the precision a row computed in, the fleet and merging run directories."""
