{#- Per payer, file and rule: rows checked and rows that failed the rule (every rule listed, zeros too).
    Incremental by file, like the claim lines.
    load_id numbers the silver loads: every file of one run gets the same id, higher than any id before (the
    load's start in microseconds since 1970, or the previous highest + 1 if the clock went back), so it never
    repeats, even after a file's rows are replaced. Gold recomputes exactly the payers with a load newer than
    the one it reflects (macros/gold_refresh.sql). -#}
{{ config(materialized='incremental', incremental_strategy='append',
          pre_hook="{{ replace_run_files(files_to_count()) }}", post_hook="{{ forget_recounted_files() }}") }}
{#- the run's files, and files whose line versions the run decided again (macros/line_versions.sql) -#}
{%- set counted = files_to_count() %}
{#- The highest load_id so far, read while the model is rendered, before its pre-hook deletes the rows of the
    files it counts again: when those rows held it (a clock that was ahead then), the new id still goes above
    it, and gold recomputes the payer (found by a data review). -#}
{%- set highest = 0 %}
{%- if execute and is_incremental() %}
{%- set highest = run_query("select coalesce(max(" ~ column_or_null(this, 'load_id', 'bigint') ~ "), 0) from "
                            ~ this).columns[0].values()[0] %}
{%- endif %}
with validated as (
  select * from {{ ref('silver_claim_lines_validated') }} where source_file in {{ counted }}
),
{#- every accepted file of the run, also one without data rows (rows_checked 0): its load is recorded #}
files as (
  {#- the checksum of the rows silver holds (a file recounted for its line versions may have a newer version
      landed and not loaded yet); the registry's for a file without rows -#}
  select r.payer, r.source_file, coalesce(any_value(v.file_checksum), any_value(r.checksum)) as file_checksum,
         count(v.source_file) as rows_checked,
         count(*) filter (where len(v.failed_rules) > 0) as rows_quarantined,
         {#- good lines another file's version of the line replaced (macros/line_versions.sql) -#}
         count(*) filter (where len(v.failed_rules) = 0 and v.superseded_by is not null) as rows_superseded
  from {{ source('landing', 'landing_file_registry') }} r
  left join validated v using (source_file)
  where r.source_file in {{ counted }}
  group by all
),
failures as (
  select payer, source_file, rule_id, count(*) as rows_failed
  from (
    select payer, source_file, unnest(failed_rules) as rule_id
    from validated
    where len(failed_rules) > 0
  )
  group by all
)
select
  f.payer, f.source_file, f.file_checksum, r.rule_id, r.description as rule_description,
  f.rows_checked, coalesce(x.rows_failed, 0) as rows_failed, f.rows_quarantined, f.rows_superseded,
  {% if is_incremental() -%}
  (select greatest(coalesce(max({{ column_or_null(this, 'load_id', 'bigint') }}), 0) + 1, {{ highest }} + 1,
                   epoch_us(get_current_timestamp())) from {{ this }})
  {%- else -%}
  epoch_us(get_current_timestamp())
  {%- endif %} as load_id
from files f
cross join {{ ref('dq_rules') }} r
left join failures x on x.payer = f.payer and x.source_file = f.source_file and x.rule_id = r.rule_id
