"""Synthetic multi-payer claim files, generated inside DuckDB.

Deterministic by seed: every value is a function of (seed, payer, row index) through DuckDB's `hash`, so
the same arguments give byte-identical files on any run. Streaming: DuckDB writes each file with COPY,
one file (at most `rows_per_file` lines) in memory at a time.

Each payer has its own layout (see _layout), matching its contract in medflow_assets/landing/contracts/.
A configurable share of rows carries exactly one planted defect; the manifest lists each such row with
the silver rule it must break, so tests can reconcile the quarantine against it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import duckdb

from medflow_assets.synth import reference as ref

PAYER_SHARES = {"northwind": 0.40, "bluepeak": 0.35, "cascade": 0.25}
DEFECT_KINDS = list(ref.DEFECT_RULES)


def _sql_list(values) -> str:
    return "[" + ", ".join(f"'{v}'" if isinstance(v, str) else str(v) for v in values) + "]"


# Claim shapes: 6-row blocks split into claims (offset of the claim in the block, line number in the claim).
_SHAPES_OFFSET = [[0, 1, 1, 2, 2, 2], [0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1],
                  [0, 1, 2, 2, 2, 2], [0, 0, 1, 1, 2, 2], [0, 1, 2, 3, 4, 5]]
_SHAPES_LINE = [[1, 1, 2, 1, 2, 3], [1, 2, 3, 1, 2, 3], [1, 2, 1, 2, 3, 4],
                [1, 1, 1, 2, 3, 4], [1, 2, 1, 2, 1, 2], [1, 1, 1, 1, 1, 1]]

_DEPTS = list(ref.DEPARTMENTS)
_CPT = [[c for c, _ in ref.DEPARTMENTS[d]] for d in _DEPTS]
_PRICE = [[p for _, p in ref.DEPARTMENTS[d]] for d in _DEPTS]


def _canonical_sql(payer: str, prefix: str, seed: int, start: int, end: int, n_members: int,
                   n_providers: int, defect_ppm: int) -> str:
    """Typed truth for rows [start, end) of one payer, with the planted defect kind per row."""
    h = f"hb({seed}, '{payer}'"
    status_case = "CASE " + " ".join(
        f"WHEN s_draw < {sum(w for _, w in ref.STATUS_WEIGHTS[:k + 1])} THEN '{name}'"
        for k, (name, _) in enumerate(ref.STATUS_WEIGHTS)) + " END"
    return f"""
