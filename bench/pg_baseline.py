#!/usr/bin/env python3
"""The plain-SQL baseline for the Postgres benchmark: `pg_baseline.py REPO PREFIX > script.sql`.

Writes one psql script that does, for every tenant file of REPO (all in schema mode), the
work tenant-reconcile's apply does on the server: the registry row, owner membership, flags,
quotas and outbox event; a login role with a password verifier; the schema, its grants, the
repo's migrations and their records; the seed rows. One transaction per tenant, as a careful
hand-written script would do it, in one psql session.
"""
import re
import sys
import uuid
from pathlib import Path

repo, prefix = Path(sys.argv[1]), sys.argv[2]
migrations = sorted((repo / "migrations").glob("*.sql"))
verifier = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$" + "A" * 43 + "=:" + "B" * 43 + "="

print(r"""\set ON_ERROR_STOP on
CREATE SCHEMA IF NOT EXISTS baseline;
CREATE TABLE IF NOT EXISTS baseline.tenants (tenant_id text PRIMARY KEY, slug text UNIQUE, name text,
  plan text, region text, locale text, isolation text, labels jsonb, lifecycle text, step text,
  created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now());
CREATE TABLE IF NOT EXISTS baseline.memberships (tenant_id text, role text, email text, PRIMARY KEY (tenant_id, role));
CREATE TABLE IF NOT EXISTS baseline.feature_flags (tenant_id text, flag text, enabled boolean, PRIMARY KEY (tenant_id, flag));
CREATE TABLE IF NOT EXISTS baseline.quotas (tenant_id text, name text, value bigint, PRIMARY KEY (tenant_id, name));
CREATE TABLE IF NOT EXISTS baseline.outbox (id bigserial PRIMARY KEY, event_id text UNIQUE, tenant_id text, type text, payload jsonb);
CREATE TABLE IF NOT EXISTS baseline.slice_migrations (slice text, version text, checksum text, PRIMARY KEY (slice, version));""")

for f in sorted((repo / "tenants").glob("*.yaml")):
    text = f.read_text()
    slug = re.search(r"^slug: (.+)$", text, re.M).group(1)
    name = re.search(r"^name: (.+)$", text, re.M).group(1).replace("'", "''")
    ident = prefix + slug.replace("-", "_")
    tid = str(uuid.uuid4())
    print("BEGIN;")
    print(f"INSERT INTO baseline.tenants VALUES ('{tid}', '{slug}', '{name}', 'growth', 'eu-west-1', 'en', 'schema', '{{}}', 'provisioning', 'registry');")
    print(f"INSERT INTO baseline.memberships VALUES ('{tid}', 'owner', 'admin@{slug}.example');")
    for flag in ("audit_log", "beta_reports", "custom_domains", "sso"):
        print(f"INSERT INTO baseline.feature_flags VALUES ('{tid}', '{flag}', true);")
    for quota in ("api_calls_per_month", "seats", "storage_gb"):
        print(f"INSERT INTO baseline.quotas VALUES ('{tid}', '{quota}', 100);")
    print(f"CREATE ROLE \"{ident}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{verifier}';")
    print(f"CREATE SCHEMA \"{ident}\";")
    print(f"REVOKE ALL ON SCHEMA \"{ident}\" FROM PUBLIC;")
    print(f"GRANT USAGE ON SCHEMA \"{ident}\" TO \"{ident}\";")
    print(f"SET LOCAL search_path = \"{ident}\";")
    for m in migrations:
        print(m.read_text())
        print(f"INSERT INTO baseline.slice_migrations VALUES ('{ident}', '{m.stem[:4]}', 'x');")
    print(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{ident}\" TO \"{ident}\";")
    print(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA \"{ident}\" TO \"{ident}\";")
    print("INSERT INTO projects (name, description) VALUES ('Sample project', 'Welcome');")
    print("INSERT INTO settings (key, value) VALUES ('locale', 'en'), ('plan', 'growth');")
    print(f"UPDATE baseline.tenants SET lifecycle = 'active', step = NULL WHERE tenant_id = '{tid}';")
    print(f"INSERT INTO baseline.outbox (event_id, tenant_id, type, payload) VALUES ('{uuid.uuid4()}', '{tid}', 'TenantProvisioned', '{{}}');")
    print("COMMIT;")
