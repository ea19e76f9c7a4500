output "cluster_name" {
  description = "EKS cluster: the deploy workflow's EKS_CLUSTER variable."
  value       = aws_eks_cluster.main.name
}

output "ecr_registry" {
  description = "Registry host: the deploy workflow's ECR_REGISTRY variable (the chart's image.registry)."
  value       = split("/", aws_ecr_repository.image["auth"].repository_url)[0]
}

output "deploy_role_arn" {
  description = "The GitHub deploy role: the deploy workflow's AWS_DEPLOY_ROLE_ARN variable."
  value       = aws_iam_role.deploy.arn
}

output "external_secrets_role_arn" {
  description = "Annotate the External Secrets Operator's ServiceAccount with it (eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.external_secrets.arn
}

output "cert_manager_role_arn" {
  description = "Annotate cert-manager's ServiceAccount with it (eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.cert_manager.arn
}

output "ingress_subnet_cidrs" {
  description = "The gateway's trusted_proxies (EDGE_GATEWAY_TRUSTED_PROXIES in values-production.yaml)."
  value       = aws_subnet.ingress[*].cidr_block
}

output "secret_names" {
  description = "Secrets Manager entries: the chart's externalSecrets.remoteKeys."
  value       = local.secret_names
}

output "database_endpoint" {
  description = "RDS endpoint (host:port); its certificate is verified against the RDS CA bundle."
  value       = aws_db_instance.main.endpoint
}

output "redis_endpoint" {
  description = "ElastiCache primary endpoint (TLS, auth token)."
  value       = aws_elasticache_replication_group.main.primary_endpoint_address
}
