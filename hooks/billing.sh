#!/bin/sh
# The example billing hook. A real one calls the billing provider's API; this one keeps a
# ledger file that stands in for it, so the quick start and the tests can see what it did.
#
# It gets the tenant's settings as JSON on stdin and these in its environment:
#   TENANT_RECONCILE_MOMENT            provisioned, plan_changed, suspended, resumed, ...
#   TENANT_RECONCILE_IDEMPOTENCY_KEY   the same on every try of this moment: a provider that
#                                      takes an Idempotency-Key header dedupes on it
#   TENANT_RECONCILE_TENANT_ID, TENANT_RECONCILE_TENANT_SLUG, TENANT_RECONCILE_ATTEMPT
# It prints its outputs as JSON on stdout, and logs on stderr.
#
# For trying out failures: BILLING_FAIL_FIRST=2 makes its first two tries fail (billing
# down), BILLING_SLEEP=5 makes each try take five seconds (passed on by pass_env).
set -eu
# The ledger names tenants: readable by its owner only, as the files of tenant-reconcile are.
umask 077

ledger="${BILLING_LEDGER:-.tenant-reconcile/billing.log}"
mkdir -p "$(dirname "$ledger")"
key="$TENANT_RECONCILE_IDEMPOTENCY_KEY"
attempt="$TENANT_RECONCILE_ATTEMPT"

# The settings are not needed here; a real hook would read the plan and quotas from them.
cat > /dev/null

echo "try $attempt $key $TENANT_RECONCILE_MOMENT $TENANT_RECONCILE_TENANT_SLUG" >> "$ledger"
if [ "${BILLING_SLEEP:-0}" -gt 0 ]; then
  sleep "$BILLING_SLEEP"
fi
if [ "$attempt" -le "${BILLING_FAIL_FIRST:-0}" ]; then
  echo "billing is unavailable (try $attempt)" >&2
  exit 1
fi

# One customer per tenant, made once per idempotency key however often the moment is tried.
if ! grep -q "^done $key " "$ledger"; then
  echo "done $key $TENANT_RECONCILE_MOMENT $TENANT_RECONCILE_TENANT_SLUG" >> "$ledger"
fi
customer="cus_$(printf '%s' "$TENANT_RECONCILE_TENANT_ID" | tr -d '-' | cut -c1-12)"
printf '{"outputs": {"billing_customer_id": "%s"}}\n' "$customer"
