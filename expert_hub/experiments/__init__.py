"""Experiments: runs that combine the library's layers (pipeline, proxy evaluation, transfer cost, VTAB), their
statistics and their reports. Nothing below `experiments` imports it."""
