"""Benchmarks of the gateway (docs/PERFORMANCE.md): run each as ``.venv/bin/python -m bench.<name>``.

Every script prints a readable table, writes its figures as JSON to ``bench/results/<name>.json``
(git-ignored) and takes ``--quick`` (a smoke-sized run, used by ``tests/unit/test_bench_smoke.py``).
"""
