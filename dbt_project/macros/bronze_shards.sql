{#- Bronze is stored in bronze_shards() tables (one model per shard: models/bronze/bronze_claim_lines_shard_<k>.sql)
    under one view, bronze_claim_lines, so that dbt's two threads load two files at once. A file's
    source_row_number comes from a streaming window (row_number() over ()), which reads that file on one
    thread, and DuckDB runs the branches of one statement's UNION ALL one after the other: in one table,
    bronze at 10M lines took ~25 s on two cores; in two tables built side by side, 17.5-19.5 s.

    Which shard loads a file: the run's accepted files, largest first, each to the shard with the fewest
    bytes so far (ties by name), so both threads get about the same work. A file may land in another shard
    than last time (a corrected file is loaded alone): the shard that loads it deletes its rows from every
    shard inside its own transaction, so a failed load leaves the old rows where they were and a file never
    has rows in two shards. -#}
{% macro bronze_shards() %}{{ return(2) }}{% endmacro %}

{#- The run's accepted files this shard loads (landing_state() files). -#}
{% macro bronze_shard_files(files, shard) -%}
  {%- set loads = [] -%}
  {%- set assigned = [] -%}
  {%- for k in range(bronze_shards()) -%}{%- do loads.append(0) -%}{%- do assigned.append([]) -%}{%- endfor -%}
  {%- for file in (files | sort(attribute='source_file') | sort(attribute='size_bytes', reverse=true)) -%}
    {%- set k = loads.index(loads | min) -%}
    {%- do loads.insert(k, loads.pop(k) + file.size_bytes) -%}
    {%- do assigned[k].append(file) -%}
  {%- endfor -%}
  {{ return(assigned[shard]) }}
{%- endmacro %}

{#- Shard k's table, or none when this connection cannot see it. Asked of DuckDB, not of dbt's relation cache:
    the cache learns of a shard the other thread creates during this run at once, while this thread's
    transaction may have begun before that commit and cannot see it ("Table ... does not exist" in a first
    build, a race between the two threads). A table only ever appears during a run, so what this query sees
    is what this model's transaction sees. -#}
{% macro bronze_shard_relation(k) -%}
  {%- set name = 'bronze_claim_lines_shard_' ~ k -%}
  {%- set found = run_query("select count(*) from information_schema.tables where table_catalog = "
                            ~ sql_str(this.database) ~ " and table_schema = " ~ sql_str(this.schema)
                            ~ " and table_name = " ~ sql_str(name)) -%}
  {%- if found.columns[0].values()[0] == 0 -%}{{ return(none) }}{%- endif -%}
  {{ return(api.Relation.create(database=this.database, schema=this.schema, identifier=name, type='table')) }}
{%- endmacro %}

{#- Pre-hook of a shard: inside the shard's transaction, delete the rows of the files it loads from every
    shard that exists (its own included), so the insert that follows replaces them. -#}
{% macro bronze_shard_replace(shard) -%}
  {%- if execute -%}
  {%- set mine = bronze_shard_files(landing_state().files, shard) -%}
  {%- if mine | length > 0 -%}
  {%- for k in range(bronze_shards()) -%}
  {%- set rel = bronze_shard_relation(k) -%}
  {%- if rel is not none %}
delete from {{ rel }} where source_file in (
  {%- for file in mine %}{{ sql_str(file.source_file) }}{{ ", " if not loop.last }}{% endfor -%});
  {%- endif -%}
  {%- endfor -%}
  {%- endif -%}
  {%- endif -%}
{%- endmacro %}

{#- A shard's rows: its files of this run, read as text (bronze_select). On the shard's first build over a
    warehouse made before bronze had shards (bronze_claim_lines was one table), the shard also takes over
    that table's rows of its share of the other files (by a hash of the file name), except files another
    shard already holds (a takeover run that failed half-way loaded them there); the view model then
    replaces the old table. -#}
{% macro bronze_shard_select(shard) -%}
-- depends_on: {{ source('landing', 'landing_file_registry') }}
{%- set state = landing_state() %}
{%- set fields = (state.contracts.values() | list)[0].canonical_fields if state.contracts else [] %}
{%- set files = bronze_shard_files(state.files, shard) %}
{%- if files | length == 0 %}
{{ bronze_empty(fields) }}
{%- else %}
{%- for file in files %}
{{ bronze_select(file, state.contracts[file.payer], fields) }}
{{ "union all" if not loop.last }}
{%- endfor %}
{%- endif %}
{%- if execute and not is_incremental() %}
{%- set legacy = adapter.get_relation(this.database, this.schema, 'bronze_claim_lines') %}
{%- if legacy is not none and legacy.is_table %}
union all by name
select * from {{ legacy }}
where source_file not in {{ accepted_run_files() }} and hash(source_file) % {{ bronze_shards() }} = {{ shard }}
{%- for k in range(bronze_shards()) if k != shard %}
{%- set other = bronze_shard_relation(k) %}
{%- if other is not none %}
  and source_file not in (select source_file from {{ other }} where source_file is not null)
{%- endif %}
{%- endfor %}
{%- endif %}
{%- endif %}
{%- endmacro %}
