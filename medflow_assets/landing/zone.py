"""The landing zone behind one interface: a local folder (default) or an S3 bucket/prefix.

Both list objects as `<payer>/<file>` with a cheap fingerprint (size + mtime locally, ETag@LastModified on S3), stream
bytes for checksums, and give DuckDB a location it can read directly (a path, or s3://... through httpfs).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from medflow_assets.landing.contracts import PayerContract

CHUNK = 8 << 20
GZIP_MAGIC = b"\x1f\x8b"


class LandingReadError(RuntimeError):
    """A landed object could not be read; the message names it."""


# S3 error codes that mean the credentials were refused: retrying cannot help
CREDENTIAL_ERRORS = ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken", "ExpiredToken")
CREDENTIALS_HINT = ("the landing zone refused the credentials: check MEDFLOW_S3_ACCESS_KEY_ID / "
                    "MEDFLOW_S3_SECRET_ACCESS_KEY")


def _local(epoch_seconds: float) -> datetime:
    """A naive local timestamp, as the registry stores its times (DuckDB's now()::TIMESTAMP)."""
    return datetime.fromtimestamp(epoch_seconds)


@dataclass(frozen=True)
class LandingObject:
    source_file: str      # "<payer>/<file name>": the partition key and the lineage value
    location: str         # what DuckDB reads: an absolute path or s3://bucket/key
    size_bytes: int
    fingerprint: str      # changes when the object is written (size:mtime locally, ETag@LastModified on S3)
    modified_ns: int | None = None  # last write, locally (S3 shows an object only once its upload completed)
    modified_at: datetime | None = None  # last write (local time), locally and on S3 (LastModified)
    etag: str | None = None  # on S3, the object's ETag (what the S3 sensor compares); None locally

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
    header: list[str | None] = field(default_factory=list)  # the contract's column names, None elsewhere
    error: str | None = None  # why the file cannot be loaded (None = accepted)
    has_rows: bool = True     # False for a file with a header and nothing after it
    modified_at: datetime | None = None  # the object's last write (local time), when the zone tells it
    etag: str | None = None  # the S3 object's ETag at the scan (the registry keeps it beside the sha256)

    @property
    def accepted(self) -> bool:
        return self.error is None


def held_file(obj: LandingObject, contract_error: str) -> LandedFile:
    """A file of a payer whose contract is invalid (load_contracts' `invalid`): not read at all (no checksum,
    no header) until the contract is valid; its `error` says why."""
    return LandedFile(payer=obj.payer, source_file=obj.source_file, path=obj.location, size_bytes=obj.size_bytes,
                      modified_at=obj.modified_at, etag=obj.etag,
                      error=f"{obj.source_file}: held, not read, while its payer's contract is invalid ({contract_error})")


@dataclass
class Scan:
    objects: list[LandingObject]                         # the claim files: <payer>/<file> matching a contract
    unread: list[str] = field(default_factory=list)      # "<where>: why MedFlow does not read it"


class LandingZone(Protocol):
    description: str

    def scan(self, contracts: dict[str, PayerContract]) -> Scan: ...

    def stream(self, obj: LandingObject) -> Iterator[bytes]: ...


def _hidden(part: str) -> bool:
    """Names MedFlow never reads nor reports: dotfiles, and folders starting with . or _ (e.g. _archive)."""
    return part.startswith((".", "_"))


# What a Dagster partition key may not contain (dagster's INVALID_PARTITION_SUBSTRINGS; a test compares them).
PARTITION_KEY_FORBIDDEN = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")


def _shown(rel: str) -> str:
    """A path as text a message can hold: bytes of a name that are not UTF-8 as \\xNN."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _hidden_path(rel: str) -> bool:
    parts = rel.split("/")
    return any(_hidden(p) for p in parts[:-1]) or parts[-1].startswith(".")


def _classify(rel: str, contracts: dict[str, PayerContract], unread: list[str]) -> bool:
    """True when `rel` (a path under the landing root, / separated) is a claim file to read; otherwise it
    is either hidden or noted in `unread` with the reason, so no file is skipped without a word."""
    parts = rel.split("/")
    if _hidden_path(rel):
        return False
    if len(parts) == 1:
        unread.append(f"{rel}: not in a payer folder (files are read from <landing>/<payer>/<file>)")
        return False
    if len(parts) > 2:
        unread.append(f"{rel}: in a subfolder of {parts[0]}/ (only files directly in a payer folder are read)")
        return False
    payer, name = parts
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 (a Latin-1 name from an SFTP client, say)
        unread.append(f"{_shown(rel)}: the name is not valid UTF-8 (rename the file)")
        return False
    if bad := [s for s in PARTITION_KEY_FORBIDDEN if s in rel]:
        unread.append(f"{rel!r}: the name contains {bad[0]!r}, which a Dagster partition key cannot hold "
                      "(rename the file)")
        return False
    contract = contracts.get(payer)
    if contract is not None and not Path(name).match(contract.file_glob):
        unread.append(f"{rel}: name does not match the {payer} contract's file_glob {contract.file_glob!r} "
                      "(rename the file, or change file_glob in the contract)")
        return False
    return True  # a folder without a contract is read, and rejected at landing with that reason


class LocalLanding:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.description = str(self.root)

    def scan(self, contracts: dict[str, PayerContract]) -> Scan:
        if not self.root.is_dir():
            raise LandingReadError(f"landing folder {self.root} does not exist (set MEDFLOW_LANDING_PATH)")
        out, unread = [], []
        for path in self._files():
            rel = path.relative_to(self.root).as_posix()
            if not path.is_file() and not _hidden_path(rel):
                unread.append(f"{_shown(rel)}: not a regular file (a broken symbolic link, a pipe or a device)")
            elif path.is_file() and _classify(rel, contracts, unread):
                st = path.stat()
                out.append(LandingObject(rel, str(path.resolve()), st.st_size, f"{st.st_size}:{st.st_mtime_ns}",
                                         st.st_mtime_ns, _local(st.st_mtime_ns / 1e9)))
        return Scan(sorted(out, key=lambda o: o.source_file), sorted(unread))

    def _files(self) -> Iterator[Path]:
        """Files in the root and in payer folders (a symlinked payer folder is followed), and below those
        (not following links there, so a link loop cannot trap the scan); hidden folders are skipped. In the
        root and payer folders, entries that are neither a file nor a folder too (scan names them)."""
        for entry in sorted(self.root.iterdir()):
            if not entry.is_dir():  # a file, or what is neither (a broken link, a pipe): scan names it
                yield entry
            elif not _hidden(entry.name):
                for sub in sorted(entry.iterdir()):
                    if not sub.is_dir():
                        yield sub
                    elif not _hidden(sub.name):
                        for dirpath, dirnames, filenames in os.walk(sub):
                            dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
                            yield from (Path(dirpath) / n for n in sorted(filenames))

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

    def scan(self, contracts: dict[str, PayerContract]) -> Scan:
        start = f"{self.prefix}/" if self.prefix else ""
        out, unread = [], []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    rel = item["Key"][len(start):]
                    if rel and not rel.endswith("/") and _classify(rel, contracts, unread):
                        # a re-upload of the same bytes keeps the ETag but moves LastModified: the sensor
                        # sees it touched (and retries it when its last run failed), not changed
                        etag = item["ETag"].strip('"')
                        out.append(LandingObject(rel, f"s3://{self.bucket}/{item['Key']}", int(item["Size"]),
                                                 f"{etag}@{item['LastModified'].isoformat()}",
                                                 modified_at=_local(item["LastModified"].timestamp()), etag=etag))
        except Exception as exc:  # botocore raises many types; the message must name the place
            raise LandingReadError(f"cannot list {self.description}: {exc}") from exc
        return Scan(sorted(out, key=lambda o: o.source_file), sorted(unread))

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
    lf = LandedFile(payer=obj.payer, source_file=obj.source_file, path=obj.location, size_bytes=obj.size_bytes,
                    modified_at=obj.modified_at, etag=obj.etag)
    if contract is None:
        lf.error = (f"{obj.source_file}: no payer contract for folder '{obj.payer}'. Add "
                    f"medflow_assets/landing/contracts/{obj.payer}.yaml or move the file; with the contract in "
                    "place, the landing sensor runs the folder's files again.")
        return lf
    if obj.location.startswith("s3://") and "?" in obj.name:
        lf.error = (f"{obj.source_file}: an S3 object name with '?' cannot be read (DuckDB's S3 reader takes it "
                    "as the start of URL parameters). Rename the object.")
        return lf
    lf.checksum, first = digest_and_head(zone, obj)
    if first.startswith(GZIP_MAGIC):
        lf.error = (f"{obj.source_file}: is gzip-compressed; landed files must be plain text, "
                    f"{contract.delimiter!r}-delimited. Decompress it and land it again.")
        return lf
    head, _, rest = first.partition(b"\n")
    try:
        lf.header = read_header_line(head, contract.delimiter)
    except csv.Error as exc:  # Python's message names the problem, never the line's text
        lf.error = (f"{obj.source_file}: its header line cannot be read as {contract.delimiter!r}-delimited CSV "
                    f"({exc}); land it as UTF-8 text with one record per line, lines ending in \\n or \\r\\n.")
        return lf
    lf.has_rows = obj.size_bytes > len(first) or rest.strip() != b""
    if not lf.header or lf.header == [""]:
        lf.error = f"{obj.source_file}: empty file or no header line (payer {obj.payer})."
        return lf
    missing = contract.missing_columns(lf.header)
    if missing:
        # the first line may be data (a file without a header): its values are never repeated
        lf.error = (f"{obj.source_file}: columns do not match the {obj.payer} contract; missing columns: "
                    f"{', '.join(missing)} (expected delimiter {contract.delimiter!r}, found header "
                    f"{len(lf.header)} columns).")
    elif problem := header_value_problem(lf.header, set(contract.required_columns)):
        lf.error = f"{obj.source_file}: {problem}. Fix the header and land it again."
    elif problem := header_name_problem(lf.header, set(contract.required_columns)):
        lf.error = f"{obj.source_file}: {problem}; every column needs its own name. Fix the header and land it again."
    lf.header = kept_header(lf.header, contract)
    return lf


def kept_header(header: list[str | None], contract: PayerContract) -> list[str | None]:
    """The header as the registry keeps it: the contract's column names where they are, None for every other
    cell (an extra column's name, or a data value on a broken header line). dbt needs only the number of
    columns and where the contract's are (macros/contracts.sql bronze_select)."""
    names = set(contract.required_columns)
    return [h if h in names else None for h in header]


# a cell that is a number (an amount, a line number, a date written as digits) or a date, never a column name
_VALUE_CELL = re.compile(r"[-+$]?[0-9][0-9,.]*|[0-9]{1,4}[-/.][0-9]{1,2}[-/.][0-9]{1,4}")


def header_value_problem(header: list[str], known: set[str]) -> str | None:
    """Why the header holds a data value (None: it does not): a record joined to the header line (no line
    break after it) would otherwise be read as extra columns, and its row lost without a word. The value is
    never repeated: it may be patient data."""
    for i, name in enumerate(header, start=1):
        if name not in known and _VALUE_CELL.fullmatch(name):
            return (f"header column {i} of {len(header)} is a number or a date, not a column name (a data row on "
                    "the header line, with no line break after the header?)")
    return None


def header_name_problem(header: list[str], known: set[str]) -> str | None:
    """Why the header does not name each column once (None: it does). Names are compared ignoring case; a
    delimiter at the end of every line gives an unnamed column. A name is repeated in the message only when
    it is one of the contract's (`known`): any other cell of a broken header line may be patient data."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if not name:
            return f"header column {i} of {len(header)} has no name (a delimiter at the end of the header line?)"
        if name.lower() in seen:
            shown = (f"column {name!r}" if name.lower() in {k.lower() for k in known}
                     else "a column that is not in the contract")
            return (f"header names {shown} twice (columns {seen[name.lower()]} and {i}; "
                    "names are compared ignoring case)")
        seen[name.lower()] = i
    return None


def read_header_line(line: bytes, delimiter: str) -> list[str]:
    text = line.decode("utf-8-sig", errors="replace").rstrip("\r")
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    return [c.strip() for c in rows[0]] if rows else []


def inspect_file(path: Path, payer: str, contract: PayerContract | None, root: Path) -> LandedFile:
    """One local file (used by tests and tools)."""
    st = path.stat()
    obj = LandingObject(path.relative_to(root).as_posix(), str(path.resolve()), st.st_size, "")
    return inspect_object(LocalLanding(root), obj, contract)
