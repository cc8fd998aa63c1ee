"""Pandera (ibis backend) schemas for every bronze, silver and gold table.

They are validated inside DuckDB by medflow_assets/quality/factory.py: the checks below compile to SQL;
no table is loaded into pandas. Dataframe-level checks return boolean column expressions.

One owner per rule: these schemas own column contracts (types, nulls, formats, ranges, rules across
columns) everywhere, and the grain of gold (blocking, after the gold build); the grain (uniqueness) and
references of bronze and silver are dbt tests (dbt_project/models/*/schema.yml), which run inside the build
and count a run's keys over the whole table. A rule over 10M rows runs once.
"""

import csv
import datetime

import ibis.expr.datatypes as dt
import pandera.ibis as pa
from pandera.ibis import Field

from medflow_assets.settings import DBT_PROJECT_DIR

ICD10_CM = r"^[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4}$"
CPT_HCPCS = r"^([0-9]{4}[0-9FTU]|[A-V][0-9]{4})$"
NPI = r"^[12][0-9]{9}$"
PLACE_OF_SERVICE = r"^[0-9]{2}$"
HMAC_HEX = r"^[0-9a-f]{64}$"
STATUSES = ["paid", "denied", "pending", "adjusted", "reversed"]
MONEY = dt.Decimal(12, 2)
# Safe Harbor: three-digit ZIP areas of 20,000 people or fewer are reported as 000 (the dbt seed silver uses)
with (DBT_PROJECT_DIR / "seeds" / "safe_harbor_restricted_zip3.csv").open() as _f:
    RESTRICTED_ZIP3 = sorted(row["zip3"] for row in csv.DictReader(_f))


with (DBT_PROJECT_DIR / "seeds" / "departments.csv").open() as _f:
    DEPARTMENTS = sorted(row["department"] for row in csv.DictReader(_f))


def _zip3() -> object:
    return Field(nullable=True, str_matches=r"^[0-9]{3}$", notin=RESTRICTED_ZIP3)


class _Lineage(pa.DataFrameModel):
    """Lineage every bronze and silver row carries. Its formats are checked where it is born (bronze):
    silver copies it, and a regex over 64 characters costs ~0.9 s per 10M rows each time it runs."""
    payer: dt.String = Field(nullable=False)
    source_file: dt.String = Field(nullable=False)
    file_checksum: dt.String = Field(nullable=False)
    source_row_number: dt.Int64 = Field(nullable=False, ge=1)
    ingested_at: dt.Timestamp(scale=6) = Field(nullable=False)

    class Config:
        strict = False


class BronzeClaimLines(_Lineage):
    """Raw text as landed; only lineage is constrained."""

    payer: dt.String = Field(nullable=False, str_matches=r"^[a-z][a-z0-9_]+$")
    file_checksum: dt.String = Field(nullable=False, str_matches=r"^[0-9a-f]{64}$")

    claim_id: dt.String = Field(nullable=True)
    service_date: dt.String = Field(nullable=True)
    billed_amount: dt.String = Field(nullable=True)
    claim_status: dt.String = Field(nullable=True)


