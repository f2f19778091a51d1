"""What the benchmark tools share: bench_lib.py (environment, budgeted training, sweeps, tables) and
fill_markers.py (a generated table into a document)."""
