"""Hand-written pandas alternative to MedFlow (the benchmark peer): the bronze -> silver -> gold logic of
the dbt models (payer contracts, parsing, rule ids, duplicate lines, four gold tables) in plain pandas.
Amounts are integer cents (exact); averages and rates follow DuckDB (double, rounded half away from zero).

    python benchmarks/pandas_peer.py --landing DIR [--contracts DIR] --out DIR

Writes the gold tables as CSV into --out and prints one JSON line of counts and timing to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import time
import unicodedata
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from medflow_assets.landing.contracts import CANONICAL_FIELDS, PayerContract, date_pattern, load_contracts
from medflow_assets.settings import DBT_PROJECT_DIR, load_settings

RULES = ("missing_claim_id", "invalid_claim_line_number", "missing_member_id", "invalid_service_date",
         "invalid_paid_date", "invalid_birth_date", "invalid_amount", "unknown_status", "invalid_npi",
         "invalid_diagnosis_code", "invalid_procedure_code", "invalid_place_of_service",
         "amounts_out_of_order", "paid_amount_on_unpaid_status", "paid_before_service", "negative_amount",
         "future_service_date", "future_paid_date", "invalid_department", "invalid_denial_reason_code",
         "duplicate_line", "claim_member_mismatch", "reversal_mismatch",
         "reversal_of_rejected_line", "claim_member_conflict")  # dbt's failed_rules order
KEY = ["payer", "claim_id", "claim_line_number"]
AMOUNTS = ["billed_amount", "allowed_amount", "paid_amount"]
ICD10_RE = r"(?:[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4})"
PROCEDURE_RE = r"(?:[0-9]{4}[0-9FTU]|[A-V][0-9]{4})"
NUMBER_RE = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
INT32_MAX, CENTS_LIMIT = 2**31 - 1, 10**12  # integer range; DECIMAL(12, 2) holds |cents| < 10^12
# Safe Harbor: three-digit ZIP areas reported as 000 (the dbt seed silver reads)
DEPARTMENTS = set(pd.read_csv(DBT_PROJECT_DIR / "seeds" / "departments.csv", dtype=str)["department"])
RESTRICTED_ZIP3 = set(pd.read_csv(DBT_PROJECT_DIR / "seeds" / "safe_harbor_restricted_zip3.csv", dtype=str)["zip3"])


def trim(s: pd.Series) -> pd.Series:
    """DuckDB trim(): spaces only."""
    return s.str.strip(" ")


def trim_space(s: pd.Series) -> pd.Series:
    """trim_space() in macros/codes.sql: the whitespace class, not only spaces (ids, pseudonym inputs)."""
    return s.str.strip(" \t\n\v\f\r\u00a0")


def nullif_empty(s: pd.Series) -> pd.Series:
    return s.where(s != "")


def digits(s: pd.Series) -> pd.Series:
    return nullif_empty(s.fillna("").str.replace(r"[^0-9]", "", regex=True))


# What names, emails, phones and SSNs are reduced to before hashing (macros/codes.sql: name_text() ...).
WHITESPACE = r"[ \t\n\v\f\r\u00a0]"  # written out, as in the SQL (Python's \s has more)


def name_text(s: pd.Series) -> pd.Series:
    one_space = s.str.replace(WHITESPACE + "+", " ", regex=True).str.strip(" ")
    return one_space.map(strip_accents, na_action="ignore").str.lower()


def strip_accents(text: str) -> str:
    """DuckDB's strip_accents: every combining mark (Mn, Mc, Me) of the decomposed text dropped."""
    kept = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) not in MARKS)
    return unicodedata.normalize("NFC", kept)


MARKS = {"Mn", "Mc", "Me"}


def email_text(s: pd.Series) -> pd.Series:
    return s.str.replace(WHITESPACE + "+", "", regex=True).str.lower()


def phone_text(s: pd.Series) -> pd.Series:
    ws = WHITESPACE + "*"
    no_extension = s.str.replace(rf"(?i){ws}(x|ext|extension|#)[.:]?{ws}[0-9]+{ws}$", "", regex=True)
    return digits(no_extension).str[-10:]


def ssn_text(s: pd.Series) -> pd.Series:
    return digits(s)


