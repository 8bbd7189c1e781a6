# The example repo with each tenant's quotas published in Redis, where the quota service reads
# them as it counts consumption: a hash quota:acme:limits per tenant, and an ACL user
# tenant_acme that may read acme's keys and count in quota:acme:usage:*, nothing else.
#
#   export REDIS_URL=redis://admin:...@redis.internal:6379    # only if the server needs a login
#
# Everything else stays on the local target, and so does the state.

targets {
  quotas = "redis"
}

redis {
  # Without it, REDIS_URL, then redis://127.0.0.1:6379. A password goes in REDIS_URL, never here.
  url         = "redis://127.0.0.1:6379"
  key_prefix  = "quota:"
  user_prefix = "tenant_"
}
