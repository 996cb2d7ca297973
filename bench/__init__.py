"""memzip benchmarks: compression against classic compressors and the model's own limit, and a
reproduction of the memory-token paper's tables. Run with `make bench` or `python -m bench --help`."""
