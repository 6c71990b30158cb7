"""Load generation and benchmarks (see the speed issue); `perf_analyzer` notes in README.md."""
