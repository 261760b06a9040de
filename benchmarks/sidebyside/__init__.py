"""Side-by-side benchmark: pytest-pgtemplate against the usual ways of giving tests a database.

Run ``make bench`` (full) or ``make bench-quick`` (CI smoke) from the repository root; see
``python -m sidebyside --help`` with ``PYTHONPATH=benchmarks``.
"""
