"""The prepared check for a lent GPU machine: gpu_check.sh (check_imports.py, gpu_train_check.py, gpu_compare.py)
and, on the CPU machine, fetch_wheels.sh (gpu_wheels.txt, repack_wheels.py)."""
