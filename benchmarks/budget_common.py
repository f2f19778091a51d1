"""Former name of bench_lib.py, kept because benchmarks/gpu_train_check.py imports set_env from it; new code imports
bench_lib."""
from bench_lib import set_env, train_with_budget  # noqa: F401
