variable "region" {
  description = "AWS region of everything here, e.g. eu-west-1."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name prefix of every resource and the ECR repository prefix (the chart's image.repositoryPrefix)."
  type        = string
  default     = "transactions-api"
}

variable "vpc_cidr" {
  description = "The VPC's address range."
  type        = string
  default     = "10.0.0.0/16"
}

variable "availability_zones" {
  description = "Three availability zones of the region (one subnet of each kind in each)."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
}

variable "public_subnet_cidrs" {
  description = "Public subnets (the NLB, the NAT gateways), one per zone."
  type        = list(string)
  default     = ["10.0.0.0/22", "10.0.4.0/22", "10.0.8.0/22"]
}

variable "private_subnet_cidrs" {
  description = "Private subnets of the application nodes (and so their pods, with the VPC CNI), one per zone."
  type        = list(string)
  default     = ["10.0.16.0/20", "10.0.32.0/20", "10.0.48.0/21"]
}

variable "ingress_subnet_cidrs" {
  description = "Private subnets of the ingress node group only: the ingress controller's pods get their addresses here, so these CIDRs are the gateway's trusted_proxies (helm/transactions-api/values-production.yaml)."
  type        = list(string)
  default     = ["10.0.60.0/24", "10.0.61.0/24", "10.0.62.0/24"]
}

variable "database_subnet_cidrs" {
  description = "Subnets of RDS and ElastiCache, no route to the internet, one per zone."
  type        = list(string)
  default     = ["10.0.64.0/24", "10.0.65.0/24", "10.0.66.0/24"]
}

variable "cluster_version" {
  description = "Kubernetes version of the EKS cluster (one of those .ci/checks/deploy.sh validates the chart for)."
  type        = string
  default     = "1.35"
}

variable "cluster_endpoint_public_cidrs" {
  description = "Who may reach the EKS API endpoint from the internet (the deploy runners' ranges, your office); empty: private endpoint only."
  type        = list(string)
  default     = []
}

variable "app_node_instance_types" {
  description = "Instance types of the application node group."
  type        = list(string)
  default     = ["m7i.large"]
}

variable "app_node_count" {
  description = "Application nodes: min, desired and max."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 3, desired = 3, max = 12 }
}

variable "ingress_node_instance_types" {
  description = "Instance types of the ingress node group (ingress-nginx only)."
  type        = list(string)
  default     = ["c7i.large"]
}

variable "namespace" {
  description = "Kubernetes namespace of the release; the deploy role's access is limited to it."
  type        = string
  default     = "transactions"
}

variable "github_repository" {
  description = "owner/name of the GitHub repository whose `production` environment may deploy."
  type        = string
}

variable "github_environment" {
  description = "The GitHub environment the deploy job runs in (its OIDC subject names it)."
  type        = string
  default     = "production"
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.r7g.large"
}

variable "db_engine_version" {
  description = "PostgreSQL major.minor on RDS (>= 14; the parameter group family follows the major)."
  type        = string
  default     = "17.6"
}

variable "db_allocated_storage_gb" {
  description = "Initial gp3 storage of the database, in GiB (autoscaling up to four times that)."
  type        = number
  default     = 100
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.r7g.large"
}

variable "redis_engine_version" {
  description = "Valkey version on ElastiCache."
  type        = string
  default     = "8.1"
}

variable "hosted_zone_id" {
  description = "Route 53 hosted zone of the public names: cert-manager may change records there (DNS-01)."
  type        = string
}
