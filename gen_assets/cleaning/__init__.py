"""Pure cleaning runners: each executes its SQL file from gen_assets/sql in one DuckDB transaction."""