def parse_number(s: pd.Series, scale: int) -> pd.Series:
    """try_cast(text as integer / decimal(p, scale)) as an integer count of 10^-scale units (Int64, NA when
    it does not parse). More fraction digits than the scale round half away from zero, as DuckDB casts do."""
    ok = s.str.fullmatch(NUMBER_RE) & (s.str.len() <= 18 - scale)  # units stay below 10^18: int64
    dot = s.str.find(".").fillna(-1).to_numpy(dtype=int)
    frac_len = np.where(dot >= 0, s.str.len().fillna(0).to_numpy(dtype=int) - dot - 1, 0)
    exact = ok.to_numpy() & (frac_len <= scale)
    mantissa = pd.to_numeric(s.where(exact, "0").str.replace(".", "", regex=False)).to_numpy(dtype="int64")
    units = pd.Series(mantissa * 10 ** np.where(exact, scale - frac_len, 0), index=s.index, dtype="Int64")
    units = units.where(exact)
    for i, text in s[ok & ~exact].items():  # rare: too many fraction digits
        units[i] = int(Decimal(text).scaleb(scale).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return units


def round_half_away(x: pd.Series, digits_: int) -> pd.Series:
    """DuckDB round(double, n) and double -> DECIMAL casts: std::round(x * 10^n) / 10^n."""
    scaled = x * 10**digits_
    return np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) / 10**digits_


def money(cents: pd.Series) -> list[str | None]:
    return [None if pd.isna(c) else f"{'-' if c < 0 else ''}{abs(int(c)) // 100}.{abs(int(c)) % 100:02d}"
            for c in cents]


class Pseudonymizer:
    """Keyed HMAC-SHA256 hex of "<domain>:<trimmed value>", computed once per distinct value."""

    def __init__(self, key: str) -> None:
        self.key = key.encode()
        self.cache: dict[str, dict[str, str]] = {}

    def __call__(self, values: pd.Series, domain: str, normalize=None) -> pd.Series:
        """`normalize` (a Series -> Series function) runs once per distinct raw value, before trimming."""
        codes, raw = pd.factorize(values)
        texts = pd.Series(raw, dtype="str")
        uniques = nullif_empty(trim_space(normalize(texts) if normalize else texts))
        cache = self.cache.setdefault(domain, {})
        hashed = np.empty(len(uniques) + 1, dtype=object)  # last slot (None) is for code -1 (missing)
        for i, u in enumerate(uniques.to_numpy(dtype=object)):
            if pd.isna(u):
                hashed[i] = None
                continue
            if u not in cache:
                cache[u] = hmac.new(self.key, f"{domain}:{u}".encode(), hashlib.sha256).hexdigest()
            hashed[i] = cache[u]
        return pd.Series(hashed[codes], index=values.index, dtype="str")


def read_bronze(path: Path, contract: PayerContract, source_file: str) -> pd.DataFrame | None:
    """One landed file as text under canonical field names plus lineage (None when the landing
    registry would reject it: empty, or missing a contract column)."""
    try:
        # pyarrow's multithreaded reader: the same frame as pandas' default C reader (compared on every
        # payer's layout), 0.76 s instead of 2.68 s per 1M-line file
        raw = pd.read_csv(path, sep=contract.delimiter, dtype=str, keep_default_na=False, na_values=[""],
                          encoding="utf-8-sig", engine="pyarrow")
    except pd.errors.EmptyDataError:
        print(f"skipping {source_file}: empty file", file=sys.stderr)
        return None
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = contract.missing_columns(list(raw.columns))
    if missing:
        print(f"skipping {source_file}: missing columns {missing}", file=sys.stderr)
        return None
    fields = {f: raw[contract.columns[f]] if f in contract.columns  # else the contract default (or NULL)
              else pd.Series(contract.defaults.get(f), index=raw.index, dtype="str")
              for f in CANONICAL_FIELDS}
    return pd.DataFrame(fields).assign(payer=contract.payer, source_file=source_file,
                                       source_row_number=np.arange(1, len(raw) + 1, dtype="int64"))


# The texts an amount may be in, per encoding (parse_amount in dbt_project/macros/contracts.sql); any other
# text is invalid_amount, not a rounded or re-read value.
AMOUNT_RE = {"cents": r"-?[0-9]+", "currency": r"-?\$?-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]{1,2})?",
             "dollars": r"-?(?:[0-9]+(?:\.[0-9]{1,2})?|\.[0-9]{1,2})"}


def parse_amount(s: pd.Series, encoding: str) -> pd.Series:
    """Integer cents; "cents" files already carry them, "currency" drops "$" and "," first."""
    text = trim(s)
    text = text.where(text.str.fullmatch(AMOUNT_RE[encoding]).fillna(False).astype(bool))
    if encoding == "currency":
        text = text.str.replace("$", "", regex=False).str.replace(",", "", regex=False)
    cents = parse_number(text, 0 if encoding == "cents" else 2)
    return cents.where(cents.abs() < CENTS_LIMIT)


