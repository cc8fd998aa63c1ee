"""Turn a Pandera (ibis) schema into a Dagster asset check that validates inside DuckDB.

Every check of the schema is compiled by Pandera's ibis backend into a boolean expression over the table;
all of them are counted in ONE aggregate query, so nothing but counts leaves the database. Pandera's own
`failure_cases` (an eager pandas frame of every failing value, raw values included) is never built. At
most MAX_KEYS failing keys are fetched, and only from the key columns named for the table (lineage or
grain columns, never PII).
"""

import time
from dataclasses import dataclass, field

import dagster as dg
import ibis
import pandera.backends.ibis.builtin_checks  # noqa: F401  (registers the ibis implementations of builtin checks)
import pandera.ibis as pa
from pandera.api.function_dispatch import Dispatcher
from pandera.api.ibis.types import IbisData
from pandera.backends.ibis.register import register_ibis_backends
from pandera.config import ValidationDepth, config_context

from medflow_assets.landing.partitions import TRANSIENT_RETRY
from medflow_assets.resources import WAREHOUSE_POOL, WarehouseResource, only_transient_retried, open_warehouse

MAX_KEYS = 10


@dataclass
class TableValidation:
    table: str
    rows_checked: int = 0
    rules_checked: int = 0
    failures: dict[str, int] = field(default_factory=dict)   # rule -> failing rows (only > 0)
    structural: list[str] = field(default_factory=list)      # missing columns, wrong types
    failing_keys: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    scope: str = "whole table"

    @property
    def passed(self) -> bool:
        return not self.failures and not self.structural

    def metadata(self) -> dict:
        rows = "\n".join(f"| {rule} | {n} |" for rule, n in sorted(self.failures.items(), key=lambda kv: -kv[1]))
        return {
            "table": self.table,
            "scope": self.scope,
            "rows_checked": dg.MetadataValue.int(self.rows_checked),
            "rules_checked": dg.MetadataValue.int(self.rules_checked),
            "rules_failed": dg.MetadataValue.int(len(self.failures) + len(self.structural)),
            "failing_rows_total": dg.MetadataValue.int(sum(self.failures.values())),
            "failures_per_rule": dg.MetadataValue.md(
                "| rule | failing rows |\n|---|---|\n" + (rows or "| (none) | 0 |")),
            "structural_errors": "; ".join(self.structural) or "none",
            "failing_keys": dg.MetadataValue.text("\n".join(self.failing_keys) or "none"),
            "duration_s": dg.MetadataValue.float(round(self.duration_s, 3)),
        }


def _bound_column(out, table: ibis.Table, column: str):
    """The boolean expression a builtin ibis check built for `column`, bound to `table`."""
    if isinstance(out, ibis.Table):
        op = out.op()
        if getattr(op, "parent", None) == table.op() and column in getattr(op, "values", {}):
            return op.values[column].to_expr()
        raise TypeError(f"cannot fold check output for column {column!r} into one query")
    return out


@ibis.udf.scalar.builtin
def regexp_full_match(value: str, pattern: str) -> bool:
    """DuckDB's regexp_full_match: True when the whole string matches `pattern`."""


def pattern_spans_whole_string(pattern: str) -> bool:
    """True when `pattern` is `^...$` with both anchors binding all of it: no `|` outside parentheses and
    brackets (`^a|b$` is `(^a)|(b$)`), and the final `$` not escaped. Matching such a pattern anywhere in a
    string is the same as matching the whole string with it. Conservative: anything it does not follow
    (flags `(?i)`, quoting `\\Q...\\E`, a `[` inside a class such as `[[:alpha:]]`, a quantifier on `^`,
    unbalanced parentheses) answers False, and Pandera's own expression is used."""
    if len(pattern) < 2 or not (pattern.startswith("^") and pattern.endswith("$")) or pattern[1:2] in "*+?{":
        return False
    inner, i, depth, in_class = pattern[1:-1], 0, 0, False
    while i < len(inner):
        c = inner[i]
        if c == "\\":
            if inner[i + 1:i + 2] == "Q":
                return False
            i += 2
            continue
        if in_class:
            if c == "[":
                return False
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 1
            # a ']' first in a class (after an optional '^') is a literal ']'
            i += inner[i:i + 1] == "^"
            i += inner[i:i + 1] == "]"
            continue
        elif c == "(":
            if inner[i + 1:i + 2] == "?" and inner[i + 2:i + 3] != ":":
                return False
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                return False
        elif c == "|" and depth == 0:
            return False
        i += 1
    return i == len(inner) and depth == 0 and not in_class  # i > len: the '$' was escaped


