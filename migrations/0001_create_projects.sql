-- Every tenant's first table. Migrations run on SQLite (the local target) and PostgreSQL
-- alike, so they keep to portable SQL; IF NOT EXISTS lets a repair run them again.
-- Under isolation = shared, tenant-reconcile adds a tenant_id column and row-level security.
CREATE TABLE IF NOT EXISTS projects (
    name        TEXT NOT NULL,
    description TEXT
);