class SilverClaimLines(_Lineage):
    claim_id: dt.String = Field(nullable=False)
    claim_line_number: dt.Int32 = Field(nullable=False, ge=1)
    member_key: dt.String = Field(nullable=False, str_matches=HMAC_HEX)
    birth_year: dt.Int64 = Field(nullable=True, ge=1900)
    gender: dt.String = Field(nullable=False, isin=["F", "M", "U"])
    zip3: dt.String = _zip3()
    provider_npi: dt.String = Field(nullable=False, str_matches=NPI)
    department: dt.String = Field(nullable=False, isin=DEPARTMENTS)
    diagnosis_code: dt.String = Field(nullable=False, str_matches=ICD10_CM)
    procedure_code: dt.String = Field(nullable=False, str_matches=CPT_HCPCS)
    place_of_service: dt.String = Field(nullable=True, str_matches=PLACE_OF_SERVICE)
    service_date: dt.Date = Field(nullable=False)
    paid_date: dt.Date = Field(nullable=True)
    billed_amount: MONEY = Field(nullable=False)
    allowed_amount: MONEY = Field(nullable=False)
    paid_amount: MONEY = Field(nullable=False)
    claim_status: dt.String = Field(nullable=False, isin=STATUSES)
    denial_reason_code: dt.String = Field(nullable=True, str_matches=r"^[0-9A-Z]{1,4}$")

    @pa.dataframe_check
    def zero_le_paid_le_allowed_le_billed_mirrored_for_reversals(cls, data):
        t = data.table
        reversal = ((t.billed_amount <= t.allowed_amount) & (t.allowed_amount <= t.paid_amount)
                    & (t.paid_amount <= 0))
        other = (t.paid_amount >= 0) & (t.paid_amount <= t.allowed_amount) & (t.allowed_amount <= t.billed_amount)
        return ((t.claim_status == "reversed") & reversal) | ((t.claim_status != "reversed") & other)

    @pa.dataframe_check
    def denied_and_pending_lines_pay_nothing(cls, data):
        t = data.table
        return ~t.claim_status.isin(["denied", "pending"]) | (t.paid_amount == 0)

    @pa.dataframe_check
    def dates_from_1900_to_a_day_after_the_load(cls, data):
        t = data.table
        return (t.service_date >= datetime.date(1900, 1, 1)) & (
            t.paid_date.isnull() | (t.paid_date.delta(t.ingested_at.date(), unit="day") <= 1))

    @pa.dataframe_check
    def paid_date_not_before_service_date(cls, data):
        t = data.table
        return t.paid_date.isnull() | (t.paid_date >= t.service_date)

    @pa.dataframe_check
    def service_date_at_most_a_day_after_the_load(cls, data):
        t = data.table
        return t.service_date.delta(t.ingested_at.date(), unit="day") <= 1

    @pa.dataframe_check
    def born_in_or_before_the_year_of_service(cls, data):
        t = data.table
        return t.birth_year.isnull() | (t.birth_year <= t.service_date.year())


class SilverClaimLinesValidated(_Lineage):
    """The physical silver table: every bronze row, parsed, with the rules it broke. The member_key format
    is checked on the rows that go on (SilverClaimLines, blocking)."""

    member_key: dt.String = Field(nullable=True)

    @pa.dataframe_check
    def rule_list_present(cls, data):
        return data.table.failed_rules.notnull()

    @pa.dataframe_check
    def only_good_lines_are_superseded(cls, data):
        t = data.table
        return t.superseded_by.isnull() | (t.failed_rules.length() == 0)


class SilverMembers(pa.DataFrameModel):
    payer: dt.String = Field(nullable=False)
    member_key: dt.String = Field(nullable=False, str_matches=HMAC_HEX)
    name_key: dt.String = Field(nullable=True, str_matches=HMAC_HEX)
    email_key: dt.String = Field(nullable=True, str_matches=HMAC_HEX)
    phone_key: dt.String = Field(nullable=True, str_matches=HMAC_HEX)
    ssn_key: dt.String = Field(nullable=True, str_matches=HMAC_HEX)
    birth_year: dt.Int64 = Field(nullable=True, in_range={"min_value": 1900, "max_value": 2030})
    gender: dt.String = Field(nullable=False, isin=["F", "M", "U"])
    zip3: dt.String = _zip3()

    class Config:
        strict = False


class SilverClaimsQuarantine(_Lineage):
    failed_rule_count: dt.Int64 = Field(nullable=False, ge=1)

    @pa.dataframe_check
    def every_row_names_its_rules(cls, data):
        t = data.table
        return t.failed_rules.length() == t.failed_rule_count


class SilverDataQualityLog(pa.DataFrameModel):
    payer: dt.String = Field(nullable=False)
    source_file: dt.String = Field(nullable=False)
    rule_id: dt.String = Field(nullable=False)
    rows_checked: dt.Int64 = Field(nullable=False, ge=0)
    rows_failed: dt.Int64 = Field(nullable=False, ge=0)
    rows_quarantined: dt.Int64 = Field(nullable=False, ge=0)
    rows_superseded: dt.Int64 = Field(nullable=False, ge=0)

    @pa.dataframe_check
    def failures_within_rows_checked(cls, data):
        t = data.table
        return (t.rows_failed <= t.rows_quarantined) & (
            t.rows_quarantined + t.rows_superseded <= t.rows_checked)

    class Config:
        strict = False


def _rate() -> object:
    return Field(nullable=False, in_range={"min_value": 0, "max_value": 1})


