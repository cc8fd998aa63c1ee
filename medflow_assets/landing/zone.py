"""The landing zone behind one interface: a local folder (default) or an S3 bucket/prefix.

Both list objects as `<payer>/<file>` with a cheap fingerprint (size + mtime locally, the ETag on S3), stream
bytes for checksums, and give DuckDB a location it can read directly (a path, or s3://... through httpfs).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from medflow_assets.landing.contracts import PayerContract

CHUNK = 8 << 20


class LandingReadError(RuntimeError):
    """A landed object could not be read; the message names it."""


@dataclass(frozen=True)
class LandingObject:
    source_file: str      # "<payer>/<file name>": the partition key and the lineage value
    location: str         # what DuckDB reads: an absolute path or s3://bucket/key
    size_bytes: int
    fingerprint: str      # changes when the object changes (mtime+size locally, ETag on S3)

    @property
    def payer(self) -> str:
        return self.source_file.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.source_file.split("/", 1)[1]


@dataclass
class LandedFile:
    payer: str
    source_file: str
    path: str
    size_bytes: int
    checksum: str = ""
    header: list[str] = field(default_factory=list)
    error: str | None = None  # why the file cannot be loaded (None = accepted)
    has_rows: bool = True     # False for a file with a header and nothing after it

    @property
    def accepted(self) -> bool:
        return self.error is None


class LandingZone(Protocol):
    description: str

    def list_objects(self, contracts: dict[str, PayerContract]) -> list[LandingObject]: ...

    def stream(self, obj: LandingObject) -> Iterator[bytes]: ...


def _wanted(payer: str, name: str, contracts: dict[str, PayerContract]) -> bool:
    if name.startswith(".") or payer.startswith((".", "_")):
        return False
    contract = contracts.get(payer)
    return contract is None or Path(name).match(contract.file_glob)


class LocalLanding:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.description = str(self.root)

    def list_objects(self, contracts: dict[str, PayerContract]) -> list[LandingObject]:
        if not self.root.is_dir():
            raise LandingReadError(f"landing folder {self.root} does not exist (set MEDFLOW_LANDING_PATH)")
        out = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(p for p in folder.iterdir() if p.is_file()):
                if _wanted(folder.name, path.name, contracts):
                    st = path.stat()
                    out.append(LandingObject(f"{folder.name}/{path.name}", str(path.resolve()), st.st_size,
                                             f"{st.st_size}:{st.st_mtime_ns}"))
        return out

    def stream(self, obj: LandingObject) -> Iterator[bytes]:
        try:
            with open(obj.location, "rb") as f:
                while block := f.read(CHUNK):
                    yield block
        except OSError as exc:
            raise LandingReadError(f"cannot read landed file {obj.location}: {exc}") from exc


class S3Landing:
    """Objects under s3://bucket/prefix/<payer>/<file>, listed and read with a boto3 client."""

    def __init__(self, client, bucket: str, prefix: str):
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self.description = f"s3://{bucket}/{self.prefix}"

    def _key(self, source_file: str) -> str:
        return f"{self.prefix}/{source_file}" if self.prefix else source_file

    def list_objects(self, contracts: dict[str, PayerContract]) -> list[LandingObject]:
        start = f"{self.prefix}/" if self.prefix else ""
        out = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    rel = item["Key"][len(start):]
                    if rel.count("/") != 1:
                        continue
                    payer, name = rel.split("/")
                    if _wanted(payer, name, contracts):
                        out.append(LandingObject(rel, f"s3://{self.bucket}/{item['Key']}", int(item["Size"]),
                                                 item["ETag"].strip('"')))
        except Exception as exc:  # botocore raises many types; the message must name the place
            raise LandingReadError(f"cannot list {self.description}: {exc}") from exc
        return sorted(out, key=lambda o: o.source_file)

    def stream(self, obj: LandingObject) -> Iterator[bytes]:
        key = self._key(obj.source_file)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            while block := body.read(CHUNK):
                yield block
        except Exception as exc:
            raise LandingReadError(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc


def digest_and_head(zone: LandingZone, obj: LandingObject) -> tuple[str, bytes]:
    """sha256 of the object's bytes and its first bytes (up to the first newline or 1 MiB), in one pass."""
    h, first = hashlib.sha256(), b""
    for block in zone.stream(obj):
        h.update(block)
        if b"\n" not in first and len(first) < (1 << 20):
            first += block[: 1 << 20]
    return h.hexdigest(), first


def inspect_object(zone: LandingZone, obj: LandingObject, contract: PayerContract | None) -> LandedFile:
    """Checksum (sha256 of the bytes) and header of one object, and its verdict against the contract."""
    lf = LandedFile(payer=obj.payer, source_file=obj.source_file, path=obj.location, size_bytes=obj.size_bytes)
    if contract is None:
        lf.error = (f"{obj.source_file}: no payer contract for folder '{obj.payer}'. Add "
                    f"medflow_assets/landing/contracts/{obj.payer}.yaml or move the file.")
        return lf
    lf.checksum, first = digest_and_head(zone, obj)
    head, _, rest = first.partition(b"\n")
    lf.header = read_header_line(head, contract.delimiter)
    lf.has_rows = obj.size_bytes > len(first) or rest.strip() != b""
    if not lf.header or lf.header == [""]:
        lf.error = f"{obj.source_file}: empty file or no header line (payer {obj.payer})."
        return lf
    missing = contract.missing_columns(lf.header)
    if missing:
        lf.error = (f"{obj.source_file}: columns do not match the {obj.payer} contract; missing columns: "
                    f"{', '.join(missing)} (expected delimiter {contract.delimiter!r}, found header "
                    f"{len(lf.header)} columns).")
    return lf


def read_header_line(line: bytes, delimiter: str) -> list[str]:
    text = line.decode("utf-8-sig", errors="replace").rstrip("\r")
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    return [c.strip() for c in rows[0]] if rows else []


def inspect_file(path: Path, payer: str, contract: PayerContract | None, root: Path) -> LandedFile:
    """One local file (used by tests and tools)."""
    st = path.stat()
    obj = LandingObject(path.relative_to(root).as_posix(), str(path.resolve()), st.st_size, "")
    return inspect_object(LocalLanding(root), obj, contract)
