"""Where the real shared data lives: ../shared beside the project (the README's convention), else /work/shared."""
from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared"
if not SHARED.is_dir():
    SHARED = Path("/work/shared")
DATA = SHARED / "data"
DOCS = SHARED / "docs"
