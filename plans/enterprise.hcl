# Contracts with dedicated resources: a database per tenant.
description    = "Enterprise: dedicated database, long retention"
isolation      = "database"
retention_days = 90
erasure_export_days = 30  # an erasure's export, kept for the customer to collect

quotas = {
  seats               = 1000
  storage_gb          = 5000
  api_calls_per_month = 50000000
}

features = {
  sso            = true
  audit_log      = true
  custom_domains = true
  beta_reports   = false
}

# Each tenant's bucket: versioned, old versions kept a quarter, cold data archived.
bucket {
  versioning                         = true
  noncurrent_version_expiration_days = 90
  transitions = [
    { days = 30, storage_class = "STANDARD_IA" },
    { days = 180, storage_class = "GLACIER_IR" },
  ]
}

# Besides the built-in smoke tests: a dedicated database is handed over once its seeded
# projects read back, as the tenant's own role (`tenant-reconcile check` runs it too).
check "projects" {
  sql     = "select count(*) > 0 from projects"
  timeout = "5s"
}
