"""Where the tests find the repository and their data (``tests/data/README.md`` says where each file came
from)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["DATA", "REPO", "VECTORS"]

REPO: Final = Path(__file__).resolve().parent.parent
DATA: Final = REPO / "tests" / "data"
VECTORS: Final = DATA / "vectors"
