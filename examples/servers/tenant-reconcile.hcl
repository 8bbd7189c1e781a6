# tenant-reconcile over several PostgreSQL servers: each tenant's data on a server of its
# region, placed once when it is first provisioned; the control plane, the state and the
# placement catalog on the admin server (the postgres block).
#
#   cp examples/servers/tenant-reconcile.hcl .
#   export DATABASE_URL=postgres://admin@admin.db.internal:5432/saas
#   export EU1_DATABASE_URL=postgres://admin@eu1.db.internal:5432/saas
#   export EU2_DATABASE_URL=postgres://admin@eu2.db.internal:5432/saas
#   export US1_DATABASE_URL=postgres://admin@us1.db.internal:5432/saas
#   export US2_DATABASE_URL=postgres://admin@us2.db.internal:5432/saas
#   export TENANT_RECONCILE_MASTER_KEY="$(openssl rand -hex 32)"  # keep it in your secret store
#   tenant-reconcile plan       # shows where each new tenant goes, and why
#   tenant-reconcile apply
#
# To try it on one local server, give each its own database there (createdb eu1, …): roles
# are the server's, and each tenant's role is its own.

state {
  backend = "postgres"
  name    = "production"
}

targets {
  control_plane = "postgres"
  data          = "postgres"
}

# The admin server; its names (prefixes, admin schema) are every server's.
postgres {
  url_env = "DATABASE_URL"
}

postgres_server "eu-1" {
  url_env = "EU1_DATABASE_URL"
  region  = "eu-west-1"
  cap     = 1000            # tenants at most; never passed
}

# Labels say what a server offers: a plan with server_labels = { tier = "dedicated" } goes
# only to servers labelled so (other tenants of the region may come here too).
postgres_server "eu-2" {
  url_env   = "EU2_DATABASE_URL"
  region    = "eu-central-1"
  cap       = 200
  labels    = { tier = "dedicated" }
  isolation = ["schema", "database"]
}

postgres_server "us-1" {
  url_env = "US1_DATABASE_URL"
  region  = "us-east-1"
  cap     = 1000
}

postgres_server "us-2" {
  url_env = "US2_DATABASE_URL"
  region  = "us-west-2"
  cap     = 1000
}
