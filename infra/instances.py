"""EC2 instance facts the platform relies on: GPU class, GPU count, vCPUs, memory.

Used by config validation (a g5 type in an a100 group is an error), by the node groups' cluster-autoscaler
scale-from-zero tags (the autoscaler cannot see a node's GPUs before one exists) and by the cost estimate.
Source: AWS EC2 instance type documentation (accelerated computing: G5, P4d/P4de).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GpuClass = Literal["a10g", "a100"]


@dataclass(frozen=True)
class InstanceSpec:
    vcpus: int
    memory_gib: int
    gpus: int = 0
    gpu_class: GpuClass | None = None
    gpu_memory_gib: int = 0


INSTANCE_SPECS: dict[str, InstanceSpec] = {
    # A10G (24 GiB each)
    "g5.xlarge": InstanceSpec(4, 16, 1, "a10g", 24),
    "g5.2xlarge": InstanceSpec(8, 32, 1, "a10g", 24),
    "g5.4xlarge": InstanceSpec(16, 64, 1, "a10g", 24),
    "g5.8xlarge": InstanceSpec(32, 128, 1, "a10g", 24),
    "g5.16xlarge": InstanceSpec(64, 256, 1, "a10g", 24),
    "g5.12xlarge": InstanceSpec(48, 192, 4, "a10g", 24),
    "g5.24xlarge": InstanceSpec(96, 384, 4, "a10g", 24),
    "g5.48xlarge": InstanceSpec(192, 768, 8, "a10g", 24),
    # A100 (40 GiB on p4d, 80 GiB on p4de)
    "p4d.24xlarge": InstanceSpec(96, 1152, 8, "a100", 40),
    "p4de.24xlarge": InstanceSpec(96, 1152, 8, "a100", 80),
    # CPU (system and gateway nodes)
    "t3.medium": InstanceSpec(2, 4),
    "t3.large": InstanceSpec(2, 8),
    "t3.xlarge": InstanceSpec(4, 16),
    "m6i.large": InstanceSpec(2, 8),
    "m6i.xlarge": InstanceSpec(4, 16),
    "m6i.2xlarge": InstanceSpec(8, 32),
    "m6i.4xlarge": InstanceSpec(16, 64),
    "m7i.large": InstanceSpec(2, 8),
    "m7i.xlarge": InstanceSpec(4, 16),
    "m7i.2xlarge": InstanceSpec(8, 32),
    "c6i.xlarge": InstanceSpec(4, 8),
    "c6i.2xlarge": InstanceSpec(8, 16),
    "c7i.xlarge": InstanceSpec(4, 8),
    "c7i.2xlarge": InstanceSpec(8, 16),
}

# Which instance families serve which GPU class: the node group's class must match its instance types.
GPU_FAMILIES: dict[str, tuple[str, ...]] = {"a10g": ("g5",), "a100": ("p4d", "p4de")}


def family(instance_type: str) -> str:
    return instance_type.split(".", 1)[0]


def gpu_class_of(instance_type: str) -> str | None:
    fam = family(instance_type)
    for gpu_class, families in GPU_FAMILIES.items():
        if fam in families:
            return gpu_class
    return None
