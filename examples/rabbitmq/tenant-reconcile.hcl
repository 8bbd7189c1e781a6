# The example repo with each tenant's messaging on RabbitMQ: a vhost of its own, a user of its
# own whose password is derived from the master key (sent as a hash, never itself), that user's
# permissions on that vhost only, and the vhost's limits from the plan's quotas. Where the
# management API is, and an administrator's login, come from the environment, never this file:
#
#   rabbitmq-plugins enable rabbitmq_management     # once per broker, if it is off
#   export RABBITMQ_API_URL=http://127.0.0.1:15672
#   export RABBITMQ_API_USER=admin RABBITMQ_API_PASSWORD=...   # a user tagged administrator
#
# The control plane, tenant data and buckets stay on the local target, and so does the state.

targets {
  broker = "rabbitmq"
}

rabbitmq {
  # Where applications connect, printed by `tenant-reconcile credentials SLUG` with the
  # tenant's user, password and vhost added.
  amqp_url     = "amqp://127.0.0.1:5672"
  vhost_prefix = "tenant_"
  user_prefix  = "tenant_"
  # The plan quotas that become the vhost's max-connections and max-queues limits, e.g.
  # `quotas = { broker_connections = 50, broker_queues = 200 }` in plans/growth.hcl.
  connections_quota = "broker_connections"
  queues_quota      = "broker_queues"
}
