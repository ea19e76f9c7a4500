# The AWS account the Transactions API runs in: network, EKS, RDS PostgreSQL, ElastiCache
# (Valkey), ECR, the GitHub deploy role, Secrets Manager entries and the IAM roles of the cluster
# add-ons. Plain HCL that Terraform >= 1.6 and OpenTofu >= 1.6 both read; one AWS provider.
#
#   tofu init -backend-config=backend.hcl   # or terraform init
#   tofu plan -var github_repository=ORG/REPO -var hosted_zone_id=Z... -out plan
#
# What CI checks without the provider (it cannot be downloaded there): docs/deploy.md, "What was
# validated".
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.0, < 7.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6, < 4.0"
    }
  }

  # State in S3 (encrypted, versioned, with S3 native locking), configured per installation:
  # backend.hcl holds bucket, key, region, use_lockfile = true, encrypt = true.
  backend "s3" {}
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      project    = var.name
      managed-by = "terraform"
    }
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
