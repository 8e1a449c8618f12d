output "cluster_name" {
  value = aws_eks_cluster.main.name
}

output "cluster_endpoint" {
  value = aws_eks_cluster.main.endpoint
}

output "artifact_bucket" {
  description = "MLflow artifacts (s3://<bucket>/mlflow) and Dagster compute logs."
  value       = aws_s3_bucket.artifacts.bucket
}

output "db_endpoint" {
  value = aws_db_instance.main.address
}

output "db_master_secret_arn" {
  description = "Secrets Manager secret holding the generated PostgreSQL master password."
  value       = aws_db_instance.main.master_user_secret[0].secret_arn
}

output "efs_id" {
  description = "fileSystemId for deploy/k8s/base/storage.yaml."
  value       = aws_efs_file_system.home.id
}

output "ecr_repositories" {
  value = { for k, r in aws_ecr_repository.images : k => r.repository_url }
}

output "irsa_role_arns" {
  value = { for k, r in aws_iam_role.irsa : k => r.arn }
}
