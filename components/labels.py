"""Kubernetes label keys shared by components and config validation (constants only: no Pulumi import)."""

from __future__ import annotations

from typing import Mapping

# The NVIDIA device plugin picks its per-node config from this node label: `time-sliced-<N>` advertises every GPU of
# the node N times (see components/cluster_addons.py), so N model pods share one physical GPU.
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"

# cluster-autoscaler's AWS provider recognises GPU nodes by this node label (cloudprovider/aws/aws_cloud_provider.go
# `GPULabel`): it then waits for the GPUs to be advertised before calling a new node ready, and counts GPU use for
# scale-down. The values are the ones its `availableGPUTypes` lists.
ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
ACCELERATOR_TYPES = {"a10g": "nvidia-a10g", "a100": "nvidia-tesla-a100"}
TIME_SLICED_PREFIX = "time-sliced-"


def time_slices(labels: Mapping[str, str]) -> int:
    """How many schedulable `nvidia.com/gpu` each physical GPU of a node with these labels is advertised as."""
    value = labels.get(DEVICE_PLUGIN_CONFIG_LABEL, "")
    return int(value.removeprefix(TIME_SLICED_PREFIX)) if value.startswith(TIME_SLICED_PREFIX) else 1
