# The paid tier most customers are on: a schema of their own.
description    = "Growth: for companies running their business on the product"
isolation      = "schema"
retention_days = 30
erasure_export_days = 30  # an erasure's export, kept for the customer to collect

quotas = {
  seats               = 50
  storage_gb          = 200
  api_calls_per_month = 1000000
}

features = {
  sso            = true
  audit_log      = true
  custom_domains = false
  beta_reports   = false
}

# Each tenant's bucket: versioned, with overwritten versions kept for a month.
bucket {
  versioning                         = true
  noncurrent_version_expiration_days = 30
}
