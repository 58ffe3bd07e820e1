"""Benchmarks of auth-service against real processes: `python -m bench` (see
bench/RESULTS.md). Figures are printed and written down, never asserted in tests."""
