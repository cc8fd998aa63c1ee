{#- Versions of a line across files ("adjustments resolve", DESIGN section 3). A line is payer + claim id +
    line number. A second copy in the same file is quarantined as duplicate_line (the model decides that),
    except a reversal and one copy that is not a reversal: a reversal and its correction sent together, or
    a line and its void. That pair is two versions, ordered within their file (pair_rank): the reversal
    first when the last earlier file holding the line holds a copy that is not a reversal (it takes that
    back, and the correction is the line), else second (it takes back the copy in its own file: the line
    nets to 0). A version moved next to another (files landed out of order, below) is moved next to that
    one row, not its whole file (version_pair).
    A copy in another file is a version of the line: a payer's adjustment, reversal or finished
    adjudication sent in a later file. Of the copies that broke no rule, ordered by when their file first
    landed under its name (landing.landing_file_registry.first_landed_at, kept through the file's
    corrections; then the file name; then pair_rank; files that landed out of order: below):
    - the latest is the line: it alone is in silver_claim_lines and gold;
    - each earlier one stays in silver_claim_lines_validated with superseded_by = the next version's file
      (counted as rows_superseded in the data-quality log, never quarantined: it was a good line);
    - a reversal takes back the latest earlier version that is not a reversal (`reverses` = its file). It
      must take back exactly that version's amounts (billed, allowed and paid negated), else it is
      quarantined as reversal_mismatch and replaces nothing. silver_claim_lines shows such a reversal with
      amounts 0 (the version's and the reversal's, netted), so gold counts the line as reversed and pays 0.
      A reversal of a line no file in the warehouse holds (or a re-sent copy of one) keeps its own negative
      amounts, as before. A reversal whose line an earlier file holds only as a rejected copy that is not
      a reversal (quarantined for a rule of its own: gold never counted its payment) is quarantined as
      reversal_of_rejected_line until that copy is corrected (or its line lands late, below); it would
      otherwise take back money gold never showed. Comparing with the last version that is not a reversal, rather
      than the version just before, keeps a re-sent reversal a reversal of the same line.
    - a reversal that landed before the line it takes back (files land out of order) is ordered right after
      that line once it lands, and takes it back as above: when the reversal has no earlier version that is
      not a reversal, and the line's next version that is not a reversal carries exactly its amounts negated
      and was paid on or before the reversal's paid_date. That version's superseded_by then names the
      reversal's file, which landed earlier, and the reversal's `reverses` a file that landed later. A
      version paid after the reversal is a new payment (the payer voided the line and paid it again): it
      stays the line, and the reversal is superseded by it. When either has no paid date, it stays the
      line too.
    - a version that is neither an adjustment nor a reversal (paid, denied, pending) that landed after an
      adjustment of its line paid later than it is the version that adjustment replaced, landed late or
      sent again: it is ordered right before the first such adjustment to land, so it replaces neither that
      adjustment nor what came after it. A version paid on or after the day of every earlier adjustment is a
      new adjudication and keeps its place (on the same day the files do not tell which came first), as
      does one with no paid date, and any version after versions that landed out of the order of their
      paid dates. Adjustments among themselves keep the order they landed in.
    A copy that broke a rule of its own never replaces a good one.
    The current lines of one claim (each line's latest version, from whichever file) must name one member:
    when they name more than one, each of them is quarantined as claim_member_conflict (the files do not say
    which member is meant) and the versions they replaced stay replaced, until a file sends the claim's lines
    naming one member (a correction of the member sends every line of the claim again). A reversal that is a
    line's latest version is one of the claim's lines, so its member counts: a reversal naming another
    member than the claim's other lines puts the claim in conflict. A reversal is not compared with the
    member of the version it takes back: a payer correcting a claim's member sends its reversed lines again
    as reversals under the new member, and those must still take the versions back. So a one-line claim
    reversed under another member nets, and shows under the reversal's member. A reversal of a line
    quarantined this way is not reversal_of_rejected_line (the line broke no rule of its own); while the
    claim is in conflict it is quarantined with the claim's other lines. The model compares the lines of a claim within one file
    (claim_member_mismatch).
    resolve_line_versions() (the model's post-hook, in its transaction) decides this again for every copy of
    the lines of the claims the run's files hold now or held before the run: a corrected file that no longer
    holds a line gives it back to the version before. On a first load or a run over every landed file it
    looks at every claim with rows in more than one file, and every claim with such a pair in one file (the
    model stores the pair's second row superseded by its own file until this hook decides). Files whose rows
    change this way are listed in landing.dq_log_recount; silver_data_quality_log counts them again in the
    same dbt invocation and empties the list (a failed invocation leaves it for the next one). -#}

{% macro recount_table() -%}landing.dq_log_recount{%- endmacro %}

{#- Bronze fields whose raw text the quarantine shows (as raw_<field>; no PII among these). -#}
{% macro quarantine_raw_fields() -%}
{{ return(['claim_line_number', 'service_date', 'paid_date', 'billed_amount', 'allowed_amount', 'paid_amount',
           'claim_status', 'diagnosis_code']) }}
{%- endmacro %}

{#- The claims the run's files hold in this table. -#}
{% macro run_claims() -%}
select distinct payer, claim_id from {{ this }}
where source_file in {{ selected_files() }} and claim_id is not null
{%- endmacro %}

{#- Pre-hook, before replace_run_files(): the claims the run's files held before this run. -#}
{% macro remember_run_claims() -%}
{%- if is_incremental() and not run_covers_every_file() -%}
create or replace temp table medflow_run_claims as
{{ run_claims() }}
{%- endif -%}
{%- endmacro %}

{#- Post-hook: the run's claims now, then every copy of the lines of the claims held before or now ranked
    again, and the claims' current lines compared; rows whose verdict changed are updated. A row that becomes rejected (a rule of this hook) gets the raw text the
    quarantine shows from bronze; a row accepted again keeps none (as the model stores accepted rows). -#}
{% macro resolve_line_versions() -%}
{%- set raw_fields = quarantine_raw_fields() -%}
{%- set partial = is_incremental() and not run_covers_every_file() -%}
{%- set order = "partition by payer, claim_id, claim_line_number order by landed, source_file, pair_rank" -%}
{%- set version_order = "partition by payer, claim_id, claim_line_number order by version_landed, version_file, "
                        ~ "version_pair, version_rank, landed, source_file, pair_rank" -%}
{%- set hook_rules = "['reversal_mismatch', 'reversal_of_rejected_line', 'claim_member_conflict']" -%}
{%- if partial -%}
insert into medflow_run_claims {{ run_claims() }};
{%- endif %}
create or replace temp table medflow_version_changes as
with copies as (
  select t.source_file, t.source_row_number, t.payer, t.claim_id, t.claim_line_number, t.claim_status,
         t.billed_amount, t.allowed_amount, t.paid_amount, t.paid_date, t.member_key, t.superseded_by,
         t.reverses,
         list_filter(t.failed_rules, r -> list_contains({{ hook_rules }}, r)) as was_rules,
         {#- broke no rule of its own (only the rules this hook gives can change here) -#}
         len(list_filter(t.failed_rules, r -> not list_contains({{ hook_rules }}, r))) = 0 as candidate,
         list_contains(t.failed_rules, 'duplicate_line') as second_in_file,
         coalesce(r.first_landed_at, r.first_seen_at, t.ingested_at) as landed
  from {{ this }} t
  left join {{ source('landing', 'landing_file_registry') }} r on r.source_file = t.source_file
  where (t.payer, t.claim_id) in (
  {%- if partial %}
    select (payer, claim_id) from medflow_run_claims
  {%- else %}
    {#- every claim with rows in more than one file (a line held in more than one file is such a claim's).
        The files are told apart by hash(source_file): per 10M rows min/max over the text took 4.4-5.1 s,
        over its 64-bit hash 0.86-1.22 s, as the group over the line keys it replaces, 1.00-1.27 s
        (benchmarks/probes.py claim-scope); two file names of one claim with one hash would leave that
        claim to the next partial run of either file. -#}
    select (payer, claim_id) from {{ this }}
    where claim_id is not null
    group by all having min(hash(source_file)) <> max(hash(source_file))
    {#- a reversal and another copy of a line in one file (the model marks the pair's second row) -#}
      or bool_or(superseded_by is not null)
  {%- endif %})
),
line_files as (
  {#- each file's copies of a line (a second copy in one file not counted): how many, and whether one is not a
      reversal (its own rules do not matter, as for rejected_before) -#}
  select payer, claim_id, claim_line_number, source_file, any_value(landed) as landed, count(*) as copies_here,
         bool_or(claim_status is distinct from 'reversed') as holds_line
  from copies where not second_in_file and claim_line_number is not null
  group by all
),
in_file_pairs as (
  {#- a reversal and one other copy of a line in one file (the model let them pass as not duplicate_line):
      the reversal comes first when the last earlier file that holds the line holds a copy that is not a
      reversal (the payer reversed that version and sends its correction), else second (the line and its
      void in one file; also when the line was voided before: a void of the new copy, not a second void) -#}
  select payer, claim_id, claim_line_number, source_file, copy_before
  from (select *, coalesce(lag(holds_line) over (partition by payer, claim_id, claim_line_number
                                                 order by landed, source_file), false) as copy_before
        from line_files)
  where copies_here = 2
),
paired as (
  {#- pair_rank orders the two copies of such a pair (0 first, 1 second); every other row has 0 -#}
  select c.*, case when i.copy_before is null or coalesce(c.claim_status = 'reversed', false) = i.copy_before then 0
                     else 1 end
                as pair_rank
  from copies c
  left join in_file_pairs i using (payer, claim_id, claim_line_number, source_file)
),
ranked as (
  {#- how many rejected copies of the line that are not reversals earlier files hold (a second copy in one
      file is not counted; a copy whose status is unknown is) -#}
  select *, coalesce(sum(case when not candidate and not second_in_file
                                   and claim_status is distinct from 'reversed' then 1 else 0 end) over (
      {{ order }} rows between unbounded preceding and 1 preceding), 0) as rejected_before
  from paired
),
ordered as (
  {#- Files that land out of order. Each version is ordered by when its file landed, except:
      - a reversal that landed before the line it takes back: a reversal with no earlier version that is
        not a reversal, whose next version that is not a reversal (`next_line`) carries exactly its amounts
        negated and was paid on or before the reversal's paid date. That version is the line the reversal
        took back, landed late: the reversal is ordered right after it (rank 2; several such reversals in
        the order they landed), so it takes it back as if the files had landed the other way round. A
        version paid after the reversal is a new payment of the line (the payer voided it and paid it
        again) and stays the line.
      - a version that is neither an adjustment nor a reversal (paid, denied, pending), landed after an
        adjustment of its line paid later than it: the version the adjustment replaced, landed late (or
        sent again). It is ordered right before the first such adjustment to land (rank 0), so it does
        not replace that adjustment or what came after it. A version paid on or after the day of every
        earlier adjustment is a new adjudication (say a payment again after a void on the adjustment's
        day) and keeps its place; so does one with no paid date, and so does every version when the
        versions that landed before it did not come in the order of their paid dates (a version paid
        later landed before one paid earlier: which one it replaced is not told by the files).
      Every other version has rank 1: a version moved next to another sorts before it (rank 0) or after it
      (rank 2). The pandas peer's late_lines_first() orders the same way. -#}
  select *,
         case when after_line then 2 when before_adjustment is not null then 0 else 1 end as version_rank,
         case when after_line then next_line['landed'] when before_adjustment is not null
              then before_adjustment['landed'] else landed end as version_landed,
         case when after_line then next_line['source_file'] when before_adjustment is not null
              then before_adjustment['source_file'] else source_file end as version_file,
         {#- next to that one version, not its whole file (which may hold a reversal and another copy) -#}
         case when after_line then next_line['pair_rank'] when before_adjustment is not null
              then before_adjustment['pair_rank'] else pair_rank end as version_pair
  from (
    select *,
           coalesce(claim_status = 'reversed' and not coalesce(line_before, false)
             and next_line['source_file'] <> source_file
             and billed_amount = -next_line['billed_amount'] and allowed_amount = -next_line['allowed_amount']
             and paid_amount = -next_line['paid_amount'] and next_line['paid_date'] <= paid_date, false)
             as after_line,
           {#- [1]: the first of them to land; only when the versions that landed before it came in the
               order of their paid dates (else the files do not tell which one it replaced) -#}
           case when claim_status not in ('adjusted', 'reversed') and paid_date is not null
                     and coalesce(bool_and(after_dated_before) over (
                           w rows between unbounded preceding and 1 preceding), true)
                then list_filter(adjusted_before, a -> a['paid_date'] > paid_date)[1] end as before_adjustment
    from (
      select *,
             bool_or(claim_status <> 'reversed') over (
               w rows between unbounded preceding and 1 preceding) as line_before,
             first_value(case when claim_status <> 'reversed' then {
                 'landed': landed, 'source_file': source_file, 'pair_rank': pair_rank,
                 'billed_amount': billed_amount, 'allowed_amount': allowed_amount, 'paid_amount': paid_amount,
                 'paid_date': paid_date} end
               ignore nulls) over (w rows between 1 following and unbounded following) as next_line,
             {#- the line's adjustments with a paid date that landed earlier, in the order they landed -#}
             list({'landed': landed, 'source_file': source_file, 'pair_rank': pair_rank,
                   'paid_date': paid_date}) filter (where claim_status = 'adjusted' and paid_date is not null) over (
               w rows between unbounded preceding and 1 preceding) as adjusted_before,
             {#- paid on or after every version that landed before it (or no date to tell) -#}
             coalesce(paid_date >= max(paid_date) over (w rows between unbounded preceding and 1 preceding), true)
               as after_dated_before
      from ranked where candidate
      window w as ({{ order }}))
    window w as ({{ order }}))
),
taken_back as (
  {#- for a reversal: the latest earlier version that is not a reversal (reversals are skipped, so whether
      another reversal matched does not matter) -#}
  select *,
    {%- for col in ['source_file', 'billed_amount', 'allowed_amount', 'paid_amount'] %}
    last_value(case when claim_status <> 'reversed' then {{ col }} end ignore nulls) over (
      {{ version_order }} rows between unbounded preceding and 1 preceding) as taken_{{ col }}{{ "," if not loop.last }}
    {%- endfor %}
  from ordered
),
checked as (
  select source_file, source_row_number,
         case when claim_status = 'reversed' then taken_source_file end as reverses,
         case when claim_status = 'reversed' and taken_source_file is not null
                   and not (billed_amount = -taken_billed_amount and allowed_amount = -taken_allowed_amount
                            and paid_amount = -taken_paid_amount) then 'reversal_mismatch'
              when claim_status = 'reversed' and taken_source_file is null and rejected_before > 0
                   then 'reversal_of_rejected_line' end as hook_rule
  from taken_back
),
versions as (
  select source_file, source_row_number, payer, claim_id, member_key, lead(source_file) over w as superseded_by
  from ordered join checked using (source_file, source_row_number)
  where hook_rule is null
  window w as ({{ version_order }})
),
conflicts as (
  {#- claim_member_conflict: the claim's current lines (each line's latest version above, from whichever
      file) name more than one member. Every one of them is quarantined; the versions they replaced stay
      replaced, so the claim is in silver again only once a file sends its lines naming one member. A
      claim's lines within one file are compared by the model (claim_member_mismatch, not candidates). -#}
  select source_file, source_row_number
  from (select source_file, source_row_number,
               min(coalesce(member_key, '')) over claim <> max(coalesce(member_key, '')) over claim as mixed
        from versions where superseded_by is null
        window claim as (partition by payer, claim_id))
  where mixed
),
decided as (
  select *, case when not candidate then was_rules when hook_rule is null then cast([] as varchar[])
                 else [hook_rule] end as rules
  from (
    select c.source_file, c.source_row_number, c.was_rules, c.candidate, c.superseded_by as was_superseded_by,
           c.reverses as was_reverses,
           coalesce(k.hook_rule, case when x.source_file is not null then 'claim_member_conflict' end) as hook_rule,
           v.superseded_by, case when k.hook_rule is null and x.source_file is null then k.reverses end as reverses
    from copies c
    left join checked k using (source_file, source_row_number)
    left join versions v using (source_file, source_row_number)
    left join conflicts x using (source_file, source_row_number))
)
select d.source_file, d.source_row_number, d.candidate, d.hook_rule, d.superseded_by, d.reverses,
  {%- for field in raw_fields %}
  b.{{ field }} as bronze_{{ field }}{{ "," if not loop.last }}
  {%- endfor %}
from decided d
join {{ ref('bronze_claim_lines') }} b using (source_file, source_row_number)
where d.rules <> d.was_rules or d.superseded_by is distinct from d.was_superseded_by
   or d.reverses is distinct from d.was_reverses;
{#- a row that broke no rule of its own gets [] or one of this hook's rules; one that did keeps its rules and
    raw text (only its superseded_by can change: the model's mark on the second of a pair in one file) -#}
update {{ this }} t set
  failed_rules = case when not c.candidate then t.failed_rules when c.hook_rule is not null then [c.hook_rule]
                      else cast([] as varchar[]) end,
  superseded_by = c.superseded_by,
  reverses = c.reverses,
  {%- for field in raw_fields %}
  raw_{{ field }} = case when not c.candidate then t.raw_{{ field }} when c.hook_rule is not null
                         then c.bronze_{{ field }} end{{ "," if not loop.last }}
  {%- endfor %}
from medflow_version_changes c
where t.source_file = c.source_file and t.source_row_number = c.source_row_number;
create table if not exists {{ recount_table() }} (source_file varchar);
{%- if is_incremental() %}
insert into {{ recount_table() }} select distinct source_file from medflow_version_changes
where source_file not in {{ selected_files() }};
{%- endif %}
drop table medflow_version_changes
{%- if partial -%}
;
drop table medflow_run_claims
{%- endif -%}
{%- endmacro %}

{#- The files silver_data_quality_log counts: the run's accepted files; the run's other files that have
    rows in silver (a file rejected since, or gone from the zone, keeps its last good rows, and the run
    decided their versions again); and the files whose rows resolve_line_versions() changed. -#}
{% macro files_to_count() -%}
{%- set recount = none -%}
{%- if not (execute and is_incremental()) -%}
{#- a first build: a file landing rejected has no rows -#}
{{ accepted_run_files() }}
{%- else -%}
  {%- set found = run_query("select count(*) from information_schema.tables where table_schema = 'landing' "
                            ~ "and table_name = 'dq_log_recount'") -%}
  {%- if found.columns[0].values()[0] > 0 -%}{%- set recount = recount_table() -%}{%- endif -%}
(select source_file from {{ accepted_run_files() }} accepted
 union select distinct source_file from {{ ref('silver_claim_lines_validated') }}
       where source_file in {{ selected_files() }}
 {%- if recount is not none %}
 union select source_file from {{ recount }}
 {%- endif %})
{%- endif -%}
{%- endmacro %}

{#- Post-hook of silver_data_quality_log: the files it just counted again are off the list. -#}
{% macro forget_recounted_files() -%}
create table if not exists {{ recount_table() }} (source_file varchar);
delete from {{ recount_table() }}
{%- endmacro %}
