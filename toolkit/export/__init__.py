"""Exporting: the export matrix (every format and quantization of a source model), the export worker, and re-quantizing a path's fp32 file with another recipe."""
