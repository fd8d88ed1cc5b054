"""`InternalDns`: a private Route53 zone shared by every region's VPC, holding stable names for moving endpoints.

The ledger's writer is the home region's Postgres until a failover promotes a replica in another region. Gateways
connect to `ledger.<zone>` instead of an instance address: a failover flips one CNAME (short TTL), and gateways that
lose their connection reconnect to the new writer and replay the usage records they buffered meanwhile, without a
restart or a config rollout. (Postgres clients here use `sslmode=require`, which does not check the host name, so
a CNAME is transparent; Redis clients do check it, so Redis endpoints are not aliased this way.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_aws as aws


@dataclass
class AssociatedVpc:
    vpc_id: pulumi.Input[str]
    region: str


@dataclass
class InternalDnsArgs:
    zone_name: str
    """Private zone name, e.g. `llmp-global.internal` (never resolvable outside the associated VPCs)."""
    vpcs: Sequence[AssociatedVpc]
    """Every region's VPC (a private zone may be associated with VPCs in several regions)."""
    cnames: dict[str, pulumi.Input[str]]
    """Label -> target host name; `ledger` -> the ledger writer's address gives `ledger.<zone_name>`."""
    ttl_seconds: int = 30
    """Short, so a flipped name is followed within half a minute."""
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", self.zone_name):
            raise ValueError(f"zone_name: got {self.zone_name!r}; allowed: a lowercase DNS name such as llmp-global.internal")
        if not self.vpcs:
            raise ValueError("vpcs: got none; allowed: one or more VPCs to associate")
        for label in self.cnames:
            if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", label):
                raise ValueError(f"cnames: got label {label!r}; allowed: one lowercase DNS label")
        if not 5 <= self.ttl_seconds <= 3600:
            raise ValueError(f"ttl_seconds: got {self.ttl_seconds}; allowed: 5 to 3600")


class InternalDns(pulumi.ComponentResource):
    """Private hosted zone associated with every region's VPC, plus CNAMEs."""

    zone_id: pulumi.Output[str]
    hostnames: dict[str, str]
    """Label -> full name (`ledger` -> `ledger.<zone_name>`)."""

    def __init__(self, name: str, args: InternalDnsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:global:InternalDns", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        zone = aws.route53.Zone(
            f"{name}-zone",
            name=args.zone_name,
            comment=f"{name}: stable private names for endpoints that move on a region failover",
            vpcs=[{"vpc_id": v.vpc_id, "vpc_region": v.region} for v in args.vpcs],
            tags=args.tags,
            opts=child,
        )
        self.hostnames = {}
        for label, target in args.cnames.items():
            fqdn = f"{label}.{args.zone_name}"
            aws.route53.Record(
                f"{name}-{label}",
                zone_id=zone.zone_id,
                name=fqdn,
                type="CNAME",
                ttl=args.ttl_seconds,
                records=[target],
                opts=child,
            )
            self.hostnames[label] = fqdn
        self.zone_id = zone.zone_id
        self.register_outputs({"zone_id": self.zone_id, "hostnames": self.hostnames})
