variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name prefix of every resource."
  type        = string
  default     = "mlcicd"
}

variable "cluster_version" {
  description = "EKS Kubernetes version (tests validate manifests against this version)."
  type        = string
  default     = "1.33"
}

variable "vpc_cidr" {
  type    = string
  default = "10.40.0.0/16"
}

variable "az_count" {
  description = "Availability zones used (subnets, NAT, EFS mount targets)."
  type        = number
  default     = 2
  validation {
    condition     = var.az_count >= 2 && var.az_count <= 4
    error_message = "EKS and RDS need at least two availability zones; at most four are laid out."
  }
}

variable "cpu_instance_types" {
  type    = list(string)
  default = ["m6i.xlarge"]
}

variable "cpu_nodes" {
  description = "min / desired / max size of the CPU node group."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 2, desired = 3, max = 10 }
}

variable "gpu_instance_types" {
  type    = list(string)
  default = ["g5.xlarge"]
}

variable "gpu_nodes" {
  description = "GPU node group sizes; min 0 so idle GPUs cost nothing (cluster autoscaler / Karpenter scales up)."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 0, desired = 0, max = 4 }
}

variable "gpu_capacity_type" {
  description = "ON_DEMAND or SPOT (Dagster run retries cover spot reclaims)."
  type        = string
  default     = "ON_DEMAND"
  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.gpu_capacity_type)
    error_message = "gpu_capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "db_instance_class" {
  type    = string
  default = "db.t4g.medium"
}

variable "db_allocated_storage_gb" {
  type    = number
  default = 50
}

variable "k8s_namespace" {
  description = "Namespace of the Dagster release and model servers (IRSA trust is scoped to it)."
  type        = string
  default     = "mlcicd"
}
