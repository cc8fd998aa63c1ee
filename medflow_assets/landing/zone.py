"""The landing zone (local folder): which files are there, their checksums, and their contract verdict."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

from medflow_assets.landing.contracts import PayerContract


@dataclass
class LandedFile:
    payer: str
    source_file: str          # "<payer>/<file name>", stable across machines
    path: str                 # absolute location DuckDB reads
    size_bytes: int
    checksum: str = ""
    header: list[str] = field(default_factory=list)
    error: str | None = None  # why the file cannot be loaded (None = accepted)

    @property
    def accepted(self) -> bool:
        return self.error is None


def file_checksum(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_header(path: Path, delimiter: str) -> list[str]:
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8-sig", errors="replace")
    rows = list(csv.reader(io.StringIO(first), delimiter=delimiter))
    return [c.strip() for c in rows[0]] if rows else []


def inspect_file(path: Path, payer: str, contract: PayerContract | None, root: Path) -> LandedFile:
    source_file = path.relative_to(root).as_posix()
    lf = LandedFile(payer=payer, source_file=source_file, path=str(path.resolve()),
                    size_bytes=path.stat().st_size)
    if contract is None:
        lf.error = (f"{source_file}: no payer contract for folder '{payer}'. Add "
                    f"medflow_assets/landing/contracts/{payer}.yaml or move the file.")
        return lf
    lf.checksum = file_checksum(path)
    lf.header = read_header(path, contract.delimiter)
    if not lf.header or lf.header == [""]:
        lf.error = f"{source_file}: empty file or no header line (payer {payer})."
        return lf
    missing = contract.missing_columns(lf.header)
    if missing:
        lf.error = (f"{source_file}: columns do not match the {payer} contract; missing columns: "
                    f"{', '.join(missing)} (expected delimiter {contract.delimiter!r}, found header "
                    f"{len(lf.header)} columns).")
    return lf


def scan_local(root: Path, contracts: dict[str, PayerContract]) -> list[LandedFile]:
    """Every file under root/<payer>/ (sorted). Files of unknown payers are returned as rejected."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"landing folder {root} does not exist (set MEDFLOW_LANDING_PATH)")
    found: list[LandedFile] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        contract = contracts.get(folder.name)
        pattern = contract.file_glob if contract else "*"
        for path in sorted(folder.glob(pattern)):
            if path.is_file() and not path.name.startswith("."):
                found.append(inspect_file(path, folder.name, contract, root))
    return found
