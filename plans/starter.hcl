# The free tier: shared tables under row-level security, small quotas.
description    = "Starter: for small teams trying the product"
isolation      = "shared"
retention_days = 14
erasure_export_days = 14  # an erasure's export, kept for the customer to collect

quotas = {
  seats               = 5
  storage_gb          = 5
  api_calls_per_month = 100000
}

features = {
  sso            = false
  audit_log      = false
  custom_domains = false
  beta_reports   = false
}
