"""`RegionPeering`: inter-region VPC peering between two regions' VPCs, with private routes both ways.

The shared state of the global tier (the Global Datastore primary, the ledger's Postgres primary) lives in one
region's private subnets (the home region until a failover moves it); gateways of the other regions reach it over
peering, never over the internet. Peering is not transitive, so the global tier peers every pair of regions (a full
mesh: 3 connections for 3 regions) and any region can take over the writers. Only the private route tables get
routes (public subnets hold nothing but ALBs and NAT gateways). Security groups stay closed: the caller opens
exactly the data ports to the peers' CIDRs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_aws as aws


@dataclass
class PeeredVpc:
    region: str
    provider: aws.Provider
    vpc_id: pulumi.Input[str]
    cidr: str
    private_route_table_ids: Sequence[pulumi.Input[str]]


@dataclass
class RegionPeeringArgs:
    home: PeeredVpc
    """The requester side."""
    peer: PeeredVpc
    """The accepter side (another region)."""
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.home.region == self.peer.region:
            raise ValueError(f"peer.region: got {self.peer.region!r}, the home region; allowed: another region")


class RegionPeering(pulumi.ComponentResource):
    """Peering connection (requested from home, accepted in the peer region) and routes both ways."""

    connection_id: pulumi.Output[str]

    def __init__(self, name: str, args: RegionPeeringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:global:RegionPeering", name, None, opts)
        home, peer = args.home, args.peer
        at_home = pulumi.ResourceOptions(parent=self, provider=home.provider)
        at_peer = pulumi.ResourceOptions(parent=self, provider=peer.provider)

        connection = aws.ec2.VpcPeeringConnection(
            f"{name}",
            vpc_id=home.vpc_id,
            peer_vpc_id=peer.vpc_id,
            peer_region=peer.region,
            # Cross-region peering cannot be auto-accepted by the requester; the accepter below does it.
            auto_accept=False,
            tags={**args.tags, "Name": f"{name}: {home.region} <-> {peer.region}"},
            opts=at_home,
        )
        accepter = aws.ec2.VpcPeeringConnectionAccepter(
            f"{name}-accept",
            vpc_peering_connection_id=connection.id,
            auto_accept=True,
            tags={**args.tags, "Name": f"{name}: {home.region} <-> {peer.region}"},
            opts=at_peer,
        )
        for index, table in enumerate(home.private_route_table_ids):
            aws.ec2.Route(
                f"{name}-home-{index}",
                route_table_id=table,
                destination_cidr_block=peer.cidr,
                vpc_peering_connection_id=connection.id,
                opts=pulumi.ResourceOptions(parent=self, provider=home.provider, depends_on=[accepter]),
            )
        for index, table in enumerate(peer.private_route_table_ids):
            aws.ec2.Route(
                f"{name}-peer-{index}",
                route_table_id=table,
                destination_cidr_block=home.cidr,
                vpc_peering_connection_id=accepter.id,
                opts=at_peer,
            )
        self.connection_id = connection.id
        self.register_outputs({"connection_id": self.connection_id})
