# Benchmarks (benchmarks/sidebyside): pip install -e '.[bench]' first; needs PostgreSQL at
# 127.0.0.1:5432 (override: make bench BENCH_ARGS="--url postgresql://...").
PYTHON ?= python3
BENCH_ARGS ?=

.PHONY: bench bench-quick

# Full side-by-side run (~20 min): writes benchmarks/RESULTS.md, results.json, results.png.
bench:
	PYTHONPATH=benchmarks $(PYTHON) -m sidebyside $(BENCH_ARGS)

# CI smoke (< 2 min): writes under benchmarks/out/quick/, never the committed results.
bench-quick:
	PYTHONPATH=benchmarks $(PYTHON) -m sidebyside --quick $(BENCH_ARGS)
