"""Which availability zones a region's platform uses, and which of them each node group may launch in.

One rule for the program (`infra/program.py`, through Pulumi invokes) and for preflight (`infra/preflight.py`,
through boto3), so what preflight checks is what `pulumi up` builds:

- only zones that need no opt-in (`opt-in-not-required`): Local Zones and Wavelength Zones sort before the
  region's own zones by name (`us-east-1-bos-1a` < `us-east-1a`) and EKS cannot put its control plane there;
- never the zone IDs EKS refuses for cluster subnets, listed on "View Amazon EKS networking requirements for VPC
  and subnets" (https://docs.aws.amazon.com/eks/latest/userguide/network-reqs.html, "Subnet requirements for
  clusters"; source awsdocs/amazon-eks-user-guide `latest/ug/networking/network-reqs.adoc`). Zone IDs, not
  names: a name maps to a different physical zone in every account;
- the first `az_count` of what is left, by name;
- each node group then gets the subnets of those zones that offer every one of its instance types (GPU types are
  offered in few zones: a group given a subnet whose zone lacks its type fails to launch there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

EKS_UNSUPPORTED_ZONE_IDS: tuple[str, ...] = ("use1-az3", "usw1-az2", "cac1-az3")
NO_OPT_IN = "opt-in-not-required"


@dataclass(frozen=True)
class Zone:
    name: str
    zone_id: str
    opt_in_status: str = NO_OPT_IN


def usable_zones(zones: Iterable[Zone]) -> list[Zone]:
    """Zones the platform may use, by name: regular zones (no opt-in) whose ID EKS accepts for cluster subnets."""
    return sorted((z for z in zones if z.opt_in_status == NO_OPT_IN and z.zone_id not in EKS_UNSUPPORTED_ZONE_IDS),
                  key=lambda z: z.name)


def choose_zones(zones: Iterable[Zone], count: int) -> list[str] | None:
    """The `count` zone names the VPC spreads over, or None when the region has fewer usable zones."""
    usable = usable_zones(zones)
    return [z.name for z in usable[:count]] if len(usable) >= count else None


def zones_offering(chosen: Sequence[str], instance_types: Sequence[str], offered: Mapping[str, set[str]]) -> list[str]:
    """The chosen zones (in order) that offer every instance type; `offered` maps type -> zone names."""
    return [az for az in chosen if all(az in offered.get(t, set()) for t in instance_types)]
