-- Migrations run in order on every tenant's slice, on SQLite (the local target) and
-- PostgreSQL alike, so they keep to portable SQL; IF NOT EXISTS lets a repair run them again.
CREATE TABLE IF NOT EXISTS projects (
    name  TEXT NOT NULL,
    owner TEXT
);
