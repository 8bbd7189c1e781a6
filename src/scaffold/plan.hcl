# A tier of the product: what every tenant on it gets unless its own file says otherwise.
description    = "Standard: the tier most customers start on"
# Where each tenant's data lives: "shared" (rows under row-level security), "schema" (a
# schema of its own) or "database" (a database of its own).
isolation      = "schema"
# How long a leaving tenant's export is held before its data is purged.
retention_days = 30
# How long an erasure request's export is kept for the customer to collect, after which the
# first apply removes it (30 when not set).
erasure_export_days = 30

# Quotas a tenant file may raise or lower (`quotas: { seats: 20 }`); templates read them
# as tenant.quotas.
quotas = {
  seats      = 10
  storage_gb = 50
}

# Feature flags a tenant file may turn on or off.
features = {
  sso       = false
  audit_log = true
}
