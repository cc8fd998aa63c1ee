"""Payer contracts: one declarative YAML file per payer describes its file layout.

Python loads and validates them here and writes them as JSON to `landing.payer_contracts` (next to the
landing file registry); dbt reads that table at run time and expands the contracts into the bronze and
silver SQL (dbt_project/macros/contracts.sql). Onboarding a payer = one YAML + its files.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath

import yaml

# Canonical raw fields carried (as text) by bronze. Order is the bronze column order.
CANONICAL_FIELDS: tuple[str, ...] = (
    "claim_id", "claim_line_number", "member_id",
    "member_first_name", "member_last_name", "member_full_name",
    "member_email", "member_phone", "member_ssn", "member_birth_date", "member_gender", "member_zip",
    "provider_npi", "department", "diagnosis_code", "procedure_code", "place_of_service",
    "service_date", "paid_date", "billed_amount", "allowed_amount", "paid_amount",
    "claim_status", "denial_reason_code",
)
# Fields a contract must map to a file column (a default is not enough: silver cannot work without them).
REQUIRED_FIELDS: tuple[str, ...] = (
    "claim_id", "claim_line_number", "member_id", "provider_npi", "diagnosis_code", "procedure_code",
    "service_date", "billed_amount", "allowed_amount", "paid_amount", "claim_status",
)
CLAIM_STATUSES = ("paid", "denied", "pending", "adjusted", "reversed")
AMOUNT_ENCODINGS = ("dollars", "currency", "cents")
NAME_FORMATS = ("first_last", "last_comma_first")
_PAYER_RE = re.compile(r"^[a-z][a-z0-9_]{1,39}$")

# strptime directives a date_format may use, and the text each matches. %Y takes four digits (strptime alone
# reads "24" as the year 24); a month, day or time field next to another number without a separator takes
# its full width ("2024115" is not a %Y%m%d date).
_DATE_NUMBERS = {"Y": (4, 4), "y": (2, 2), "m": (1, 2), "d": (1, 2), "H": (1, 2), "M": (1, 2), "S": (1, 2),
                 "j": (1, 3)}
_DATE_WORDS = {"b": "[A-Za-z]{3}", "B": "[A-Za-z]+", "a": "[A-Za-z]{3}", "A": "[A-Za-z]+", "p": "[AaPp][Mm]"}
_REGEX_SPECIAL = set(".^$*+?()[]{}|\\-")


def date_pattern(date_format: str) -> str:
    """The regular expression (RE2 and Python alike) a date must match exactly to be read with this strptime
    format; silver reads any other text as no date (invalid_service_date, invalid_paid_date, ...)."""
    if re.search(r"(?<!%)(%%)*%$", date_format):
        raise ValueError("ends with a lone '%' (write %% for a percent sign)")
    tokens = re.findall(r"%.|[^%]", date_format)
    numeric = [t[0] == "%" and t[1:] in _DATE_NUMBERS for t in tokens]
    out = []
    for i, t in enumerate(tokens):
        if numeric[i]:
            lo, hi = _DATE_NUMBERS[t[1]]
            if (i > 0 and numeric[i - 1]) or (i + 1 < len(tokens) and numeric[i + 1]):
                lo = hi
            out.append(f"[0-9]{{{lo}}}" if lo == hi else f"[0-9]{{{lo},{hi}}}")
        elif t == "%%":
            out.append("%")
        elif t[0] == "%" and t[1:] in _DATE_WORDS:
            out.append(_DATE_WORDS[t[1]])
        elif t[0] == "%":
            raise ValueError(f"directive {t!r} is not supported (use "
                             f"{' '.join('%' + d for d in [*_DATE_NUMBERS, *_DATE_WORDS])})")
        else:
            out.append("\\" + t if t in _REGEX_SPECIAL else t)
    return "".join(out)


class _TextLoader(yaml.SafeLoader):
    """YAML with every plain scalar read as text, but null: a status code 01 stays '01' (YAML 1.1 reads it as
    the number 1, and NO as false), a default place of service 02 stays '02', a column named No stays 'No'.
    The one number a contract holds, max_quarantine_rate, is read from its text."""


_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in {f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float", "timestamp")}]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


class ContractError(ValueError):
    """A contract file is invalid; the message names the file and the offending key."""


@dataclass(frozen=True)
class PayerContract:
    payer: str
    description: str
    file_glob: str
    delimiter: str
    date_format: str
    amount_encoding: str
    name_format: str
    status_map: dict[str, str]
    columns: dict[str, str]
    defaults: dict[str, str | None] = field(default_factory=dict)
    max_quarantine_rate: float = 0.10
    source_path: str = ""

    @property
    def required_columns(self) -> list[str]:
        """File columns every file of this payer must have (in contract order)."""
        return list(self.columns.values())

    def missing_columns(self, header: list[str]) -> list[str]:
        present = {h.strip() for h in header}
        return [c for c in self.required_columns if c not in present]

    def as_dbt_json(self) -> dict:
        """What dbt's contract-expansion macros read (landing.payer_contracts.contract_json)."""
        d = asdict(self)
        d.pop("source_path")
        d.pop("description")
        return refresh_derived(d)


