# Benchmarks (benchmarks/sidebyside): pip install -e '.[bench]' first; needs PostgreSQL at
# 127.0.0.1:5432 (override: make bench BENCH_ARGS="--url postgresql://...").
PYTHON ?= python3
BENCH_ARGS ?=

.PHONY: bench bench-quick bench-real-suite

# Full side-by-side run (~20 min): writes benchmarks/RESULTS.md, results.json, results.png.
bench:
	PYTHONPATH=benchmarks $(PYTHON) -m sidebyside $(BENCH_ARGS)

# CI smoke (< 2 min): writes under benchmarks/out/quick/, never the committed results.
bench-quick:
	PYTHONPATH=benchmarks $(PYTHON) -m sidebyside --quick $(BENCH_ARGS)

# Issue 10's real-suite shape (~15 min): 1,000 async tests, 100 tables, 150 migrations, -n 2;
# plugin vs per-worker DELETE-all vs function-level (100 of its tests, total extrapolated).
# Writes benchmarks/REAL_SUITE.md.
bench-real-suite:
	PYTHONPATH=benchmarks $(PYTHON) benchmarks/real_suite.py $(BENCH_ARGS)