WITH base AS (
  SELECT i, i // 6 AS blk, i % 6 AS pos, {h}, 'shape', i // 6) % 6 + 1 AS shape FROM range({start}, {end}) t(i)
), c AS (
  SELECT i, blk * 6 + {_SHAPES_OFFSET}[shape][pos + 1] AS claim_no, {_SHAPES_LINE}[shape][pos + 1] AS line
  FROM base
), c2 AS (
  SELECT *, {h}, 'member', claim_no) % {n_members} AS m, {h}, 'prov', claim_no) % {n_providers} AS p,
         {h}, 'dept', claim_no) % {len(_DEPTS)} + 1 AS dept_ix,
         {h}, 'defect', i) % 1000000 < {defect_ppm} AS has_defect
  FROM c
), c3 AS (
  SELECT *,
    CASE WHEN has_defect THEN {_sql_list(DEFECT_KINDS)}[{h}, 'kind', i) % {len(DEFECT_KINDS)} + 1] END AS defect,
    {h}, 'status', i) % 1000 AS s_draw,
    {h}, 'cpt', i) % 4 + 1 AS cpt_ix,
    lpad(CAST(100000000 + {h}, 'npi', p) % 199999999 AS VARCHAR), 9, '0') AS npi9
  FROM c2
), t AS (
  SELECT i, claim_no, line, defect, m, dept_ix,
    '{prefix}' || lpad(CAST(claim_no AS VARCHAR), 10, '0') AS claim_id,
    '{prefix.upper()}M' || lpad(CAST(m AS VARCHAR), 9, '0') AS member_id,
    {_sql_list(ref.FIRST_NAMES)}[hb({seed}, '{payer}', 'first', m) % {len(ref.FIRST_NAMES)} + 1] AS first_name,
    {_sql_list(ref.LAST_NAMES)}[hb({seed}, '{payer}', 'last', m) % {len(ref.LAST_NAMES)} + 1] AS last_name,
    CAST(200 + hb({seed}, '{payer}', 'area', m) % 800 AS VARCHAR)
      || lpad(CAST(hb({seed}, '{payer}', 'phone', m) % 10000000 AS VARCHAR), 7, '0') AS phone10,
    lpad(CAST(1 + hb({seed}, '{payer}', 'ssa', m) % 665 AS VARCHAR), 3, '0')
      || lpad(CAST(1 + hb({seed}, '{payer}', 'ssg', m) % 99 AS VARCHAR), 2, '0')
      || lpad(CAST(1 + hb({seed}, '{payer}', 'sss', m) % 9999 AS VARCHAR), 4, '0') AS ssn9,
    DATE '1940-01-01' + CAST(hb({seed}, '{payer}', 'dob', m) % 27000 AS INTEGER) AS birth_date,
    CASE WHEN hb({seed}, '{payer}', 'sex', m) % 2 = 0 THEN 'F' ELSE 'M' END AS gender,
    {_sql_list(ref.ZIP_CODES)}[hb({seed}, '{payer}', 'zip', m) % {len(ref.ZIP_CODES)} + 1] AS zip,
    npi9 || CAST((10 - (24 + {_luhn_body('npi9')}) % 10) % 10 AS VARCHAR) AS npi,
    {_sql_list(_DEPTS)}[dept_ix] AS department,
    {_sql_list(ref.ICD10_CODES)}[{h}, 'dx', i) % {len(ref.ICD10_CODES)} + 1] AS dx,
    {_CPT}[dept_ix][cpt_ix] AS cpt,
    {_PRICE}[dept_ix][cpt_ix] AS price,
    {_sql_list(ref.PLACES_OF_SERVICE)}[{h}, 'pos', claim_no) % {len(ref.PLACES_OF_SERVICE)} + 1] AS pos,
    DATE '2024-01-01' + CAST({h}, 'svc', claim_no) % 700 AS INTEGER) AS service_date,
    -- A defective row is never a reversal, and paid_exceeds_allowed is on a paying line (a denied or pending
    -- line that pays would also break paid_amount_on_unpaid_status): it breaks only the rule its defect names.
    CASE WHEN defect IS NOT NULL AND {status_case} = 'reversed' THEN 'paid'
         WHEN defect = 'paid_exceeds_allowed' AND {status_case} IN ('denied', 'pending') THEN 'paid'
         ELSE {status_case} END AS status,
    {h}, 'bill', i) % 41 AS b_draw, {h}, 'allow', i) % 41 AS a_draw, {h}, 'paid', i) % 31 AS p_draw,
    {h}, 'lag', i) % 50 AS lag,
    {_sql_list(ref.CARC_DENIAL_CODES)}[{h}, 'carc', i) % {len(ref.CARC_DENIAL_CODES)} + 1] AS carc
  FROM c3
), amounts AS (
  SELECT *,
    CAST(round(price * (80 + b_draw) / 100.0, 2) AS DECIMAL(12, 2)) AS billed0
  FROM t
), a2 AS (
  SELECT *, CAST(round(billed0 * (50 + a_draw) / 100.0, 2) AS DECIMAL(12, 2)) AS allowed0 FROM amounts
), typed AS (
  SELECT i, claim_no, line, m, claim_id, member_id, first_name, last_name, phone10, ssn9, birth_date,
    gender, zip, npi, department, dx, cpt, pos, service_date, status,
    lower(first_name) || '.' || lower(last_name) || CAST(m % 1000 AS VARCHAR) || '@mailbox.example' AS email,
    CASE WHEN status = 'reversed' THEN -billed0 ELSE billed0 END AS billed,
    CASE WHEN status IN ('paid', 'adjusted') THEN allowed0 WHEN status = 'reversed' THEN -allowed0
         ELSE CAST(0 AS DECIMAL(12, 2)) END AS allowed,
    CASE WHEN defect = 'paid_exceeds_allowed' THEN
           CASE WHEN status IN ('paid', 'adjusted') THEN allowed0 ELSE CAST(0 AS DECIMAL(12, 2)) END + 25
         WHEN status = 'paid' THEN CAST(round(allowed0 * (70 + p_draw) / 100.0, 2) AS DECIMAL(12, 2))
         WHEN status = 'adjusted' THEN CAST(round(allowed0 * (40 + p_draw) / 100.0, 2) AS DECIMAL(12, 2))
         WHEN status = 'reversed' THEN -CAST(round(allowed0 * (70 + p_draw) / 100.0, 2) AS DECIMAL(12, 2))
         ELSE CAST(0 AS DECIMAL(12, 2)) END AS paid,
    CASE WHEN status IN ('paid', 'adjusted', 'reversed') THEN service_date + CAST(7 + lag AS INTEGER) END
      AS paid_date,
    CASE WHEN status = 'denied' THEN carc END AS denial_code,
    defect
  FROM a2
), expanded AS (
  SELECT typed.* REPLACE (CASE WHEN defect = 'duplicate_line' AND copy = 0 THEN NULL ELSE defect END AS defect),
         copy
  FROM typed, unnest(CASE WHEN defect = 'duplicate_line' THEN [0, 1] ELSE [0] END) u(copy)
)
SELECT *, row_number() OVER (ORDER BY i, copy) AS source_row_number FROM expanded
"""


def _luhn_body(col: str) -> str:
    """Luhn sum of a 9-digit string followed by a check digit (doubling odd positions from the left)."""
    terms = []
    for j in range(1, 10):
        d = f"CAST(substr({col}, {j}, 1) AS INTEGER)"
        terms.append(f"((2 * {d}) // 10 + (2 * {d}) % 10)" if j % 2 == 1 else d)
    return " + ".join(terms)


def _v(defect: str, bad: str, good: str) -> str:
    """Text of a field: the planted bad value on rows with this defect, else the good formatting."""
    return f"CASE WHEN defect = '{defect}' THEN {bad} ELSE {good} END"


def _amount(col: str, fmt: str) -> str:
    if fmt == "dollars":
        good = f"printf('%.2f', {col})"
    elif fmt == "currency":
        good = f"CASE WHEN {col} < 0 THEN '-' ELSE '' END || '$' || format('{{:,.2f}}', abs({col})::DOUBLE)"
    else:
        good = f"CAST(CAST({col} * 100 AS BIGINT) AS VARCHAR)"
    return good


def _date(col: str, fmt: str) -> str:
    return f"strftime({col}, '{fmt}')"


def _layout(payer: str) -> list[tuple[str, str]]:
    """(header, SQL text expression) per column, in file order, for one payer."""
    common_defects = {
        "claim_id": _v("missing_claim_id", "NULL", "claim_id"),
        "member_id": _v("missing_member_id", "NULL", "member_id"),
        "npi": _v("bad_npi_check_digit",
                  "substr(npi, 1, 9) || CAST((CAST(substr(npi, 10, 1) AS INTEGER) + 1) % 10 AS VARCHAR)", "npi"),
        "cpt": _v("malformed_procedure", "'12AB'", "cpt"),
        "pos": _v("bad_place_of_service", "'7X'", "pos"),
        "status_bad": "'ZZ'",
    }
    if payer == "northwind":
        amt, dfmt = "dollars", "%Y-%m-%d"
        return [
            ("claim_id", common_defects["claim_id"]), ("line_number", "CAST(line AS VARCHAR)"),
            ("member_id", common_defects["member_id"]), ("first_name", "first_name"), ("last_name", "last_name"),
            ("email", "email"),
            ("phone", "substr(phone10, 1, 3) || '-' || substr(phone10, 4, 3) || '-' || substr(phone10, 7)"),
            ("ssn", "substr(ssn9, 1, 3) || '-' || substr(ssn9, 4, 2) || '-' || substr(ssn9, 6)"),
            ("birth_date", _date("birth_date", dfmt)), ("gender", "gender"), ("zip_code", "zip"),
            ("rendering_npi", common_defects["npi"]), ("department", "department"),
            ("icd10_code", _v("malformed_icd10", "'9X9.Z1'", "dx")),
            ("cpt_code", common_defects["cpt"]), ("place_of_service", common_defects["pos"]),
            ("service_date", _v("bad_service_date", "'2024-02-30'", _date("service_date", dfmt))),
            ("paid_date", _date("paid_date", dfmt)),
            ("billed_amount", _v("non_numeric_amount", "'N/A'", _amount("billed", amt))),
            ("allowed_amount", _amount("allowed", amt)), ("paid_amount", _amount("paid", amt)),
            ("status", _v("unknown_status", "'ZZ'", "status")), ("denial_code", "denial_code"),
        ]
    if payer == "bluepeak":
        amt, dfmt = "currency", "%m/%d/%Y"
        return [
            ("Claim Number", common_defects["claim_id"]), ("Line", "CAST(line AS VARCHAR)"),
            ("Member ID", common_defects["member_id"]), ("Patient Name", "last_name || ', ' || first_name"),
            ("Phone", "'(' || substr(phone10, 1, 3) || ') ' || substr(phone10, 4, 3) || '-' || substr(phone10, 7)"),
            ("SSN", "ssn9"), ("DOB", _date("birth_date", dfmt)), ("Sex", "gender"), ("ZIP", "zip"),
            ("Provider NPI", common_defects["npi"]), ("Department", "upper(department[1]) || replace(department[2:], '_', ' ')"),
            # Half the codes keep their dot, half do not.
            ("Diagnosis", _v("malformed_icd10", "'9X9.Z1'",
                             "CASE WHEN i % 2 = 0 THEN dx ELSE replace(dx, '.', '') END")),
            ("Procedure", common_defects["cpt"]), ("POS", common_defects["pos"]),
            ("Service Date", _v("bad_service_date", "'13/45/2024'", _date("service_date", dfmt))),
            ("Paid Date", _date("paid_date", dfmt)),
            ("Billed", _v("non_numeric_amount", "'TBD'", _amount("billed", amt))),
            ("Allowed", _amount("allowed", amt)), ("Paid", _amount("paid", amt)),
            ("Status", _v("unknown_status", "'ZZ'", "upper(status)")), ("Denial Reason", "denial_code"),
        ]
    if payer == "cascade":
        amt, dfmt = "cents", "%Y%m%d"
        code = "CASE status WHEN 'paid' THEN 'P' WHEN 'denied' THEN 'D' WHEN 'pending' THEN 'H' " \
               "WHEN 'adjusted' THEN 'A' ELSE 'R' END"
        return [
            ("CLM_ID", common_defects["claim_id"]), ("LN_NO", "CAST(line AS VARCHAR)"),
            ("MBR_ID", common_defects["member_id"]), ("MBR_FNAME", "upper(first_name)"),
            ("MBR_LNAME", "upper(last_name)"), ("MBR_EMAIL", "upper(email)"), ("MBR_PHONE", "phone10"),
            ("MBR_SSN", "substr(ssn9, 1, 3) || '-' || substr(ssn9, 4, 2) || '-' || substr(ssn9, 6)"),
            ("MBR_DOB", _date("birth_date", dfmt)), ("MBR_SEX", "gender"), ("MBR_ZIP", "zip"),
            ("REND_NPI", common_defects["npi"]), ("DEPT_CD", "upper(department)"),
            ("DX_CD", _v("malformed_icd10", "'9X9Z1'", "replace(dx, '.', '')")),
            ("PROC_CD", common_defects["cpt"]), ("POS_CD", common_defects["pos"]),
            ("SVC_DT", _v("bad_service_date", "'20241345'", _date("service_date", dfmt))),
            ("PD_DT", _date("paid_date", dfmt)),
            ("BILL_AMT_CENTS", _v("non_numeric_amount", "'12.3X'", _amount("billed", amt))),
            ("ALLOW_AMT_CENTS", _amount("allowed", amt)), ("PAID_AMT_CENTS", _amount("paid", amt)),
            ("STAT_CD", _v("unknown_status", "'ZZ'", code)), ("CARC_CD", "denial_code"),
        ]
    raise ValueError(f"the generator has no layout for payer {payer!r}; known: {sorted(PAYER_SHARES)}")


_PREFIX = {"northwind": "NW", "bluepeak": "BP", "cascade": "CC"}
_DELIM = {"northwind": ",", "bluepeak": ",", "cascade": "|"}
_EXT = {"northwind": "csv", "bluepeak": "csv", "cascade": "txt"}


@dataclass
class GeneratedFile:
    payer: str
    path: Path
    lines: int
    defects: int


def generate(out_dir: Path, lines: int, seed: int = 42, defect_rate: float = 0.02,
             rows_per_file: int = 1_000_000, files_per_payer: int | None = None,
             manifest_dir: Path | None = None, truth: bool = False,
             payers: list[str] | None = None, memory_limit: str = "1GB", row_offset: int = 0,
             file_tag: str = "claims") -> list[GeneratedFile]:
    """Write claim files under out_dir/<payer>/ and the defect manifest (and optional truth) under
    manifest_dir (default: a sibling folder `<out_dir>_manifest`). Returns what was written.

    row_offset shifts the row (and so claim) numbering: a later batch with another offset brings new claims
    instead of duplicates of earlier ones; file_tag names the files (<payer>_<tag>_NNN)."""
    if lines < 1:
        raise ValueError("lines must be at least 1")
    if not 0 <= defect_rate <= 1:
        raise ValueError("defect_rate must be between 0 and 1")
    payers = payers or list(PAYER_SHARES)
    unknown = [p for p in payers if p not in PAYER_SHARES]
    if unknown:
        raise ValueError(f"unknown payers {unknown}; the generator knows {sorted(PAYER_SHARES)}")
    out_dir = Path(out_dir)
    manifest_dir = Path(manifest_dir) if manifest_dir else out_dir.with_name(out_dir.name + "_manifest")
    manifest_dir.mkdir(parents=True, exist_ok=True)
    total_share = sum(PAYER_SHARES[p] for p in payers)
    counts = [int(lines * PAYER_SHARES[p] / total_share) for p in payers]
    counts[0] += lines - sum(counts)
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = true")
    # hash() is UBIGINT; list indexes need BIGINT. Dropping the top bit keeps the value deterministic.
    con.execute("CREATE TEMP MACRO hb(a, b, c, d) AS CAST(hash(a, b, c, d) >> 1 AS BIGINT)")
    written: list[GeneratedFile] = []
    manifest_parts, truth_parts = [], []
    defect_ppm = round(defect_rate * 1_000_000)
    for payer, n in zip(payers, counts):
        if n == 0:
            continue
        (out_dir / payer).mkdir(parents=True, exist_ok=True)
        k = files_per_payer or max(1, math.ceil(n / rows_per_file))
        # File boundaries on multiples of 6 so no claim spans two files.
        bounds = [min(n, 6 * round(n * j / k / 6)) for j in range(k)] + [n]
        n_members = max(20, (n + row_offset) // 6)
        n_providers = max(25, min(5000, n // 150))
        layout = _layout(payer)
        select = ", ".join(f'{expr} AS "{hdr}"' for hdr, expr in layout)
        for j in range(k):
            start, end = bounds[j] + row_offset, bounds[j + 1] + row_offset
            if end <= start:
                continue
            name = f"{payer}_{file_tag}_{j + 1:03d}.{_EXT[payer]}"
            path = out_dir / payer / name
            con.execute("DROP TABLE IF EXISTS gen")
            con.execute("CREATE TEMP TABLE gen AS " + _canonical_sql(
                payer, _PREFIX[payer], seed, start, end, n_members, n_providers, defect_ppm))
            con.execute(f"COPY (SELECT {select} FROM gen ORDER BY source_row_number) TO '{path}' "
                        f"(FORMAT csv, HEADER true, DELIMITER '{_DELIM[payer]}')")
            rule_case = "CASE defect " + " ".join(
                f"WHEN '{d}' THEN '{r}'" for d, r in ref.DEFECT_RULES.items()) + " END"
            mpath = manifest_dir / f"manifest_{payer}_{j + 1:03d}.parquet"
            con.execute(f"COPY (SELECT '{payer}' AS payer, '{name}' AS file_name, source_row_number, "
                        f"claim_id, defect, {rule_case} AS rule_id FROM gen WHERE defect IS NOT NULL "
                        f"ORDER BY source_row_number) TO '{mpath}' (FORMAT parquet)")
            manifest_parts.append(mpath)
            if truth:
                tpath = manifest_dir / f"truth_{payer}_{j + 1:03d}.parquet"
                con.execute(f"COPY (SELECT '{payer}' AS payer, '{name}' AS file_name, source_row_number, "
                            "claim_id, line AS claim_line_number, member_id, first_name, last_name, email, "
                            "phone10, ssn9, birth_date, npi, department, dx, cpt, pos, service_date, "
                            "paid_date, billed, allowed, paid, status, denial_code, defect FROM gen "
                            f"ORDER BY source_row_number) TO '{tpath}' (FORMAT parquet)")
                truth_parts.append(tpath)
            n_lines, n_def = con.execute(
                "SELECT count(*), count(defect) FROM gen").fetchone()
            written.append(GeneratedFile(payer, path, n_lines, n_def))
    con.execute("DROP TABLE IF EXISTS gen")
    # One CSV manifest for people; the parquet parts stay for tests and tools.
    if manifest_parts:
        parts = ", ".join(f"'{p}'" for p in manifest_parts)
        con.execute(f"COPY (SELECT * FROM read_parquet([{parts}]) ORDER BY payer, file_name, source_row_number) "
                    f"TO '{manifest_dir / 'manifest.csv'}' (FORMAT csv, HEADER true)")
    summary = {
        "seed": seed, "lines_requested": lines, "defect_rate": defect_rate,
        "files": [{"payer": f.payer, "file": f.path.name, "lines": f.lines, "defects": f.defects}
                  for f in written],
    }
    (manifest_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    con.close()
    return written