def fast_builtin_check(check: pa.Check, column: ibis.Column) -> ibis.Expr | None:
    """The expression of a Pandera builtin check, written so DuckDB runs it faster, or None for Pandera's own.
    Same answer on every value, NULL included (tests/test_quality.py compares both on edge cases):
    - str_matches on a pattern spanning the whole string: `regexp_full_match` instead of Pandera's
      `regexp_matches` (a search): 5x faster on a 10-character NPI, 1.3x on a 64-character key;
    - isin / notin of strings: one list lookup instead of a chain of comparisons: 7x faster on 26 values.
    At 10M lines every check together takes half the time (`benchmarks/probes.py checks`: 15.2 s -> 7.3 s;
    BENCHMARKS.md, session 23)."""
    # Pandera's builtin checks dispatch per backend; a custom check is a plain function, whatever its name
    if not isinstance(check._check_fn, Dispatcher) or not column.type().is_string():
        return None
    kwargs = check._check_kwargs
    if check.name == "str_matches" and isinstance(kwargs.get("pattern"), str) \
            and pattern_spans_whole_string(kwargs["pattern"]):
        return regexp_full_match(column, kwargs["pattern"])
    # (Pandera keeps the values as a frozenset; a string given to isin is already its set of characters)
    values = kwargs.get("allowed_values" if check.name == "isin" else "forbidden_values")
    if check.name in ("isin", "notin") and values and all(isinstance(v, str) for v in values):
        found = ibis.literal(sorted(values), type="array<string>").contains(column)
        return found if check.name == "isin" else ~found
    return None


def check_expressions(schema: pa.DataFrameSchema, t: ibis.Table) -> dict[str, ibis.Expr]:
    """rule name -> boolean expression that is True on a failing row."""
    register_ibis_backends()
    failing: dict[str, ibis.Expr] = {}
    for name, col in schema.columns.items():
        if name not in t.columns:
            continue
        if not col.nullable:
            failing[f"{name}.not_null"] = t[name].isnull()
        for check in col.checks:
            if check.element_wise:
                raise ValueError(f"{schema.name}.{name}: element-wise checks run in Python; write a vectorized one")
            ok = fast_builtin_check(check, t[name])
            if ok is None:
                ok = _bound_column(check._check_fn(IbisData(t, key=name), **check._check_kwargs), t, name)
            if check.ignore_na:
                ok = ok | t[name].isnull()
            failing[f"{name}.{check.name}"] = ~ok
    for check in schema.checks:
        ok = check._check_fn(IbisData(t), **check._check_kwargs)
        failing[f"table.{check.name}"] = (~ok).fill_null(False)
    return failing


def validate_table(con: ibis.BaseBackend, relation: str, model: type[pa.DataFrameModel],
                   key_columns: list[str], source_files: list[str] | None = None,
                   scope_through: tuple[str, str] | None = None) -> TableValidation:
    """Validate `schema.table` in the database. Returns counts; raises nothing for bad data.

    source_files: validate only the rows of these landed files (the partitions a run processed), so a
    run for one new file checks that file, not the whole warehouse. Uniqueness is then checked among them
    (a line another file holds too is a version of it: silver_claim_lines keeps the latest, and dbt's
    scoped uniqueness test counts the run's lines over the whole table).
    scope_through: (column, "schema.table") for a table without source_file: validate its rows whose
    `column` occurs in those files' rows of that table (the members a run's claim lines refer to)."""
    start = time.perf_counter()
    schema_name, table_name = relation.split(".")
    result = TableValidation(table=relation)
    if table_name not in con.list_tables(database=schema_name):
        result.structural.append(f"table {relation} does not exist")
        return result
    t = con.table(table_name, database=schema_name)
    if source_files is not None and "source_file" in t.columns:
        t = t.filter(t.source_file.isin(source_files))
        result.scope = f"rows of the {len(source_files)} landed file(s) of this run"
    elif source_files is not None and scope_through is not None:
        column, via = scope_through
        via_schema, via_table = via.split(".")
        src = con.table(via_table, database=via_schema)
        t = t.filter(t[column].isin(src.filter(src.source_file.isin(source_files))[column]))
        result.scope = f"rows whose {column} occurs in the {len(source_files)} landed file(s) of this run"
    schema = model.to_schema()
    # Structure (columns present, types): Pandera's own validation at schema depth, no data read.
    try:
        with config_context(validation_depth=ValidationDepth.SCHEMA_ONLY):
            schema.validate(t, lazy=True)
    except pa.errors.SchemaErrors as err:
        for errors in (err.message or {}).get("SCHEMA", {}).values():
            result.structural += [f"{e.get('column')}: {e.get('error')}" for e in errors]
    failing = check_expressions(schema, t)
    aliases = {f"r{i}": rule for i, rule in enumerate(failing)}
    counts = t.aggregate(__rows=t.count(), **{a: failing[r].cast("int64").sum() for a, r in aliases.items()})
    row = counts.to_pyarrow().to_pylist()[0]
    result.rows_checked = int(row["__rows"])
    result.failures = {rule: int(row[a] or 0) for a, rule in aliases.items() if row[a]}
    result.rules_checked = len(failing)
    keys = [k for k in key_columns if k in t.columns]
    if schema.unique:
        cols = list(schema.unique)
        dups = t.group_by(cols).aggregate(__n=t.count()).filter(lambda d: d.__n > 1)
        n_extra = dups.aggregate(extra=(dups.__n - 1).sum()).to_pyarrow().to_pylist()[0]["extra"] or 0
        result.rules_checked += 1
        if n_extra:
            rule = f"unique({', '.join(cols)})"
            result.failures[rule] = int(n_extra)
            for r in dups.select(cols).limit(MAX_KEYS).to_pyarrow().to_pylist():
                result.failing_keys.append(f"{rule}: " + ", ".join(f"{k}={r[k]}" for k in cols))
    for rule in [r for r in aliases.values() if r in result.failures]:
        if len(result.failing_keys) >= MAX_KEYS or not keys:
            break
        sample = t.filter(failing[rule]).select(keys).limit(min(3, MAX_KEYS - len(result.failing_keys)))
        for r in sample.to_pyarrow().to_pylist():
            result.failing_keys.append(f"{rule}: " + ", ".join(f"{k}={r[k]}" for k in keys))
    result.duration_s = time.perf_counter() - start
    return result


