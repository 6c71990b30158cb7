"""Load generation and benchmarks (see the speed issue); `perf_analyzer` notes in README.md."""

# The gateways the bench starts run one core thread: on these 2-core boxes the gateway shares the
# cores with Triton and the load generator, where a second thread costs more in wake-ups than it
# serves (the bench's threads row measures 2 against 1). On a box of its own, leave --workers out.
BENCH_THREADS = ("--workers", "1")
