# tenant-reconcile's settings for this repo. Everything here is optional: without it every
# resource goes to the local target under .tenant-reconcile/, which needs no server.

# Where the state (what has been applied) is kept: "local" (a file), "postgres" or "s3".
state {
  backend = "local"
}

# Which target serves each group of resources.
targets {
  control_plane = "local" # or "postgres": registry, owner memberships, flags, quotas, outbox
  data          = "local" # or "postgres": login roles, data slices, migrations, seed data
  buckets       = "local" # or "s3": a bucket per tenant
  broker        = "none"  # or "rabbitmq": a vhost and user per tenant
  dns           = "none"  # or "route53": a DNS record per tenant
}

# Plans refuse when many recorded tenants lost their file (a wrong checkout, a bad merge).
safety {
  max_missing_share = 0.2
}

# A change to plans, templates or migrations can go out in waves, canaries first, each
# smoke-tested and baked, halting on failures (README, Rollouts). Commit the repo to git, then
# uncomment:
# rollout {
#   wave "canary" {
#     tenants      = ["example-co"]
#     max_parallel = 1
#     bake         = "30m"
#   }
#   wave "rest" {
#     max_parallel = 10
#   }
# }

# See the README for the postgres, s3, rabbitmq and route53 blocks, smoke `check`s,
# `hook`s (billing) and event subscribers (`webhook`, `bus`).
