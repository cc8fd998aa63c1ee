"""Probes behind design choices (README, BENCHMARKS.md), each timing its variants (checks, silver-order and
cross-row alternate their order between rounds):

  python benchmarks/probes.py checks --warehouse benchmarks/.work/10m/medflow/medflow.duckdb --rounds 3
      every Pandera check and the gate on a built warehouse, with fast_builtin_check (factory.py) and with
      Pandera's own expressions; fails if any count differs.
  python benchmarks/probes.py silver-order --floor-db benchmarks/.work/10m/floor/medflow.duckdb \
      --script benchmarks/.work/10m/floor.sql --rounds 2
      silver_claim_lines_validated and silver_members (the floor's SQL) on a copy of the floor's warehouse
      without them: one after the other, as dbt runs them now, and side by side on two cursors, as before.
  python benchmarks/probes.py cross-row --floor-db benchmarks/.work/10m/floor/medflow.duckdb \
      --script benchmarks/.work/10m/floor.sql --rounds 3
      the rules that compare a file's rows with each other, alone on the floor's bronze: the model's one
      window for duplicate_line and claim_member_mismatch (taken from the script), the window for
      duplicate_line alone as it was before session 25, and a separate group on the normalized member ids.
  python benchmarks/probes.py claim-scope --floor-db benchmarks/.work/10m/floor/medflow.duckdb --rounds 3
      the first query of the line-versions post-hook on a full build (macros/line_versions.sql), read-only on
      the floor's silver: the claims with rows in more than one file, with the files told apart by
      hash(source_file) (the hook's) and by the text itself, and the lines held in more than one file (the
      scope before session 26).
  python benchmarks/probes.py sqlite-engine --writes 300
      one SQLite insert per transaction in SQLAlchemy, as Dagster's SqliteEventLogStorage stores an event (a
      new engine per write, NullPool), with one engine kept, and with a pooled connection.
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import floor
from medflow_assets.quality import factory
from medflow_assets.quality.checks import BRONZE_SILVER_CHECKS, GOLD_CHECKS, quarantine_rates
from medflow_assets.resources import WarehouseResource
from medflow_assets.settings import load_settings
from medflow_assets.transform.connection_plugin import hmac_macro_sql


def probe_checks(warehouse: Path, rounds: int) -> dict:
    s = load_settings()
    con = factory.connect_ibis(WarehouseResource(path=str(warehouse), memory_limit=s.memory_limit,
                                                 checks_memory_limit=s.checks_memory_limit, threads=s.threads))
    fast = factory.fast_builtin_check
    walls: dict[str, list[float]] = {"pandera": [], "fast": []}
    first = None
    try:
        for _ in range(rounds):
            for mode in ("pandera", "fast"):
                factory.fast_builtin_check = fast if mode == "fast" else (lambda check, column: None)
                t0 = time.perf_counter()
                out = {}
                for c in BRONZE_SILVER_CHECKS + GOLD_CHECKS:
                    v = factory.validate_table(con, c.relation, c.model, list(c.key_columns))
                    out[c.relation] = [v.rows_checked, v.rules_checked, v.failures, v.structural]
                out["quarantine_rate_gate"] = quarantine_rates(con.con)
                walls[mode].append(round(time.perf_counter() - t0, 2))
                first = first or out
                if out != first:
                    raise SystemExit(f"{mode}: the checks answered differently")
    finally:
        factory.fast_builtin_check = fast
        con.disconnect()
    return {"rounds": walls, "median_s": {m: statistics.median(w) for m, w in walls.items()}}


def _statement(statements: list[str], relation: str) -> str:
    return next(st for st in statements if f'"silver"."{relation}"' in st.split("AS", 1)[0])


def probe_silver_order(floor_db: Path, script: Path, rounds: int) -> dict:
    statements = floor.script_statements(script)
    pair = {name: _statement(statements, name) for name in ("silver_claim_lines_validated", "silver_members")}
    s = load_settings()
    walls: dict[str, list[dict]] = {"one after the other": [], "side by side": []}
    with tempfile.TemporaryDirectory(dir=floor_db.parent) as tmp:
        db = Path(tmp) / floor_db.name
        for _ in range(rounds):
            for mode, rows in walls.items():
                shutil.copy(floor_db, db)
                con = floor.connect(db, s.memory_limit, s.threads)
                for name in pair:
                    con.execute(f"DROP TABLE silver.{name}")
                con.execute("CHECKPOINT")
                took = {}

                def run(name, con=con, took=took):
                    cursor = con.cursor()  # its own connection: the HMAC macro is per connection
                    cursor.execute(hmac_macro_sql(s.pii_key))
                    t = time.perf_counter()
                    cursor.execute(pair[name])
                    took[name] = round(time.perf_counter() - t, 2)

                t0 = time.perf_counter()
                if mode == "one after the other":
                    for name in pair:
                        run(name)
                else:
                    threads = [threading.Thread(target=run, args=(name,)) for name in pair]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    if len(took) != len(pair):
                        raise SystemExit("a statement failed (see the thread's traceback above)")
                rows.append({"wall_s": round(time.perf_counter() - t0, 2), **took})
                con.close()
    return {"rounds": walls, "median_wall_s": {m: statistics.median(r["wall_s"] for r in rs)
                                                for m, rs in walls.items()}}


_WS = "' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13) || chr(160)"  # trim_space() compiled
_RUN_ROWS = ('(select * from "bronze"."bronze_claim_lines" where source_file in '
             '(select source_file from "medflow"."landing"."dbt_selection"))')
_CLAIM_ID = f"nullif(trim(claim_id, {_WS}), '')"
_LINE = (f"case when regexp_full_match(trim(claim_line_number, {_WS}), '[0-9]+') "
         f"then try_cast(trim(claim_line_number, {_WS}) as integer) end")


def _alternate(floor_db: Path, forms: dict[str, str], rounds: int) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Each query of `forms` once per round on the floor's warehouse, in order, then reversed the next round:
    ({form: wall seconds per round}, {form: its one result row})."""
    s = load_settings()
    walls: dict[str, list[float]] = {name: [] for name in forms}
    found: dict[str, list] = {}
    con = floor.connect(floor_db, s.memory_limit, s.threads)
    try:
        for r in range(rounds):
            for name in (list(forms) if r % 2 == 0 else list(forms)[::-1]):
                t = time.perf_counter()
                found[name] = list(con.execute(forms[name]).fetchone())
                walls[name].append(round(time.perf_counter() - t, 2))
    finally:
        con.close()
    return walls, found