def npi_is_valid(npi: pd.Series) -> np.ndarray:
    """10 digits starting 1 or 2 whose Luhn check over the "80840" prefix holds (prefix adds 24)."""
    shape_ok = npi.fillna("").str.fullmatch(r"[12][0-9]{9}").to_numpy(dtype=bool)
    valid = np.zeros(len(npi), dtype=bool)
    if shape_ok.any():
        text = "".join(npi[shape_ok].to_numpy(dtype=object)).encode()
        d = np.frombuffer(text, dtype=np.uint8).reshape(-1, 10).astype(int) - ord("0")
        odd = 2 * d[:, 0::2]
        valid[shape_ok] = (24 + (odd // 10 + odd % 10).sum(axis=1) + d[:, 1::2].sum(axis=1)) % 10 == 0
    return valid


def parse_silver(b: pd.DataFrame, c: PayerContract, pseudo: Pseudonymizer) -> pd.DataFrame:
    """silver_claim_lines_validated for one file: typed fields, pseudonyms and one bool per rule."""
    def date(col: str) -> pd.Series:  # exactly in the contract's format (parse_date in macros/contracts.sql)
        text = trim(b[col])
        text = text.where(text.str.fullmatch(date_re).fillna(False).astype(bool))
        return pd.to_datetime(text, format=c.date_format, errors="coerce").dt.normalize()  # a date, as SQL casts

    def present(col: str) -> pd.Series:
        return b[col].notna() & (trim(b[col]) != "")

    date_re = date_pattern(c.date_format)
    s = b[["payer", "source_file", "source_row_number"]].copy()
    s["claim_id"] = nullif_empty(trim_space(b["claim_id"]))
    line_text = trim_space(b["claim_line_number"])
    line = parse_number(line_text.where(line_text.str.fullmatch("[0-9]+").fillna(False).astype(bool)), 0)
    s["claim_line_number"] = line.where(line.abs() <= INT32_MAX)
    s["member_key"] = pseudo(b["member_id"].str.upper(), "member")
    if c.name_format == "last_comma_first":
        parts = b["member_full_name"].str.split(",", expand=True).reindex(columns=[0, 1])
        name = parts[1].fillna("").where(parts[0].notna()) + " " + parts[0]
    elif "member_full_name" in c.columns and not {"member_first_name", "member_last_name"} & set(c.columns):
        name = b["member_full_name"]
    else:
        name = b["member_first_name"].fillna("") + " " + b["member_last_name"].fillna("")
    s["name_key"] = pseudo(name, "name", name_text)
    s["email_key"] = pseudo(b["member_email"], "email", email_text)
    s["phone_key"] = pseudo(b["member_phone"], "phone", phone_text)
    s["ssn_key"] = pseudo(b["member_ssn"], "ssn", ssn_text)
    birth = date("member_birth_date")
    s["birth_year"] = birth.dt.year.astype("Int64")
    s["gender"] = trim(b["member_gender"]).str[:1].str.upper().map({"F": "F", "M": "M"}).fillna("U")
    zip_digits = digits(b["member_zip"])
    zip3 = zip_digits.str[:3]
    s["zip3"] = zip3.mask(zip3.isin(RESTRICTED_ZIP3), "000").where(zip_digits.str.len() >= 5)
    s["provider_npi"] = trim(b["provider_npi"])
    # DuckDB's strip_accents + lower; every character but a-z, 0-9, _ becomes _
    dept = trim(b["department"]).str.lower().str.normalize("NFKD").str.replace(r"[\u0300-\u036f]", "", regex=True)
    s["department"] = nullif_empty(dept.str.replace(r"[^a-z0-9_]", "_", regex=True)).fillna("unknown")
    s["diagnosis_code"] = trim(b["diagnosis_code"]).str.replace(".", "", regex=False).str.upper()
    s["procedure_code"] = trim(b["procedure_code"]).str.upper()
    pos = trim(b["place_of_service"])
    s["place_of_service"] = pos.where(~pos.str.fullmatch(r"[0-9]{1,2}"), pos.str.zfill(2))
    s["service_date"], s["paid_date"] = date("service_date"), date("paid_date")
    for amount in ("billed_amount", "allowed_amount", "paid_amount"):
        s[amount] = parse_amount(b[amount], c.amount_encoding)
    s["claim_status"] = trim(b["claim_status"]).str.upper().map(c.status_map).astype("str")
    s["denial_reason_code"] = nullif_empty(
        trim(b["denial_reason_code"]).str.upper().str.replace(r"^(CO|PR|OA|PI|CR)-?", "", regex=True))

    status = s["claim_status"]
    billed, allowed, paid = s["billed_amount"], s["allowed_amount"], s["paid_amount"]
    out_of_order = (paid > allowed).fillna(False) | (allowed > billed).fillna(False)
    reversal_out_of_order = ((billed > allowed) | (allowed > paid) | (paid > 0)).fillna(False)
    load_day = pd.Timestamp.now("UTC").tz_localize(None).normalize()  # silver compares with the load's day
    rules = {
        "missing_claim_id": s["claim_id"].isna(),
        "invalid_claim_line_number": (s["claim_line_number"] < 1).fillna(True),
        "missing_member_id": s["member_key"].isna(),
        "invalid_service_date": (s["service_date"].isna() | (s["service_date"] < pd.Timestamp("1900-01-01"))),
        "invalid_paid_date": present("paid_date") & s["paid_date"].isna(),
        "invalid_birth_date": present("member_birth_date") & (
            birth.isna() | (birth < pd.Timestamp("1900-01-01")) | (birth > s["service_date"])).fillna(True),
        "invalid_amount": billed.isna() | allowed.isna() | paid.isna(),
        "unknown_status": status.isna(),
        "invalid_npi": ~npi_is_valid(s["provider_npi"]),
        "invalid_diagnosis_code": ~s["diagnosis_code"].fillna("").str.fullmatch(ICD10_RE),
        "invalid_procedure_code": ~s["procedure_code"].fillna("").str.fullmatch(PROCEDURE_RE),
        "invalid_place_of_service": s["place_of_service"].notna()
                                    & ~s["place_of_service"].fillna("").str.fullmatch(r"[0-9]{2}"),
        "amounts_out_of_order": (status.notna() & (status != "reversed") & out_of_order)
                                | ((status == "reversed") & reversal_out_of_order),
        "paid_amount_on_unpaid_status": status.isin(["denied", "pending"]) & (paid != 0).fillna(False),
        "paid_before_service": (s["paid_date"] < s["service_date"]).fillna(False),
        "negative_amount": (status.notna() & (status != "reversed")
                            & ((billed < 0) | (allowed < 0) | (paid < 0)).fillna(False)),
        "future_service_date": (s["service_date"] > load_day + pd.Timedelta(days=1)).fillna(False),
        "future_paid_date": (s["paid_date"] > load_day + pd.Timedelta(days=1)).fillna(False),
        "invalid_department": ~s["department"].isin(DEPARTMENTS),
        "invalid_denial_reason_code": s["denial_reason_code"].notna()
                                      & ~s["denial_reason_code"].fillna("").str.fullmatch(r"[0-9A-Z]{1,4}"),
    }
    for rule, failed in rules.items():
        s[rule] = np.asarray(failed, dtype=bool)
    return s


def landed_files(landing: Path, contracts: dict[str, PayerContract]) -> list[tuple[str, Path]]:
    """(source_file, path) of every file matching its payer's glob, ordered by source_file."""
    found = [(f"{payer}/{p.name}", p) for payer, c in contracts.items() if (landing / payer).is_dir()
             for p in (landing / payer).glob(c.file_glob) if p.is_file() and not p.name.startswith(".")]
    return sorted(found)


def validated(landing: Path, contracts: dict[str, PayerContract], pii_key: str) -> pd.DataFrame:
    pseudo = Pseudonymizer(pii_key)
    parts: list[pd.DataFrame] = []
    for source_file, path in landed_files(landing, contracts):
        contract = contracts[source_file.split("/", 1)[0]]
        bronze = read_bronze(path, contract, source_file)
        if bronze is not None:
            parts.append(parse_silver(bronze, contract, pseudo))
    if not parts:
        raise SystemExit(f"no landed files to read under {landing}")
    df = pd.concat(parts, ignore_index=True)
    # duplicate_line: a third copy of its (file, payer, claim id, line), or a second one unless exactly one of
    # the two is a reversal (the SQL: the line number equals the previous row's in the claim's window ordered
    # by line and row); parts are already in (source_file, source_row_number) order, so among the few rows
    # whose line a file holds more than once, a row's copy number is cumcount() and the copy before it is
    # shift() (over all 10M rows those groupbys took ~4 GiB more). The second of such a pair: `in_file_pair`.
    in_file = ["source_file", *KEY]
    keyed = df["claim_id"].notna() & df["claim_line_number"].notna()
    held_twice = df.index[keyed & df.duplicated(in_file, keep=False)]
    copies = df.loc[held_twice, [*in_file, "claim_status"]]
    copy_number = copies.groupby(in_file, sort=False).cumcount()
    reversal = (copies["claim_status"] == "reversed").astype(int)
    reversal_before = reversal.groupby([copies[c] for c in in_file], sort=False).shift(1)
    duplicate = (copy_number >= 2) | ((copy_number == 1) & (reversal == reversal_before))
    df["duplicate_line"] = False
    df.loc[held_twice, "duplicate_line"] = duplicate.to_numpy()
    df["in_file_pair"] = False
    df.loc[held_twice, "in_file_pair"] = ((copy_number == 1) & ~duplicate).to_numpy()
    # every line of a claim whose lines in one file name more than one member (lines without a member count
    # along but do not make a claim mixed)
    claim = ["source_file", "payer", "claim_id"]
    named = df.loc[df["claim_id"].notna() & df["member_key"].notna(), [*claim, "member_key"]]
    members = named.groupby(claim, sort=False)["member_key"].nunique()
    mixed = members.index[members.to_numpy() > 1]
    df["claim_member_mismatch"] = pd.MultiIndex.from_frame(df[claim]).isin(mixed)
    # the claims with lines in more than one file (rows without a member broke a rule: never current lines)
    claims = members.index.droplevel("source_file")
    resolve_versions(df, claims[claims.duplicated(keep=False)].unique())
    df["failed_rule_count"] = df[list(RULES)].sum(axis=1)
    return df


def resolve_versions(df: pd.DataFrame, in_two_files: pd.MultiIndex) -> None:
    """A line's versions across files (dbt_project/macros/line_versions.sql): of the copies that broke no rule,
    in landing order (here every file lands at once, so file name order), the last is the line. A reversal
    takes back the latest earlier version that is not a reversal (versions of files that landed out of
    order are moved first: late_lines_first), and is reversal_mismatch (replacing nothing) unless its
    amounts are exactly that version's, negated; with no such version but a rejected copy in an earlier
    file, it is reversal_of_rejected_line. When the lines of a claim that are the line (each line's latest
    version) name more than one member, each of them is claim_member_conflict, and the versions they
    replaced stay replaced; only claims in `in_two_files` (payer, claim id: lines in more
    than one file) can be such claims, as the SQL's full build looks only at those."""
    hook_rules = ["reversal_mismatch", "reversal_of_rejected_line", "claim_member_conflict"]
    for column in [*hook_rules, "superseded", "reverses_version"]:
        df[column] = False
    own = df[[r for r in RULES if r not in hook_rules]].any(axis=1)
    keyed = df["claim_id"].notna() & df["claim_line_number"].notna()
    good = df.loc[~own, ["source_file", *KEY, "claim_status", *AMOUNTS, "paid_date"]]
    found = pd.Series(False, index=good.index)
    mismatch = pd.Series(False, index=good.index)
    pair_rank = pair_ranks(df)
    multi = good[good.duplicated(KEY, keep=False)]
    multi = multi.assign(_pair=pair_rank.reindex(multi.index).fillna(0))
    multi = multi.sort_values([*KEY, "source_file", "_pair"], kind="stable")
    if not multi.empty:
        multi = late_lines_first(multi)
        reversal = multi["claim_status"] == "reversed"
        # the amounts of the latest earlier version that is not a reversal: shifted one down, then carried on
        taken = multi[AMOUNTS].where(~reversal, axis=0).assign(**{k: multi[k] for k in KEY})
        taken = taken.groupby(KEY, sort=False)[AMOUNTS].shift(1).assign(**{k: multi[k] for k in KEY})
        taken = taken.groupby(KEY, sort=False)[AMOUNTS].ffill()
        mirrored = np.logical_and.reduce([(multi[a] == -taken[a]).fillna(False).to_numpy(dtype=bool)
                                          for a in AMOUNTS])
        found.loc[multi.index] = reversal.to_numpy() & taken["paid_amount"].notna().to_numpy(dtype=bool)
        mismatch.loc[multi.index] = found.loc[multi.index].to_numpy() & ~mirrored
    # a reversal with no earlier good version of its line, but a rejected copy (not a reversal) in an earlier file
    paying = df["claim_status"] != "reversed"  # unknown (NaN) counts, as in SQL's `is distinct from`
    rejected = df.loc[own & keyed & ~df["duplicate_line"] & paying, [*KEY, "source_file"]]
    rejected_first = rejected.groupby(KEY)["source_file"].min()
    reversals = good.loc[good["claim_status"] == "reversed", [*KEY, "source_file"]]
    if len(rejected_first) and len(reversals):
        first = reversals.join(rejected_first.rename("first_rejected"), on=KEY)["first_rejected"]
        # ... or in the reversal's own file, ordered before it (the second of its in-file pair)
        rejected_here = pd.MultiIndex.from_frame(reversals[["source_file", *KEY]]).isin(
            pd.MultiIndex.from_frame(rejected[["source_file", *KEY]]))
        second_here = pair_rank.reindex(reversals.index).fillna(0).to_numpy() == 1
        orphan = (((first < reversals["source_file"]).fillna(False).to_numpy(dtype=bool)
                   | (rejected_here & second_here))
                  & ~found.loc[reversals.index].to_numpy(dtype=bool))
        df.loc[reversals.index[orphan], "reversal_of_rejected_line"] = True
    df.loc[mismatch.index[mismatch.to_numpy()], "reversal_mismatch"] = True
    if not multi.empty:
        versions = multi.loc[~df.loc[multi.index, hook_rules].any(axis=1)]
        later = versions.groupby(KEY, sort=False).cumcount(ascending=False).to_numpy() > 0
        df.loc[versions.index[later], "superseded"] = True
        df.loc[found.index[(found & ~mismatch).to_numpy()], "reverses_version"] = True
    # the claims whose current lines name more than one member (within one file the model's
    # claim_member_mismatch already took them out, so these have lines in more than one file)
    if in_two_files.empty:
        return
    current = (~own & ~df[hook_rules].any(axis=1) & ~df["superseded"]
               & pd.MultiIndex.from_frame(df[["payer", "claim_id"]]).isin(in_two_files))
    named = df.loc[current, ["payer", "claim_id", "member_key"]].drop_duplicates()
    mixed = named.loc[named.duplicated(["payer", "claim_id"]), ["payer", "claim_id"]].drop_duplicates()
    if not mixed.empty:
        conflicted = current & pd.MultiIndex.from_frame(df[["payer", "claim_id"]]).isin(
            pd.MultiIndex.from_frame(mixed))
        df.loc[conflicted, "claim_member_conflict"] = True
        df.loc[conflicted, "reverses_version"] = False


def pair_ranks(df: pd.DataFrame) -> pd.Series:
    """The order of the two copies of a reversal-and-other pair in one file (the SQL's pair_rank, 0 first, 1
    second), for their rows: the reversal first when the last earlier file that holds the line (a duplicate
    not counted) holds a copy that is not a reversal (its rules do not matter), else second."""
    keyed = df["claim_id"].notna() & df["claim_line_number"].notna() & ~df["duplicate_line"]
    pairs = pd.MultiIndex.from_frame(df.loc[df["in_file_pair"], ["source_file", *KEY]])
    if pairs.empty:
        return pd.Series(dtype=float)
    rows = df.loc[keyed, ["source_file", *KEY, "claim_status"]]
    files = (rows.assign(_holds=(rows["claim_status"] != "reversed"))
             .groupby([*KEY, "source_file"])["_holds"].any().reset_index().sort_values([*KEY, "source_file"]))
    files["_copy_before"] = files.groupby(KEY)["_holds"].shift(1).fillna(False).astype(bool)
    rows = rows[pd.MultiIndex.from_frame(rows[["source_file", *KEY]]).isin(pairs)]
    copy_before = rows.merge(files[[*KEY, "source_file", "_copy_before"]], on=[*KEY, "source_file"],
                             how="left")["_copy_before"].to_numpy(dtype=bool)
    return pd.Series(((rows["claim_status"] == "reversed").to_numpy() != copy_before).astype(int), index=rows.index)


def late_lines_first(multi: pd.DataFrame) -> pd.DataFrame:
    """The versions of each line (sorted by line, then file: the order they landed) with those of files that
    landed out of order moved (the SQL's `ordered`): a reversal with no earlier version that is not a
    reversal, whose next version that is not a reversal carries exactly its amounts negated and was paid on
    or before the reversal's paid date, right after that version; a version that is neither an adjustment
    nor a reversal, landed after an adjustment of its line paid later than it, right before the first such
    adjustment to land, unless the versions that landed before it came out of the order of their paid
    dates. The SQL's (version_landed, version_file) is `_anchor` here (files land in name order), its
    version_rank `_rank`."""
    lines = [multi[k] for k in KEY]
    reversal = multi["claim_status"] == "reversed"
    position = multi.groupby(lines, sort=False).cumcount()
    line_before = (~reversal).astype(int).groupby(lines, sort=False).cumsum() - (~reversal) > 0
    # the row number (in `multi`) of each row's next version that is not a reversal
    row = pd.Series(np.arange(len(multi)), index=multi.index).where(~reversal)
    after = row.groupby(lines, sort=False).shift(-1)
    after = after.groupby(lines, sort=False).bfill()
    taken = after.dropna().astype(int)
    following = (multi.iloc[taken.to_numpy()][[*AMOUNTS, "paid_date", "source_file"]].set_axis(taken.index)
                 .reindex(multi.index))
    following_position = position.iloc[taken.to_numpy()].set_axis(taken.index).reindex(multi.index)
    late = (reversal & ~line_before & following_position.notna()
            & (following["source_file"] != multi["source_file"]).to_numpy(dtype=bool)  # not its own file's copy
            & np.logical_and.reduce([(multi[a] == -following[a]).fillna(False).to_numpy(dtype=bool) for a in AMOUNTS])
            & (following["paid_date"] <= multi["paid_date"]).fillna(False).to_numpy(dtype=bool))
    # each version that is neither an adjustment nor a reversal: the position of the first adjustment of its
    # line that landed before it and was paid later than it
    dated = multi["paid_date"].notna()
    adjusted = multi["claim_status"] == "adjusted"
    adjustments = multi.loc[adjusted & dated, [*KEY, "paid_date"]].assign(_before=position)
    others = multi.loc[~adjusted & ~reversal & dated, [*KEY, "paid_date"]].assign(_position=position)
    # ... when the versions that landed before it came in the order of their paid dates (the SQL's
    # after_dated_before: paid on or after every earlier version, or no date to tell)
    floor_date = multi["paid_date"].fillna(pd.Timestamp.min)
    dated_max_before = floor_date.groupby(lines, sort=False).cummax().groupby(lines, sort=False).shift(1)
    out_of_date_order = (multi["paid_date"] < dated_max_before).fillna(False).astype(int)
    in_date_order = out_of_date_order.groupby(lines, sort=False).cumsum() - out_of_date_order == 0
    others = others[in_date_order.loc[others.index]]
    pairs = others.rename_axis("_row").reset_index().merge(adjustments, on=KEY, suffixes=("", "_adjusted"))
    pairs = pairs[(pairs["_before"] < pairs["_position"]) & (pairs["paid_date_adjusted"] > pairs["paid_date"])]
    before = pairs.groupby("_row")["_before"].min().reindex(multi.index)
    if not late.any() and before.isna().all():
        return multi
    anchor = position.where(~late, following_position).where(before.isna(), before)
    rank = pd.Series(1, index=multi.index).where(~late, 2).where(before.isna(), 0)
    return (multi.assign(_anchor=anchor, _rank=rank, _position=position)
            .sort_values([*KEY, "_anchor", "_rank", "_position"]).drop(columns=["_anchor", "_rank", "_position"]))


def current_lines(df: pd.DataFrame) -> pd.DataFrame:
    """silver_claim_lines: the latest good version of each line; a reversal of an earlier version, netted
    (amounts 0)."""
    silver = df.loc[(df["failed_rule_count"] == 0) & ~df["superseded"]].copy()
    netted = silver["reverses_version"]
    for a in AMOUNTS:
        silver[a] = silver[a].mask(netted, 0)
    return silver.drop(columns=[*RULES, "superseded", "reverses_version", "in_file_pair"])


def data_quality_log(df: pd.DataFrame) -> pd.DataFrame:
    """Per payer, file and rule: rows checked, rows failed, rows quarantined (every rule listed)."""
    g = df.assign(quarantined=df["failed_rule_count"] > 0).groupby(["payer", "source_file"], sort=True)
    per_file = g[list(RULES)].sum().assign(rows_checked=g.size(), rows_quarantined=g["quarantined"].sum())
    return per_file.melt(id_vars=["rows_checked", "rows_quarantined"], value_vars=list(RULES),
                         var_name="rule_id", value_name="rows_failed", ignore_index=False).reset_index()


def rate(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    return round_half_away(numerator / denominator, 4)


def avg_cents(sum_cents: pd.Series, count: pd.Series) -> list[str | None]:
    """cast(avg(decimal) as decimal(12, 2)): DuckDB averages as a double, the cast rounds half away."""
    avg = sum_cents.astype("float64") / (count * 100.0)
    return money(round_half_away(avg * 100, 0).astype("Int64").where(count > 0))


def gold_tables(silver: pd.DataFrame) -> dict[str, pd.DataFrame]:
    st = silver["claim_status"]
    x = silver.assign(
        service_month=silver["service_date"].dt.to_period("M"),
        visit=silver["payer"] + ":" + silver["claim_id"],
        **{f"is_{k}": st == k for k in ("paid", "denied", "pending", "adjusted", "reversed")},
        adjudicated=st != "pending",
        approved=st.isin(["paid", "adjusted"]),
        paid_pa=silver["paid_amount"].where(st.isin(["paid", "adjusted"])),
        paid_rev=silver["paid_amount"].where(st.isin(["paid", "adjusted", "reversed"])),
        billed_nrev=silver["billed_amount"].where(st != "reversed"),
        billed_pend=silver["billed_amount"].where(st == "pending"),
        days=(silver["paid_date"] - silver["service_date"]).dt.days.where(st.isin(["paid", "adjusted"])),
    )

    m = x.groupby(["service_month", "payer"], sort=True).agg(
        lines=("claim_id", "size"), claims=("claim_id", "nunique"), members=("member_key", "nunique"),
        billed_amount=("billed_amount", "sum"), allowed_amount=("allowed_amount", "sum"),
        paid_amount=("paid_rev", "sum"), denied_lines=("is_denied", "sum")).reset_index()
    m["denial_rate"] = rate(m["denied_lines"], m["lines"])

    f = x.groupby(["payer", "service_month"], sort=True).agg(
        submitted_lines=("claim_id", "size"), adjudicated_lines=("adjudicated", "sum"),
        paid_lines=("is_paid", "sum"), denied_lines=("is_denied", "sum"), pending_lines=("is_pending", "sum"),
        adjusted_lines=("is_adjusted", "sum"), reversed_lines=("is_reversed", "sum"),
        approved=("approved", "sum")).reset_index()
    f["adjudication_rate"] = rate(f["adjudicated_lines"], f["submitted_lines"])
    f["approval_rate"] = rate(f.pop("approved"), f["adjudicated_lines"].clip(lower=1))

    p = x.groupby("provider_npi", sort=True).agg(
        lines=("claim_id", "size"), claims=("visit", "nunique"), members=("member_key", "nunique"),
        denied=("is_denied", "sum"), paid_amount=("paid_rev", "sum"), paid_pa_sum=("paid_pa", "sum"),
        paid_pa_n=("paid_pa", "count"), days=("days", "mean")).reset_index()
    p.insert(4, "denial_rate", rate(p.pop("denied"), p["lines"]))
    p["avg_paid_amount"] = avg_cents(p.pop("paid_pa_sum"), p.pop("paid_pa_n"))
    p["avg_days_to_payment"] = round_half_away(p.pop("days"), 1)

    d = x.groupby("department", sort=True).agg(
        visits=("visit", "nunique"), lines=("claim_id", "size"), billed_sum=("billed_nrev", "sum"),
        billed_n=("billed_nrev", "count"), paid_revenue=("paid_rev", "sum"),
        pending_revenue=("billed_pend", "sum")).reset_index()
    d.insert(3, "avg_billed_amount", avg_cents(d.pop("billed_sum"), d.pop("billed_n")))

    for t in (m, f):
        t["service_month"] = t["service_month"].dt.strftime("%Y-%m-01")
    for t, cols in ((m, ("billed_amount", "allowed_amount", "paid_amount")), (p, ("paid_amount",)),
                    (d, ("paid_revenue", "pending_revenue"))):
        for col in cols:
            t[col] = money(t[col])
    return {"claims_monthly_summary": m, "claims_approval_funnel": f, "provider_performance": p,
            "department_revenue": d}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--landing", type=Path, required=True, help="landing folder (<payer>/<files>)")
    ap.add_argument("--contracts", type=Path, default=None, help="payer contracts folder (*.yaml)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the gold CSV files")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    settings = load_settings()
    contracts = load_contracts(args.contracts or settings.contracts_path)
    df = validated(args.landing, contracts, settings.pii_key)
    failed = df["failed_rule_count"] > 0
    by_rule = data_quality_log(df).groupby("rule_id")["rows_failed"].sum()
    silver = current_lines(df)
    gold = gold_tables(silver)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, table in gold.items():
        table.to_csv(args.out / f"{name}.csv", index=False)
    m = gold["claims_monthly_summary"]
    paid = zip(m["payer"], m["service_month"], m["paid_amount"], strict=True)
    print(json.dumps({
        "bronze_rows": len(df), "silver_rows": len(silver), "quarantine_rows": int(failed.sum()),
        "superseded_rows": int(df["superseded"].sum()),
        "quarantine_by_rule": {r: int(by_rule[r]) for r in RULES if by_rule[r] > 0},
        "paid_by_payer_month": {f"{p}|{mo}": v for p, mo, v in paid},
        "seconds": round(time.perf_counter() - t0, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
