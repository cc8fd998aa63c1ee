"""dbt project wiring: manifest preparation, @dbt_assets, translator, the pseudonymization plugin."""