def connect_ibis(warehouse: WarehouseResource) -> ibis.BaseBackend:
    con = open_warehouse(warehouse.path, read_only=True,
                         config={"memory_limit": warehouse.checks_memory_limit, "threads": warehouse.threads})
    return ibis.duckdb.from_connection(con)


@dataclass(frozen=True)
class SchemaCheck:
    """One Pandera schema guarding one table: becomes one asset check."""

    asset_key: dg.AssetKey
    relation: str                    # "schema.table" in the warehouse
    model: type[pa.DataFrameModel]
    key_columns: tuple[str, ...]     # shown for failing rows; lineage or grain columns, never PII
    blocking: bool
    scope_through: tuple[str, str] | None = None  # see validate_table: for tables without source_file

    @property
    def name(self) -> str:
        return f"pandera_{self.model.__name__}"

    @property
    def key(self) -> dg.AssetCheckKey:
        return dg.AssetCheckKey(self.asset_key, self.name)

    def spec(self) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            self.name, asset=self.asset_key, blocking=self.blocking,
            description=f"Pandera schema {self.model.__name__} on {self.relation}, validated in DuckDB"
                        + (" (blocking: a failure stops downstream assets)" if self.blocking else ""))

    def run(self, con: ibis.BaseBackend, log, source_files: list[str] | None = None) -> dg.AssetCheckResult:
        v = validate_table(con, self.relation, self.model, list(self.key_columns), source_files, self.scope_through)
        if not v.passed:
            log.warning(f"{self.name} on {self.relation}: {len(v.failures)} rules failed, "
                        f"{sum(v.failures.values())} failing rows; {'; '.join(v.structural)}")
        return dg.AssetCheckResult(
            asset_key=self.asset_key, check_name=self.name, passed=v.passed, metadata=v.metadata(),
            severity=dg.AssetCheckSeverity.ERROR if self.blocking else dg.AssetCheckSeverity.WARN,
            description=(f"{v.rows_checked} rows, {v.rules_checked} rules: all passed" if v.passed else
                         f"{v.rows_checked} rows: failed " + ", ".join(
                             f"{r} ({n})" for r, n in sorted(v.failures.items(), key=lambda kv: -kv[1])[:5])
                         + ("; " + "; ".join(v.structural) if v.structural else "")
                         + ("; e.g. " + "; ".join(v.failing_keys[:3]) if v.failing_keys else "")),
        )


def run_source_files(context) -> list[str] | None:
    """The landed files (partitions) this run processed, from its tags; None = the whole table: not a
    partitioned run, or a run over every landed file (a first load), where filtering 10M rows by file
    would only cost time (~2 s at 10M)."""
    from medflow_assets.landing.partitions import landing_file_partitions

    tags = context.run.tags
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if tags.get("dagster/partition"):
        start = end = tags["dagster/partition"]
    if not (start and end):
        return None
    keys = context.instance.get_dynamic_partitions(landing_file_partitions.name)
    if start not in keys or end not in keys:
        return None
    files = keys[keys.index(start): keys.index(end) + 1]
    return None if len(files) == len(keys) else files


def schema_checks(name: str, checks: list[SchemaCheck], extra_specs: list[dg.AssetCheckSpec] = (),
                  extra=None) -> dg.AssetChecksDefinition:
    """One Dagster step running several schema checks over one read-only connection (a step per check
    would cost ~0.1 s of orchestration each). `extra(con, context)` yields results for `extra_specs`.
    A warehouse another process holds past the wait is retried like the dbt steps (TRANSIENT_RETRY); the
    connection is opened before the first result, so a retried attempt reports each check once. An error in
    a check fails the step at once, named (only_transient_retried), and a failed blocking check is not
    retried either: Dagster fails the step after its results, outside the retry policy."""

    @dg.multi_asset_check(name=name, specs=[c.spec() for c in checks] + list(extra_specs), can_subset=True,
                          pool=WAREHOUSE_POOL, retry_policy=TRANSIENT_RETRY)
    def _checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
        selected = context.selected_asset_check_keys
        with only_transient_retried(name, warehouse):
            files = run_source_files(context)
            con = connect_ibis(warehouse)
            try:
                for check in checks:
                    if check.key in selected:
                        yield check.run(con, context.log, files)
                if extra is not None and any(s.key in selected for s in extra_specs):
                    yield from extra(con.con, context)
            finally:
                con.disconnect()

    return _checks
