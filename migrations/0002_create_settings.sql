-- Per-tenant settings. Unique within a tenant's own slice; shared-mode tables hold many
-- tenants' rows, so no key here spans tenants.
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT NOT NULL,
    value TEXT NOT NULL
);