def probe_cross_row(floor_db: Path, script: Path, rounds: int) -> dict:
    stmt = _statement(floor.script_statements(script), "silver_claim_lines_validated")
    if "claim_rows as (" not in stmt:
        raise SystemExit(f"{script} was compiled before claim_member_mismatch: run benchmarks/run.py at 10m first")
    model = stmt[stmt.index("claim_rows as ("): stmt.index("flagged as (")].rstrip().rstrip(",")
    forms = {
        "one window for both (the model)": f"""with {model}
            select count(*) filter (where is_duplicate), count(*) filter (where is_mixed_claim) from cross_row""",
        "duplicate_line alone (before)": f"""select count(*), 0 from (
            select source_file, source_row_number from (
              select payer, source_file, source_row_number, {_CLAIM_ID} as claim_id, {_LINE} as claim_line_number
              from {_RUN_ROWS} b)
            where claim_id is not null and claim_line_number is not null
            qualify row_number() over (partition by source_file, payer, claim_id, claim_line_number
                                       order by source_row_number) > 1)""",
        "a separate group on normalized ids": f"""select 0, count(*) from (
            select source_file, payer, claim_id from (
              select source_file, payer, {_CLAIM_ID} as claim_id,
                     nullif(trim(upper(member_id), {_WS}), '') as member_ref from {_RUN_ROWS} b)
            where claim_id is not null and member_ref is not null
            group by all having min(member_ref) <> max(member_ref))""",
    }
    walls, found = _alternate(floor_db, forms, rounds)
    return {"walls_s": walls, "median_s": {n: statistics.median(w) for n, w in walls.items()},
            "duplicate_lines, mixed-claim lines (or claims)": found}


