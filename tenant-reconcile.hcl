# The example repo's settings. Without this file everything goes to the local target under
# .tenant-reconcile/, which needs no server; examples/ holds configs for PostgreSQL, S3, RabbitMQ and Route53.

# Billing is wired up apart from provisioning: a tenant becomes active whether or not the
# billing provider answers, and a failed call is retried by later applies, each try with the
# same idempotency key. The customer id the hook prints is kept on the tenant
# (`tenant-reconcile state show acme`, and `tenant.outputs` in templates).
hook "billing" {
  on          = ["provisioned", "plan_changed", "suspended", "resumed", "offboarding", "deprovisioned"]
  command     = ["./hooks/billing.sh"]
  timeout     = "30s"
  retry_after = "1m"
  pass_env    = ["BILLING_FAIL_FIRST", "BILLING_SLEEP", "BILLING_LEDGER"]
}
