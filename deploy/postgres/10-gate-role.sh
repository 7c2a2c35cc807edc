#!/bin/sh
# Runs once, when the compose file's Postgres starts on an empty volume: the gateway's login role
# is not a superuser. CREATEROLE lets its first migration create the service role it switches to
# (n8n_gate_app, under Row Level Security); it owns the gateway's database and schema.
set -eu
psql -v ON_ERROR_STOP=1 -v password="$GATE_DB_PASSWORD" \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE gate LOGIN CREATEROLE NOSUPERUSER NOCREATEDB PASSWORD :'password';
ALTER DATABASE n8n_gate OWNER TO gate;
ALTER SCHEMA public OWNER TO gate;
SQL
