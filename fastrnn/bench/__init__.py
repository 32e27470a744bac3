"""Benchmarks: ``python -m fastrnn.bench rnn|attention|decode [--device cpu|cuda] [--json FILE]``."""
