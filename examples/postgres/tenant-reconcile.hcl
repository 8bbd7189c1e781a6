# tenant-reconcile on PostgreSQL: the control plane, every tenant's data and the state.
#
#   cp examples/postgres/tenant-reconcile.hcl .
#   export DATABASE_URL=postgres://admin@db.internal:5432/saas    # PGPASSWORD is honoured
#   export TENANT_RECONCILE_MASTER_KEY="$(openssl rand -hex 32)"  # keep it in your secret store
#   tenant-reconcile plan
#   tenant-reconcile apply
#
# The URL is read from the environment, so this file holds no credentials. The connecting
# role needs CREATEROLE and CREATEDB (a superuser also lets refresh notice passwords changed
# by hand).

state {
  backend = "postgres"
  # Several repos or environments can share a server: each state name has its own lock.
  name = "production"
}

targets {
  control_plane = "postgres"
  data          = "postgres"
}

postgres {
  url_env = "DATABASE_URL"
  # The admin schema: registry, memberships, flags, quotas, outbox, catalog and state.
  schema = "tenant_reconcile"
  # Tenant acme-corp gets the role tenant_acme_corp, and the schema or database of that name.
  role_prefix     = "tenant_"
  schema_prefix   = "tenant_"
  database_prefix = "tenant_"
  # Where isolation = shared tenants' rows live, under row-level security.
  shared_schema   = "tenants_shared"
  max_connections = 10
}
