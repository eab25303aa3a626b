"""Small tabular files for the `mlpx train` / `mlpx predict` / TabularModel tests (imported as
`from _tabular_files import ...`)."""

from __future__ import annotations

import csv
from pathlib import Path

SPECIES = ("setosa", "versicolor", "virginica")


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path
