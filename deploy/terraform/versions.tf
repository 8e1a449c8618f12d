terraform {
  required_version = ">= 1.5.0"
  required_providers {
    # Pinned to the exact version in the offline plugin mirror the tests use
    # (terraform init -plugin-dir /opt/tf-plugins); bump both together.
    aws = {
      source  = "hashicorp/aws"
      version = "= 5.100.0"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      Project   = var.name
      ManagedBy = "terraform"
    }
  }
}
