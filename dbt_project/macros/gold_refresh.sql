{#- Gold is recomputed per payer. Every gold table has payer in its grain (the cross-payer marts roll up
    the per-payer ones), so a run that loaded one payer's file recomputes that payer's rows only, from that
    payer's silver rows (DuckDB skips the other payers' row groups).

    Which payers: silver_data_quality_log numbers each silver load (load_id); a gold row keeps the newest
    load of its payer it was computed from (through_load_id). A payer whose newest load is newer than its
    gold rows is recomputed, whether the load happened in this run or in an earlier one whose gold step
    did not run (failed gate, gold run separately): nothing depends on "the files of this run".

    gold_incremental_config(): the config every per-payer gold table uses. Its pre-hook deletes the rows of
    the changed payers inside the model's transaction, so a payer that has no rows any more leaves none
    behind, and a failed build leaves the old rows in place. -#}

{% macro gold_incremental_config() -%}
  {{ config(materialized='incremental', incremental_strategy='append',
            pre_hook="{% if is_incremental() %}delete from {{ this }} where payer in " ~
                     "(select payer from {{ changed_payers() }}){% endif %}") }}
{%- endmacro %}

{#- (payer, load_id): the newest silver load of every payer. -#}
{% macro payer_loads() -%}
(select payer, max(load_id) as load_id from {{ ref('silver_data_quality_log') }} group by payer)
{%- endmacro %}

{#- (payer, load_id) of the payers to recompute: all on a full build; else those with a newer load, and those
    gold still holds that silver no longer has (silver rebuilt without them: their gold rows are removed). -#}
{% macro changed_payers() -%}
  {%- if is_incremental() -%}
(select l.payer, l.load_id
 from {{ payer_loads() }} l
 left join (select payer, max({{ column_or_null(this, 'through_load_id', 'bigint') }}) as through_load_id
            from {{ this }} group by payer) g using (payer)
 where l.load_id > coalesce(g.through_load_id, 0)
 union all
 select distinct payer, cast(null as bigint) from {{ this }}
 where payer not in (select payer from {{ payer_loads() }}))
  {%- else -%}
{{ payer_loads() }}
  {%- endif -%}
{%- endmacro %}

{#- The silver claim lines of the changed payers, with the load they reflect. -#}
{% macro changed_silver_lines() -%}
(select s.*, c.load_id as through_load_id
 from {{ ref('silver_claim_lines') }} s
 join {{ changed_payers() }} c using (payer))
{%- endmacro %}
