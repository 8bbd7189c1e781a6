# The example repo with a DNS record per tenant in a Route53 hosted zone:
# acme.app.example.com CNAME ingress.example.com, with a TXT record beside it
# (_tenant-reconcile.acme.app.example.com) that marks it as this state's. The credentials come
# from the standard AWS chain (environment, profile, instance role), never from this file:
#
#   export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...    # or AWS_PROFILE
#   export AWS_ENDPOINT_URL_ROUTE_53=http://127.0.0.1:5000     # only for a local stand-in
#
# Everything else stays on the local target, and so does the state.

targets {
  dns = "route53"
}

route53 {
  zone_id     = "Z0123456789ABCDEFGHIJ"
  # {slug} and {region} are replaced; every name must be in the zone.
  record_name = "{slug}.app.example.com"
  target      = "ingress.example.com"
  ttl         = 300
  # An apply waits this long for Route53 to report a change INSYNC before the step fails
  # (the next apply finds the record and waits again).
  propagation_timeout = "5m"
}
