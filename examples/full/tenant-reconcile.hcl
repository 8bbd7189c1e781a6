# Everything on real servers: the control plane and tenant data on PostgreSQL, each tenant's
# bucket on S3, and the state in PostgreSQL beside the registry.
#
#   export DATABASE_URL=postgres://admin@db.internal:5432/saas        # PGPASSWORD is honoured
#   export TENANT_RECONCILE_MASTER_KEY="$(your-secret-store get tenant-master-key)"
#   export AWS_REGION=eu-west-1 AWS_PROFILE=provisioner              # or any AWS credentials
#   export AWS_ENDPOINT_URL=http://127.0.0.1:9000                    # only for MinIO and the like
#
# (To keep the state in S3 instead: state { backend = "s3", bucket = "acme-saas-state" }.)

state {
  backend = "postgres"
  name    = "production"
}

targets {
  control_plane = "postgres"
  data          = "postgres"
  buckets       = "s3"
}

postgres {
  url_env         = "DATABASE_URL"
  role_prefix     = "tenant_"
  schema_prefix   = "tenant_"
  database_prefix = "tenant_"
}

s3 {
  force_path_style = true
  bucket_prefix    = "acme-saas"
  tenant_regions   = true
  # app_principal = "arn:aws:iam::123456789012:role/saas-app"
}
