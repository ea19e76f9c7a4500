# One repository per image, tags immutable (one per commit), scanned on push; a lifecycle policy
# keeps the last 100 tagged images and drops untagged layers after a week. The build cache lives
# in a repository of its own whose one tag (`main`) every deploy overwrites, so it is mutable.

locals {
  images = ["migrate", "auth", "accounts", "transfers", "mailer", "webhooks", "edge-gateway"]
  image_lifecycle = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "untagged layers go after a week"
        selection    = { tagStatus = "untagged", countType = "sinceImagePushed", countUnit = "days", countNumber = 7 }
        action       = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "keep the last 100 images (rollback targets)"
        selection    = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = 100 }
        action       = { type = "expire" }
      },
    ]
  })
}

resource "aws_ecr_repository" "image" {
  for_each             = toset(local.images)
  name                 = "${var.name}/${each.value}"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.main.arn
  }
}

resource "aws_ecr_lifecycle_policy" "image" {
  for_each   = aws_ecr_repository.image
  repository = each.value.name
  policy     = local.image_lifecycle
}

resource "aws_ecr_repository" "build_cache" {
  #checkov:skip=CKV_AWS_51: the build cache's one tag is overwritten by every deploy; the images themselves are immutable
  name                 = "${var.name}/build-cache"
  image_tag_mutability = "MUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.main.arn
  }
}

resource "aws_ecr_lifecycle_policy" "build_cache" {
  repository = aws_ecr_repository.build_cache.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "superseded cache layers go after a week"
      selection    = { tagStatus = "untagged", countType = "sinceImagePushed", countUnit = "days", countNumber = 7 }
      action       = { type = "expire" }
    }]
  })
}
