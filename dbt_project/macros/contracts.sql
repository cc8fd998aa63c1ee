{#- Payer-contract expansion. The Dagster asset `landing_files` writes the validated contracts
    (landing.payer_contracts) and the landed-file registry (landing.landing_file_registry); these macros
    read them when a model runs and turn them into bronze and silver SQL. Reading tables instead of
    --vars keeps dbt's partial parsing valid from run to run. -#}

{#- The files this run processes: the partition keys Dagster writes to landing.dbt_selection before it
    starts dbt; every registered file when the table is absent (dbt run by hand). -#}
{% macro selected_files() -%}
  {%- set selection = selection_relation() -%}
  {%- if selection is not none -%}
  (select source_file from {{ selection }})
  {%- else -%}
  (select source_file from {{ source('landing', 'landing_file_registry') }})
  {%- endif -%}
{%- endmacro %}

{#- landing.dbt_selection (written by the Dagster step), or none when it is absent or dbt only parses. -#}
{% macro selection_relation() -%}
  {%- if not execute -%}{{ return(none) }}{%- endif -%}
  {%- set registry = source('landing', 'landing_file_registry') -%}
  {{ return(adapter.get_relation(registry.database, registry.schema, 'dbt_selection')) }}
{%- endmacro %}

{#- The payers of this run's files that replace rows silver loaded from other bytes (a corrected file; the
    `replaces_loaded_rows` flag the Dagster step writes, transform/assets.py write_selection). -#}
{% macro payers_reloaded() -%}
  {%- set selection = selection_relation() -%}
  {%- if selection is none -%}{{ return([]) }}{%- endif -%}
  {%- set found = run_query("select distinct r.payer from " ~ selection ~ " s join "
                            ~ source('landing', 'landing_file_registry')
                            ~ " r using (source_file) where s.replaces_loaded_rows order by 1") -%}
  {{ return(found.columns[0].values() | list) }}
{%- endmacro %}

{#- True when this run's files include every file landing has registered (a first load or a full rerun);
    false while dbt only parses. -#}
{% macro run_covers_every_file() -%}
  {%- if not execute -%}{{ return(false) }}{%- endif -%}
  {%- set missing = run_query("select count(*) from " ~ source('landing', 'landing_file_registry')
                              ~ " where source_file not in " ~ selected_files()) -%}
  {{ return(missing.columns[0].values()[0] == 0) }}
{%- endmacro %}

{#- The run's files that landing accepted. A rejected file is not in this set: bronze keeps its last good
    rows. -#}
{% macro accepted_run_files() -%}
(select source_file from {{ source('landing', 'landing_file_registry') }}
 where status = 'accepted' and source_file in {{ selected_files() }})
{%- endmacro %}

{#- The pre-hook of a model incremental by file (strategy append): inside the model's transaction, delete
    the rows of the files the model rebuilds (`files`, a subquery; by default the run's accepted files), so
    the insert that follows replaces them. This also empties a corrected file that has no data rows any
    more. DuckDB prunes this delete to the row groups of those files; dbt's delete+insert would instead scan
    every row's source_file (0.2 s per model on a 10M-line table). -#}
{% macro replace_run_files(files=none) -%}
{%- if is_incremental() -%}
delete from {{ this }} where source_file in {{ files if files is not none else accepted_run_files() }}
{%- endif -%}
{%- endmacro %}

{#- {'contracts': {payer: contract}, 'files': [accepted files of this run]}; empty while dbt only parses. -#}
{% macro landing_state() %}
  {%- set state = {'contracts': {}, 'files': []} -%}
  {%- if not execute -%}{{ return(state) }}{%- endif -%}
  {%- set registry = source('landing', 'landing_file_registry') -%}
  {%- set contracts_rel = api.Relation.create(database=registry.database, schema=registry.schema,
                                              identifier='payer_contracts') -%}
  {%- if adapter.get_relation(registry.database, registry.schema, registry.identifier) is none -%}
    {{ exceptions.raise_compiler_error("landing.landing_file_registry does not exist: materialize the landing_files asset first.") }}
  {%- endif -%}
  {%- for row in run_query("select payer, contract_json from " ~ contracts_rel ~ " order by payer").rows -%}
    {%- do state.contracts.update({row[0]: fromjson(row[1])}) -%}
  {%- endfor -%}
  {%- set files_sql -%}
    select payer, source_file, path, checksum, header_json, strftime(first_seen_at, '%Y-%m-%d %H:%M:%S'),
           coalesce(size_bytes, 0)
    from {{ registry }} where status = 'accepted' and source_file in {{ selected_files() }}
    order by source_file
  {%- endset -%}
  {%- for row in run_query(files_sql).rows if row[0] in state.contracts -%}
    {%- do state.files.append({'payer': row[0], 'source_file': row[1], 'path': row[2], 'checksum': row[3],
                               'header': fromjson(row[4]), 'ingested_at': row[5],
                               'size_bytes': row[6]}) -%}
  {%- endfor -%}
  {{ return(state) }}
{% endmacro %}

{% macro sql_str(value) -%}
  '{{ value | string | replace("'", "''") }}'
{%- endmacro %}

{#- ('a', 'b') for a non-empty list of values. -#}
{% macro sql_list(values) -%}
  ({%- for v in values %}{{ sql_str(v) }}{{ ", " if not loop.last }}{% endfor -%})
{%- endmacro %}

{#- One landed file read as text, its columns renamed to canonical fields, plus lineage. Columns are read by
    position (c1 .. cN, N from the header landing accepted; the contract's names give the positions): no text
    of the file's header line reaches SQL, dbt's artifacts or logs (a header line can be a data row, or
    hold one, when a file is broken). -#}
{% macro bronze_select(file, contract, fields) -%}
select
  {%- for field in fields %}
  {%- if field in contract.columns %}
  c{{ file.header.index(contract.columns[field]) + 1 }} as {{ field }},
  {%- elif contract.defaults.get(field) is not none %}
  {{ sql_str(contract.defaults[field]) }} as {{ field }},
  {%- else %}
  cast(null as varchar) as {{ field }},
  {%- endif %}
  {%- endfor %}
  {{ sql_str(file.payer) }} as payer,
  {{ sql_str(file.source_file) }} as source_file,
  {{ sql_str(file.checksum) }} as file_checksum,
  cast(row_number() over () as bigint) as source_row_number,
  cast({{ sql_str(file.ingested_at) }} as timestamp) as ingested_at
from read_csv({{ sql_str(glob_literal(file.path)) }},
  delim = {{ sql_str(contract.delimiter) }}, header = true, auto_detect = false,
  quote = '"', escape = '"',
  columns = { {%- for col in file.header %}'c{{ loop.index }}': 'VARCHAR'{{ ", " if not loop.last }}{% endfor -%} })
{%- endmacro %}

{#- A path DuckDB reads as exactly that file: read_csv treats *, ? and [ as a glob, so a landed file named
    claims_*.csv would also read claims_001.csv. Each becomes a one-character class ([*], [?], [[]). -#}
{% macro glob_literal(path) -%}
{{ return(path | replace('[', '[[]') | replace('*', '[*]') | replace('?', '[?]')) }}
{%- endmacro %}

{#- An empty relation with the bronze columns (no file landed yet). -#}
{% macro bronze_empty(fields) -%}
select
  {%- for field in fields %}
  cast(null as varchar) as {{ field }},
  {%- endfor %}
  cast(null as varchar) as payer, cast(null as varchar) as source_file, cast(null as varchar) as file_checksum,
  cast(null as bigint) as source_row_number, cast(null as timestamp) as ingested_at
where false
{%- endmacro %}

{#- CASE over payers: apply each payer's parser to a text column. -#}
{% macro by_payer(contracts, parser, column) -%}
case payer
  {%- for payer, contract in contracts.items() %}
  when {{ sql_str(payer) }} then {{ parser(column, contract) }}
  {%- endfor %}
end
{%- endmacro %}

{#- A date exactly in the contract's format (date_pattern, from medflow_assets/landing/contracts.py), or NULL:
    strptime alone reads '24-01-05' as the year 24 with %Y and '2024115' as 2024-11-05 with %Y%m%d. -#}
{% macro parse_date(column, contract) -%}
case when regexp_full_match(trim({{ column }}), {{ sql_str(contract.date_pattern) }})
     then cast(try_strptime(trim({{ column }}), {{ sql_str(contract.date_format) }}) as date) end
{%- endmacro %}

{#- An amount in the contract's encoding, or NULL (rule invalid_amount) when the text is not exactly that
    encoding: a cast alone would change the value silently (a bigint cast rounds '1234.56' cents and reads
    '0x10' and '1_000'; removing every comma reads '$1.234,56' as 1.23456; a DECIMAL(12,2) cast rounds
    '12.345'). -#}
{% macro parse_amount(column, contract) -%}
  {%- if contract.amount_encoding == 'cents' -%}
  case when regexp_full_match(trim({{ column }}), '-?[0-9]+')
       then try_cast(try_cast(trim({{ column }}) as bigint) / 100 as decimal(12, 2)) end
  {%- elif contract.amount_encoding == 'currency' -%}
  {#- $1,234.56, -$1,234.56, $-1,234.56, 1234.56: commas only between groups of three digits -#}
  case when regexp_full_match(trim({{ column }}), '-?\$?-?([0-9]{1,3}(,[0-9]{3})+|[0-9]+)(\.[0-9]{1,2})?')
       then try_cast(replace(replace(trim({{ column }}), '$', ''), ',', '') as decimal(12, 2)) end
  {%- else -%}
  case when regexp_full_match(trim({{ column }}), '-?([0-9]+(\.[0-9]{1,2})?|\.[0-9]{1,2})')
       then try_cast(trim({{ column }}) as decimal(12, 2)) end
  {%- endif -%}
{%- endmacro %}

{% macro parse_status(column, contract) -%}
case upper(trim({{ column }}))
  {%- for code, status in contract.status_map.items() %}
  when {{ sql_str(code) }} then {{ sql_str(status) }}
  {%- endfor %}
end
{%- endmacro %}

{#- Normalized "first last" (name_text() in macros/codes.sql), whatever the payer's name layout: "Last,
    First" in one column, "First Last" in one column, or first and last name columns. -#}
{% macro parse_name(column, contract) -%}
  {%- if contract.name_format == 'last_comma_first' -%}
  nullif({{ name_text("split_part(member_full_name, ',', 2) || ' ' || split_part(member_full_name, ',', 1)") }}, '')
  {%- elif 'member_full_name' in contract.columns and 'member_first_name' not in contract.columns
           and 'member_last_name' not in contract.columns -%}
  nullif({{ name_text('member_full_name') }}, '')
  {%- else -%}
  nullif({{ name_text("coalesce(member_first_name, '') || ' ' || coalesce(member_last_name, '')") }}, '')
  {%- endif -%}
{%- endmacro %}
