{#- duplicate_line across files. Each line (payer + claim id + line number) is kept once: its first copy by
    (ingested_at, source_file, source_row_number) is in silver, every later copy is quarantined as
    duplicate_line. silver_claim_lines_validated decides this for the run's rows; these hooks (in the model's
    transaction) decide it again for the rows of OTHER files that share a line with the run's files, before
    or after the run:
    - a corrected file that no longer holds a line gives the line back to the next copy (it was quarantined
      because the run's file held the line first);
    - a run whose file comes before a file already loaded (both first seen in the same second, and its
      name sorts first) makes that file's copies of its lines duplicates.
    Files whose rows change this way are listed in landing.dq_log_recount; silver_data_quality_log counts them
    again in the same dbt invocation and empties the list (a failed invocation leaves it for the next one). -#}

{% macro recount_table() -%}landing.dq_log_recount{%- endmacro %}

{#- Bronze fields whose raw text the quarantine shows (as raw_<field>; no PII among these). -#}
{% macro quarantine_raw_fields() -%}
{{ return(['claim_line_number', 'service_date', 'paid_date', 'billed_amount', 'allowed_amount', 'paid_amount',
           'claim_status', 'diagnosis_code']) }}
{%- endmacro %}

{#- The lines (keys) the run's files hold in this table. -#}
{% macro run_lines() -%}
select distinct payer, claim_id, claim_line_number from {{ this }}
where source_file in {{ selected_files() }} and claim_id is not null and claim_line_number is not null
{%- endmacro %}

{#- Pre-hook, before replace_run_files(): the lines the run's files held before this run. -#}
{% macro remember_run_lines() -%}
{%- if is_incremental() and not run_covers_every_file() -%}
create or replace temp table medflow_run_lines as
{{ run_lines() }}
{%- endif -%}
{%- endmacro %}

{#- Post-hooks: the run's lines now, then every copy of the lines held before or now ranked again; the rows
    of other files whose verdict changed get `duplicate_line` added (last, where the model puts it) or removed.
    A row that becomes rejected gets the raw text the quarantine shows from bronze; a row that is accepted
    again keeps none (as the model stores accepted rows). -#}
{% macro recheck_duplicate_lines() -%}
{#- a run over every landed file (a backfill of all partitions) leaves no other file to decide for -#}
{%- if is_incremental() and not run_covers_every_file() -%}
{%- set raw_fields = quarantine_raw_fields() -%}
insert into medflow_run_lines {{ run_lines() }};
create or replace temp table medflow_duplicate_changes as
select c.source_file, c.source_row_number, c.is_duplicate,
  {%- for field in raw_fields %}
  b.{{ field }} as bronze_{{ field }}{{ "," if not loop.last }}
  {%- endfor %}
from (
  select source_file, source_row_number, failed_rules,
         row_number() over (partition by payer, claim_id, claim_line_number
                            order by ingested_at, source_file, source_row_number) > 1 as is_duplicate
  from {{ this }}
  semi join (select distinct * from medflow_run_lines) k using (payer, claim_id, claim_line_number)
) c
join {{ ref('bronze_claim_lines') }} b using (source_file, source_row_number)
where c.source_file not in {{ selected_files() }}
  and list_contains(c.failed_rules, 'duplicate_line') <> c.is_duplicate;
update {{ this }} t set
  failed_rules = case when c.is_duplicate then list_append(t.failed_rules, 'duplicate_line')
                      else list_filter(t.failed_rules, r -> r <> 'duplicate_line') end,
  {%- for field in raw_fields %}
  raw_{{ field }} = case when c.is_duplicate then coalesce(t.raw_{{ field }}, c.bronze_{{ field }})
                         when len(t.failed_rules) > 1 then t.raw_{{ field }} end{{ "," if not loop.last }}
  {%- endfor %}
from medflow_duplicate_changes c
where t.source_file = c.source_file and t.source_row_number = c.source_row_number;
create table if not exists {{ recount_table() }} (source_file varchar);
insert into {{ recount_table() }} select distinct source_file from medflow_duplicate_changes;
drop table medflow_duplicate_changes;
drop table medflow_run_lines
{%- endif -%}
{%- endmacro %}

{#- The files silver_data_quality_log counts: the run's accepted files; the run's other files that have
    rows in silver (a file rejected since, or gone from the zone, keeps its last good rows, and the run
    decided their duplicates again); and the files whose rows recheck_duplicate_lines() changed. -#}
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
