# The five Secrets Manager entries the chart's ExternalSecrets read
# (helm/transactions-api/values-production.yaml: externalSecrets.remoteKeys), one JSON object
# each with the properties named there. Terraform writes the database and Redis URLs (it made
# both passwords) and the gateway's vouching secret (server.gateway_secret, generated here); the
# token key pair and the SMTP credentials are put in by an operator (docs/deploy.md), so Terraform
# makes those entries empty and never reads them.

locals {
  secret_names = {
    database = "prod/${var.name}/database"
    redis    = "prod/${var.name}/redis"
    token    = "prod/${var.name}/token"
    smtp     = "prod/${var.name}/smtp"
    gateway  = "prod/${var.name}/gateway"
  }
}

resource "aws_secretsmanager_secret" "app" {
  #checkov:skip=CKV2_AWS_57: the database and Redis passwords rotate by a Terraform run (random_password keepers), the token keys by the documented key roll; no Lambda rotation
  for_each                = local.secret_names
  name                    = each.value
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 30
}

resource "aws_secretsmanager_secret_version" "database" {
  secret_id = aws_secretsmanager_secret.app["database"].id
  # no sslmode here: the chart sets verify-full and mounts the RDS CA bundle (databaseTLS)
  secret_string = jsonencode({
    url = "postgres://${aws_db_instance.main.username}:${random_password.database.result}@${aws_db_instance.main.address}:${aws_db_instance.main.port}/${aws_db_instance.main.db_name}"
  })
}

resource "aws_secretsmanager_secret_version" "redis" {
  secret_id = aws_secretsmanager_secret.app["redis"].id
  secret_string = jsonencode({
    url = "rediss://:${random_password.redis.result}@${aws_elasticache_replication_group.main.primary_endpoint_address}:6379"
  })
}

# The secret the gateway and every gRPC service share (server.gateway_secret). To rotate it:
# `terraform apply -replace=random_password.gateway_secret`, then restart the Deployments; while
# old and new pods disagree, a service ignores the client facts (safe: it uses the peer address).
resource "random_password" "gateway_secret" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret_version" "gateway" {
  secret_id = aws_secretsmanager_secret.app["gateway"].id
  secret_string = jsonencode({
    secret = random_password.gateway_secret.result
  })
}