def probe_claim_scope(floor_db: Path, rounds: int) -> dict:
    table = "silver.silver_claim_lines_validated"
    forms = {
        "claims, files by hash (the hook)": f"""select count(*) from (select payer, claim_id from {table}
            where claim_id is not null group by all having min(hash(source_file)) <> max(hash(source_file)))""",
        "claims, files by name": f"""select count(*) from (select payer, claim_id from {table}
            where claim_id is not null group by all having min(source_file) <> max(source_file))""",
        "lines held twice (before)": f"""select count(*) from (select payer, claim_id, claim_line_number
            from {table} where claim_id is not null and claim_line_number is not null
              and not list_contains(failed_rules, 'duplicate_line')
            group by all having count(*) > 1)""",
    }
    walls, found = _alternate(floor_db, forms, rounds)
    return {"walls_s": walls, "median_s": {n: statistics.median(w) for n, w in walls.items()},
            "found": {n: row[0] for n, row in found.items()}}


def probe_sqlite_engine(writes: int) -> dict:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool, QueuePool

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/events.db"
        with create_engine(url, poolclass=NullPool).connect() as c:
            c.execute(text("PRAGMA journal_mode=WAL"))  # as Dagster's _initdb
            c.execute(text("CREATE TABLE t (x INTEGER)"))
            c.commit()

        def write(engine):
            with engine.connect() as conn, conn.begin():
                conn.execute(text("INSERT INTO t VALUES (1)"))

        def timed(name, make, per_write):
            engine = None if per_write else make()
            t = time.perf_counter()
            for _ in range(writes):
                e = make() if per_write else engine
                write(e)
                if per_write:
                    e.dispose()
            out[name] = round((time.perf_counter() - t) / writes * 1000, 3)

        args = {"connect_args": {"timeout": 30, "check_same_thread": False}}
        timed("an engine per write (Dagster) ms", lambda: create_engine(url, poolclass=NullPool, **args), True)
        timed("one engine kept ms", lambda: create_engine(url, poolclass=NullPool, **args), False)
        timed("a pooled connection ms", lambda: create_engine(url, poolclass=QueuePool, **args), False)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="probe", required=True)
    c = sub.add_parser("checks")
    c.add_argument("--warehouse", type=Path, required=True)
    c.add_argument("--rounds", type=int, default=3)
    o = sub.add_parser("silver-order")
    o.add_argument("--floor-db", type=Path, required=True)
    o.add_argument("--script", type=Path, required=True)
    o.add_argument("--rounds", type=int, default=2)
    x = sub.add_parser("cross-row")
    x.add_argument("--floor-db", type=Path, required=True)
    x.add_argument("--script", type=Path, required=True)
    x.add_argument("--rounds", type=int, default=3)
    k = sub.add_parser("claim-scope")
    k.add_argument("--floor-db", type=Path, required=True)
    k.add_argument("--rounds", type=int, default=3)
    e = sub.add_parser("sqlite-engine")
    e.add_argument("--writes", type=int, default=300)
    args = ap.parse_args(argv)
    if args.probe == "checks":
        out = probe_checks(args.warehouse, args.rounds)
    elif args.probe == "silver-order":
        out = probe_silver_order(args.floor_db, args.script, args.rounds)
    elif args.probe == "cross-row":
        out = probe_cross_row(args.floor_db, args.script, args.rounds)
    elif args.probe == "claim-scope":
        out = probe_claim_scope(args.floor_db, args.rounds)
    else:
        out = probe_sqlite_engine(args.writes)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