def refresh_derived(dbt_json: dict) -> dict:
    """A contract as dbt reads it, with what MedFlow derives from it (the canonical fields, the date pattern)
    computed by this version of MedFlow: also for a payer's last valid contract kept while its contract file
    is invalid (landing's write_registry)."""
    return {**dbt_json, "canonical_fields": list(CANONICAL_FIELDS), "date_pattern": date_pattern(dbt_json["date_format"])}


def _fail(path: Path, msg: str) -> ContractError:
    return ContractError(f"payer contract {path}: {msg}")


def load_contract(path: Path) -> PayerContract:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot be read as UTF-8 text ({type(exc).__name__}: {exc})") from exc
    try:
        raw = yaml.load(text, Loader=_TextLoader)  # a SafeLoader that types fewer scalars
    except yaml.YAMLError as exc:
        raise _fail(path, f"is not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise _fail(path, "must be a mapping")
    known = {f for f in PayerContract.__dataclass_fields__ if f != "source_path"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _fail(path, f"unknown keys {unknown}; allowed: {sorted(known)}")
    for key in ("payer", "file_glob", "delimiter", "date_format", "amount_encoding", "status_map", "columns"):
        if key not in raw:
            raise _fail(path, f"missing required key '{key}'")
    for key in ("status_map", "columns", "defaults"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise _fail(path, f"{key} must be a mapping (key: value lines), not {type(raw[key]).__name__}")
    if not raw["status_map"]:
        raise _fail(path, "status_map is empty: map each of the payer's status codes to a canonical status")
    payer = str(raw["payer"])
    if not _PAYER_RE.match(payer):
        raise _fail(path, f"payer {payer!r} must be lower snake_case (it names a landing folder)")
    if path.stem != payer:
        raise _fail(path, f"file name must be {payer}.yaml to match payer {payer!r}")
    if len(str(raw["delimiter"])) != 1:
        raise _fail(path, "delimiter must be one character")
    if str(raw["delimiter"]) in '"\r\n':
        raise _fail(path, f"delimiter {raw['delimiter']!r} cannot be used: it is the quote character or ends a line")
    file_glob = str(raw["file_glob"] or "")
    try:
        PurePath("x").match(file_glob)
        if not file_glob.strip():
            raise ValueError("empty pattern")
    except ValueError as exc:
        raise _fail(path, f"file_glob {file_glob!r} is not a file name pattern ({exc}); e.g. \"*.csv\"") from exc
    try:
        date_pattern(str(raw["date_format"]))
        directives = set(re.findall(r"%(.)", str(raw["date_format"]).replace("%%", "")))
        if not (directives & {"Y", "y"} and (directives >= {"d"} and directives & {"m", "b", "B"} or "j" in directives)):
            # strptime fills what is missing from 1900-01-01: every date would be read, wrongly
            raise ValueError("needs a year (%Y or %y), a month (%m, %b or %B) and a day (%d), or a day of the year (%j)")
    except ValueError as exc:
        raise _fail(path, f"date_format {raw['date_format']!r}: {exc}") from exc
    if raw["amount_encoding"] not in AMOUNT_ENCODINGS:
        raise _fail(path, f"amount_encoding must be one of {AMOUNT_ENCODINGS}")
    name_format = raw.get("name_format", "first_last")
    if name_format not in NAME_FORMATS:
        raise _fail(path, f"name_format must be one of {NAME_FORMATS}")
    columns = {str(k): str(v) for k, v in (raw["columns"] or {}).items()}
    defaults = {str(k): (None if v is None else str(v)) for k, v in (raw.get("defaults") or {}).items()}
    bad = sorted((set(columns) | set(defaults)) - set(CANONICAL_FIELDS))
    if bad:
        raise _fail(path, f"unknown canonical fields {bad}; known: {list(CANONICAL_FIELDS)}")
    names: dict[str, str] = {}
    for name in columns.values():  # files' headers are compared ignoring case (zone.header_name_problem)
        if names.get(name.lower(), name) != name:
            raise _fail(path, f"columns name file columns {names[name.lower()]!r} and {name!r}, which a file's header "
                              "cannot tell apart (header names are compared ignoring case, as DuckDB does)")
        names[name.lower()] = name
    both = sorted(set(columns) & set(defaults))
    if both:
        raise _fail(path, f"fields {both} are both mapped to a column and given a default")
    missing = [f for f in REQUIRED_FIELDS if f not in columns]
    if missing:
        raise _fail(path, f"required fields not mapped to a file column: {missing}")
    if name_format == "last_comma_first" and "member_full_name" not in columns:
        raise _fail(path, "name_format last_comma_first needs member_full_name mapped to a column")
    status_map = {str(k).strip().upper(): str(v) for k, v in raw["status_map"].items()}
    wrong = sorted({v for v in status_map.values() if v not in CLAIM_STATUSES})
    if wrong:
        raise _fail(path, f"status_map values {wrong} are not canonical statuses {CLAIM_STATUSES}")
    rate_text = raw.get("max_quarantine_rate", "0.10")
    try:
        rate = float(rate_text) if isinstance(rate_text, str) else None
    except ValueError:
        rate = None
    if rate is None or not 0 <= rate <= 1:
        raise _fail(path, f"max_quarantine_rate must be a number between 0 and 1 (0.10 = 10%), not {rate_text!r}")
    return PayerContract(
        payer=payer,
        description=str(raw.get("description", "")),
        file_glob=file_glob,
        delimiter=str(raw["delimiter"]),
        date_format=str(raw["date_format"]),
        amount_encoding=str(raw["amount_encoding"]),
        name_format=name_format,
        status_map=status_map,
        columns=columns,
        defaults=defaults,
        max_quarantine_rate=float(rate),
        source_path=str(path),
    )


def load_contracts(contracts_dir: Path, invalid: dict[str, str] | None = None) -> dict[str, PayerContract]:
    """All valid contracts in a folder, keyed by payer (sorted, so dbt vars are stable between runs).

    An invalid contract raises ContractError. With `invalid` given, it is recorded there instead, as
    {file stem (the payer whose landing folder it is for): the error naming the file and the problem}, and
    left out: the landing sensor and the landing step use this, so one payer's broken contract (a typo while
    onboarding) holds that payer's files back and no other payer's. No *.yaml at all raises either way."""
    # an editor's lock or backup (.#acme.yaml) is not a contract
    paths = sorted(p for p in Path(contracts_dir).glob("*.yaml") if not p.name.startswith("."))
    if not paths:
        raise ContractError(f"no payer contracts (*.yaml) in {contracts_dir}")
    contracts = {}
    for path in paths:
        try:
            c = load_contract(path)
        except Exception as exc:  # a case load_contract does not foresee is still this payer's problem alone
            if invalid is None:
                raise
            invalid[path.stem] = str(exc if isinstance(exc, ContractError)
                                     else _fail(path, f"cannot be loaded ({type(exc).__name__}: {exc})"))
            continue
        contracts[c.payer] = c
    return contracts
