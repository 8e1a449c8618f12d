"""deploy/terraform: `terraform fmt -check` and `terraform validate`, offline.

The provider comes from the local plugin mirror (/opt/tf-plugins); the tf directory is
copied to tmp_path so no .terraform folder or lock file lands in the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mlcicd_dagster.platform import k8s

TF_DIR = Path(__file__).resolve().parents[2] / "deploy" / "terraform"
PLUGIN_DIR = Path(os.environ.get("MLCICD_TF_PLUGIN_DIR", "/opt/tf-plugins"))
TERRAFORM = shutil.which("terraform")
needs_terraform = pytest.mark.skipif(
    TERRAFORM is None, reason="terraform is not installed on this machine"
)
ENV = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "TF_CLI_CONFIG_FILE": ""}


def tf(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TERRAFORM or "terraform", *args, "-no-color"],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )


def all_tf() -> str:
    return "\n".join(p.read_text() for p in sorted(TF_DIR.glob("*.tf")))


@needs_terraform
def test_terraform_fmt_check(tmp_path):
    work = shutil.copytree(TF_DIR, tmp_path / "tf")
    out = tf(["fmt", "-check", "-recursive", "-diff"], work)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_terraform
def test_terraform_validate_offline(tmp_path):
    if not (PLUGIN_DIR / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        pytest.skip(f"no hashicorp/aws provider in the offline plugin mirror {PLUGIN_DIR}")
    work = shutil.copytree(TF_DIR, tmp_path / "tf")
    init = tf(["init", "-backend=false", "-input=false", f"-plugin-dir={PLUGIN_DIR}"], work)
    assert init.returncode == 0, init.stdout + init.stderr
    out = tf(["validate"], work)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "The configuration is valid" in out.stdout
    assert not (TF_DIR / ".terraform").exists()


def test_provider_pin_matches_the_offline_mirror():
    pinned = re.search(r'version\s*=\s*"=\s*([0-9.]+)"', all_tf())
    assert pinned, "hashicorp/aws must be pinned to an exact version"
    mirror = PLUGIN_DIR / "registry.terraform.io" / "hashicorp" / "aws"
    if not mirror.is_dir():
        pytest.skip(f"no offline plugin mirror at {PLUGIN_DIR} to compare the pin with")
    assert pinned.group(1) in {p.name for p in mirror.iterdir()}


def test_gpu_pool_matches_the_op_tags():
    """The taint and label the GPU node group carries are what op_tags_for('gpu') tolerates
    and selects: change one without the other and GPU steps stay Pending forever."""
    text = all_tf()
    gpu = text[text.index('resource "aws_eks_node_group" "gpu"') :]
    gpu = gpu[: gpu.index("\nresource ")]
    assert f'"{k8s.DEFAULT_GPU_NODE_LABEL}" = "{k8s.DEFAULT_GPU_NODE_POOL}"' in re.sub(
        r"\s+=\s+", " = ", gpu
    )
    assert re.search(rf'key\s*=\s*"{re.escape(k8s.DEFAULT_GPU_TAINT_KEY)}"', gpu)
    assert re.search(r'effect\s*=\s*"NO_SCHEDULE"', gpu)
    assert "NVIDIA" in gpu


def test_bucket_and_database_are_locked_down():
    text = all_tf()
    for needle in (
        'resource "aws_s3_bucket_versioning"',
        'status = "Enabled"',
        'resource "aws_s3_bucket_server_side_encryption_configuration"',
        'sse_algorithm     = "aws:kms"',
        "block_public_acls       = true",
        "block_public_policy     = true",
        "ignore_public_acls      = true",
        "restrict_public_buckets = true",
        "storage_encrypted               = true",
        "publicly_accessible             = false",
        "manage_master_user_password     = true",
    ):
        assert needle in text, needle
