#!/bin/sh
# Runs once, when the compose file's Postgres starts on an empty volume. The gateway logs in as
# "gate", which is no superuser and cannot create roles: it owns its database's schema and is a
# member of n8n_gate_app, the role its service connections switch to (Row Level Security
# applies to that one; the first migration finds it here and only grants it what it needs).
set -eu
psql -v ON_ERROR_STOP=1 -v password="$GATE_DB_PASSWORD" \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE gate LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
CREATE ROLE n8n_gate_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
GRANT n8n_gate_app TO gate;
ALTER DATABASE n8n_gate OWNER TO gate;
ALTER SCHEMA public OWNER TO gate;
SQL
