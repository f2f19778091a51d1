"""Re-planning never silently discards a hand-edited plans file: a differing file is copied aside first."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def backup_replaced_plans(path: str | Path, new_plans: dict) -> Path | None:
    """When ``path`` exists and differs from ``new_plans``, copy it to ``<name>.<time>.bak`` and warn.

    The backup does not end in .json, so it is never taken for a plans identifier."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except ValueError:
        old = None
    if old == json.loads(json.dumps(new_plans)):
        return None
    backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}-{n}.bak")
        n += 1
    shutil.copy2(path, backup)
    logger.warning(f"warning: {path} differs from the new plans (edited by hand?) and is replaced; the old version "
                   f"is kept as {backup}")
    return backup