class ClaimsMonthlySummary(pa.DataFrameModel):
    service_month: dt.Date = Field(nullable=False)
    payer: dt.String = Field(nullable=False)
    lines: dt.Int64 = Field(nullable=False, ge=1)
    claims: dt.Int64 = Field(nullable=False, ge=1)
    members: dt.Int64 = Field(nullable=False, ge=1)
    billed_amount: dt.Decimal(38, 2) = Field(nullable=False)
    paid_amount: dt.Decimal(38, 2) = Field(nullable=False)
    denial_rate: dt.Float64 = _rate()

    @pa.dataframe_check
    def claims_and_members_within_lines(cls, data):
        t = data.table
        return (t.claims <= t.lines) & (t.members <= t.claims) & (t.denied_lines <= t.lines)

    class Config:
        strict = False
        unique = ["service_month", "payer"]


class ClaimsApprovalFunnel(pa.DataFrameModel):
    payer: dt.String = Field(nullable=False)
    service_month: dt.Date = Field(nullable=False)
    submitted_lines: dt.Int64 = Field(nullable=False, ge=1)
    adjudicated_lines: dt.Int64 = Field(nullable=False, ge=0)
    approval_rate: dt.Float64 = _rate()
    adjudication_rate: dt.Float64 = _rate()

    @pa.dataframe_check
    def stages_add_up(cls, data):
        t = data.table
        return (t.paid_lines + t.denied_lines + t.pending_lines + t.adjusted_lines + t.reversed_lines
                == t.submitted_lines) & (t.adjudicated_lines == t.submitted_lines - t.pending_lines)

    class Config:
        strict = False
        unique = ["payer", "service_month"]


class ProviderPerformance(pa.DataFrameModel):
    provider_npi: dt.String = Field(nullable=False, str_matches=NPI)
    lines: dt.Int64 = Field(nullable=False, ge=1)
    claims: dt.Int64 = Field(nullable=False, ge=1)
    denial_rate: dt.Float64 = _rate()
    avg_days_to_payment: dt.Float64 = Field(nullable=True, ge=0)

    class Config:
        strict = False
        unique = ["provider_npi"]


class PayerProviderStats(pa.DataFrameModel):
    """Additive per NPI x payer parts of provider_performance."""
    provider_npi: dt.String = Field(nullable=False, str_matches=NPI)
    payer: dt.String = Field(nullable=False)
    lines: dt.Int64 = Field(nullable=False, ge=1)
    claims: dt.Int64 = Field(nullable=False, ge=1)
    members: dt.Int64 = Field(nullable=False, ge=1)
    approved_lines: dt.Int64 = Field(nullable=False, ge=0)
    through_load_id: dt.Int64 = Field(nullable=False, ge=1)

    @pa.dataframe_check
    def parts_within_lines(cls, data):
        t = data.table
        return ((t.claims <= t.lines) & (t.denied_lines <= t.lines)
                & (t.approved_lines <= t.lines) & (t.paid_lines_with_date <= t.lines))

    @pa.dataframe_check
    def members_within_claims_each_claim_one_member(cls, data):
        """More members than claims: some claim's lines name more than one member. Silver quarantines such
        a claim (claim_member_mismatch within a file, claim_member_conflict across files); this is the second
        guard, for a silver table changed outside the models. The failing keys name the NPI and payer."""
        t = data.table
        return t.members <= t.claims

    class Config:
        strict = False
        unique = ["provider_npi", "payer"]


class PayerDepartmentStats(pa.DataFrameModel):
    """Additive per department x payer parts of department_revenue."""
    department: dt.String = Field(nullable=False, isin=DEPARTMENTS)  # no free text in gold
    payer: dt.String = Field(nullable=False)
    visits: dt.Int64 = Field(nullable=False, ge=1)
    lines: dt.Int64 = Field(nullable=False, ge=1)
    pending_revenue: dt.Decimal(38, 2) = Field(nullable=False, ge=0)
    through_load_id: dt.Int64 = Field(nullable=False, ge=1)

    @pa.dataframe_check
    def parts_within_lines(cls, data):
        t = data.table
        return (t.visits <= t.lines) & (t.lines_not_reversed <= t.lines)

    class Config:
        strict = False
        unique = ["department", "payer"]


class DepartmentRevenue(pa.DataFrameModel):
    department: dt.String = Field(nullable=False, isin=DEPARTMENTS)
    visits: dt.Int64 = Field(nullable=False, ge=1)
    lines: dt.Int64 = Field(nullable=False, ge=1)
    pending_revenue: dt.Decimal(38, 2) = Field(nullable=False, ge=0)

    class Config:
        strict = False
        unique = ["department"]
