"""Map a function over work items with a tqdm bar, in worker processes or in-process.

Workers use the 'spawn' start method (safe with threads and torch; modules are re-imported
in the worker, so ``fn`` must be a module-level function). Small jobs run in-process: a
spawned pool costs about a second to start.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any, Callable, Iterable

from tqdm import tqdm

from diffoseg_auto.configuration import default_num_processes
from diffoseg_auto.utilities.worker_lifeline import watch_parent


def map_with_progress(fn: Callable[[Any], Any], items: Iterable[Any], num_processes: int | None = None,
                      desc: str = "", min_items_for_pool: int = 4, disable_bar: bool | None = None) -> list:
    """``[fn(i) for i in items]`` in order, spread over ``num_processes`` spawned workers."""
    items = list(items)
    n = default_num_processes() if num_processes is None else int(num_processes)
    bar = dict(total=len(items), desc=desc, disable=disable_bar, leave=False)
    if n <= 1 or len(items) < min_items_for_pool:
        return [fn(i) for i in tqdm(items, **bar)]
    with mp.get_context("spawn").Pool(min(n, len(items)), initializer=watch_parent, initargs=(os.getpid(),)) as pool:
        return list(tqdm(pool.imap(fn, items), **bar))
