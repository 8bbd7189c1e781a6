# The example repo with each tenant's bucket on an S3-compatible store. The endpoint and the
# credentials come from the standard AWS variables, never from this file:
#
#   export AWS_ENDPOINT_URL=http://127.0.0.1:9000      # leave unset for AWS itself
#   export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_REGION=us-east-1
#
# The control plane and tenant data stay on the local target, and so does the state.

targets {
  buckets = "s3"
}

s3 {
  # MinIO, Ceph and most stores on a private network need path-style addressing; on AWS
  # virtual-hosted style (false) is the norm.
  force_path_style = true
  # Bucket names are global on AWS: a prefix of your own keeps them yours.
  bucket_prefix = "acme-saas"
  bucket_name   = "{prefix}-{slug}-{region}"
  # Each bucket goes to its tenant's region. Stores with one region (MinIO, R2): false.
  tenant_regions = true
  encryption     = "AES256"
  # Who a suspended tenant's bucket policy shuts out: the application's IAM role.
  # app_principal = "arn:aws:iam::123456789012:role/saas-app"
}
