"""Who can reach what in a rendered stack, decided the way AWS and Kubernetes decide it.

For a gateway (one per cluster) this reads the endpoints it is configured with (GATEWAY_REDIS_URL in its Deployment,
the host of `database_url` in its ExternalSecret, following private CNAMEs to the instance), finds the data store
behind each, and checks the three things that must all allow the connection:
- Kubernetes: an Egress NetworkPolicy selecting the gateway pods with an ipBlock covering the store's subnets on its
  port (the namespace has a default deny);
- routing: the pods' private subnets reach the store's subnets locally (same VPC) or by a route through an accepted
  peering connection between the two VPCs, with the route back (longest prefix wins, as in a VPC route table);
- the store's security group: an ingress rule for the port from the pods' security group (same VPC only: security
  group references do not cross an inter-region peering) or from a CIDR covering the pods' subnets.
Not modelled: the EKS cluster security group's egress (EKS creates it allowing all outbound).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from infra.render import Rendering, RenderedResource

Net = ipaddress.IPv4Network
GATEWAY_LABELS = {"app.kubernetes.io/name": "gateway", "app.kubernetes.io/component": "gateway"}


@dataclass
class Store:
    kind: str
    resource: RenderedResource
    region: str
    port: int
    security_group_ids: list[str]
    subnet_cidrs: list[Net]


@dataclass
class RegionNet:
    region: str
    vpc_id: str
    cidr: Net
    private_subnets: dict[str, Net] = field(default_factory=dict)
    cluster_security_groups: set[str] = field(default_factory=set)
    k8s_provider: str | None = None


def _net(cidr: Any) -> Net:
    return ipaddress.IPv4Network(str(cidr))


class StackNet:
    def __init__(self, rendering: Rendering) -> None:
        self.r = rendering
        self.regions: dict[str, RegionNet] = {}
        for vpc in rendering.of_type("aws:ec2/vpc:Vpc"):
            region = rendering.region_of(vpc) or ""
            self.regions[region] = RegionNet(region, str(vpc.id), _net(vpc.inputs["cidrBlock"]))
        self.subnets: dict[str, Net] = {str(s.id): _net(s.inputs["cidrBlock"]) for s in rendering.of_type("aws:ec2/subnet:Subnet")}
        for group in rendering.of_type("aws:eks/nodeGroup:NodeGroup"):
            region = self.regions[rendering.region_of(group) or ""]
            region.private_subnets.update({str(s): self.subnets[str(s)] for s in group.inputs["subnetIds"]})
        for template in rendering.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
            region = self.regions[rendering.region_of(template) or ""]
            for nic in template.inputs.get("networkInterfaces") or []:
                region.cluster_security_groups.update(str(g) for g in nic.get("securityGroups") or [])
            region.cluster_security_groups.update(str(g) for g in template.inputs.get("vpcSecurityGroupIds") or [])
        for provider in rendering.of_type("pulumi:providers:kubernetes"):
            cluster = next(c for c in rendering.of_type("aws:eks/cluster:Cluster") if c.parent == provider.parent)
            self.regions[rendering.region_of(cluster) or ""].k8s_provider = provider.urn
        self.table_of = {str(a.inputs["subnetId"]): str(a.inputs["routeTableId"])
                         for a in rendering.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")}
        self.routes: dict[str, list[RenderedResource]] = {}
        for route in rendering.of_type("aws:ec2/route:Route"):
            self.routes.setdefault(str(route.inputs["routeTableId"]), []).append(route)
        self.vpc_cidr_of = {rn.vpc_id: rn.cidr for rn in self.regions.values()}
        self.accepted = {str(a.inputs["vpcPeeringConnectionId"]) for a in
                         rendering.of_type("aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter")}
        self.peerings = {str(p.id): {str(p.inputs["vpcId"]), str(p.inputs["peerVpcId"])}
                         for p in rendering.of_type("aws:ec2/vpcPeeringConnection:VpcPeeringConnection")}

    # --- what a workload is configured with -------------------------------------------------------------------
    def k8s_objects(self, region: str, kind: str, namespace: str) -> list[RenderedResource]:
        provider = self.regions[region].k8s_provider
        return [o for o in self.r.resources if o.type.startswith("kubernetes:") and o.provider
                and o.provider.rsplit("::", 1)[0] == provider and o.inputs.get("kind") == kind
                and (o.inputs.get("metadata") or {}).get("namespace") == namespace]

    def gateway_endpoints(self, region: str) -> dict[str, tuple[str, int]]:
        """{"redis": (host, port), "postgres": (host, port)} for the region's gateway (absent ones left out)."""
        out: dict[str, tuple[str, int]] = {}
        for deployment in self.k8s_objects(region, "Deployment", "gateway"):
            for container in deployment.inputs["spec"]["template"]["spec"]["containers"]:
                for env in container.get("env") or []:
                    if env["name"] == "GATEWAY_REDIS_URL":
                        m = re.match(r"^rediss?://([^:/]+):(\d+)", str(env["value"]))
                        assert m, env["value"]
                        out["redis"] = (m.group(1), int(m.group(2)))
        for secret in self.k8s_objects(region, "ExternalSecret", "gateway"):
            url = (((secret.inputs["spec"].get("target") or {}).get("template") or {}).get("data") or {}).get("database_url")
            if url:
                m = re.search(r"@([^:/]+):(\d+)/", str(url))
                assert m, url
                out["postgres"] = (m.group(1), int(m.group(2)))
        return out

    def resolve(self, host: str, port: int) -> Store:
        """The data store behind a host name (private CNAMEs followed, as the VPC resolver would)."""
        for record in self.r.of_type("aws:route53/record:Record"):
            if record.inputs.get("type") == "CNAME" and str(record.inputs["name"]).rstrip(".") == host:
                return self.resolve(str(record.inputs["records"][0]), port)
        for group in self.r.of_type("aws:elasticache/replicationGroup:ReplicationGroup"):
            if host.split(".")[1] == group.inputs.get("replicationGroupId", group.name):
                subnet_group = next(g for g in self.r.of_type("aws:elasticache/subnetGroup:SubnetGroup")
                                    if str(g.id) == str(group.inputs["subnetGroupName"]))
                return Store("redis", group, self.r.region_of(group) or "", port, [str(s) for s in group.inputs["securityGroupIds"]],
                             [self.subnets[str(s)] for s in subnet_group.inputs["subnetIds"]])
        for db in self.r.of_type("aws:rds/instance:Instance"):
            if host.split(".")[0] == db.inputs["identifier"]:
                subnet_group = next(g for g in self.r.of_type("aws:rds/subnetGroup:SubnetGroup")
                                    if str(g.id) == str(db.inputs["dbSubnetGroupName"]))
                return Store("postgres", db, self.r.region_of(db) or "", port, [str(s) for s in db.inputs["vpcSecurityGroupIds"]],
                             [self.subnets[str(s)] for s in subnet_group.inputs["subnetIds"]])
        raise LookupError(f"no data store behind {host}")

    # --- the three checks ----------------------------------------------------------------------------------------
    def network_policy_blocks(self, region: str, dest: list[Net], port: int, namespace: str = "gateway",
                              labels: dict[str, str] = GATEWAY_LABELS) -> str | None:
        policies = [p for p in self.k8s_objects(region, "NetworkPolicy", namespace)
                    if "Egress" in p.inputs["spec"].get("policyTypes", [])
                    and (p.inputs["spec"].get("podSelector") or {}).get("matchLabels", {}).items() <= labels.items()]
        if not policies:
            return None
        for policy in policies:
            for rule in policy.inputs["spec"].get("egress") or []:
                ports = rule.get("ports")
                if ports and not any(int(p.get("port", 0)) == port and p.get("protocol", "TCP") == "TCP" for p in ports):
                    continue
                for peer in rule.get("to") or []:
                    block = peer.get("ipBlock")
                    if block and all(d.subnet_of(_net(block["cidr"])) for d in dest) and not block.get("except"):
                        return None
        names = ", ".join(sorted(p.inputs["metadata"]["name"] for p in policies))
        return f"NetworkPolicy egress of {namespace} ({names}) has no ipBlock covering {[str(d) for d in dest]} on TCP {port}"

    def _best_route(self, table: str, dest: Net, own: Net) -> tuple[int, RenderedResource | None] | None:
        """Longest-prefix match in a VPC route table (the implicit local route included); None = no route."""
        candidates: list[tuple[int, RenderedResource | None]] = [(own.prefixlen, None)] if dest.subnet_of(own) else []
        for route in self.routes.get(table, []):
            cidr = route.inputs.get("destinationCidrBlock")
            if cidr and dest.subnet_of(_net(cidr)):
                candidates.append((_net(cidr).prefixlen, route))
        return max(candidates, key=lambda c: c[0]) if candidates else None

    def route_blocks(self, source: RegionNet, dest_region: RegionNet, dest: list[Net]) -> str | None:
        if source is dest_region:
            return None
        pairs = [(source, list(source.private_subnets), dest), (dest_region, [s for s, n in self.subnets.items()
                 if any(n == d for d in dest)], list(source.private_subnets.values()))]
        for side, subnet_ids, targets in pairs:
            for subnet in subnet_ids:
                table = self.table_of.get(subnet)
                if table is None:
                    return f"subnet {subnet} in {side.region} has no route table"
                for target in targets:
                    best = self._best_route(table, target, side.cidr)
                    if best is None or best[1] is None:
                        return f"route table {table} in {side.region} has no route to {target}"
                    route = best[1]
                    pcx = str(route.inputs.get("vpcPeeringConnectionId") or "")
                    if pcx not in self.peerings or self.peerings[pcx] != {source.vpc_id, dest_region.vpc_id} or pcx not in self.accepted:
                        return (f"route table {table} in {side.region} sends {target} to {route.name} "
                                f"({', '.join(k for k in ('natGatewayId', 'gatewayId', 'vpcPeeringConnectionId') if route.inputs.get(k))}), "
                                "not an accepted peering between the two VPCs")
        return None

    def ingress_rules(self, security_group: str) -> list[RenderedResource]:
        return [r for r in self.r.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
                if str(r.inputs["securityGroupId"]) == security_group]

    def security_group_blocks(self, source: RegionNet, store: Store) -> str | None:
        same_vpc = self.regions[store.region] is source
        for sg in store.security_group_ids:
            for rule in self.ingress_rules(sg):
                i = rule.inputs
                if i.get("ipProtocol") not in ("tcp", "-1") or not int(i.get("fromPort", 0)) <= store.port <= int(i.get("toPort", 65535)):
                    continue
                if same_vpc and str(i.get("referencedSecurityGroupId")) in source.cluster_security_groups:
                    return None
                if i.get("cidrIpv4") and all(n.subnet_of(_net(i["cidrIpv4"])) for n in source.private_subnets.values()):
                    return None
        return (f"security groups {store.security_group_ids} of {store.resource.name} admit TCP {store.port} neither from "
                f"{source.region}'s cluster security group {sorted(source.cluster_security_groups)} (same VPC only) nor from {source.cidr}")

    def why_unreachable(self, region: str, store: Store) -> str | None:
        source = self.regions[region]
        return (self.network_policy_blocks(region, store.subnet_cidrs, store.port)
                or self.route_blocks(source, self.regions[store.region], store.subnet_cidrs)
                or self.security_group_blocks(source, store))

    # --- what a gateway may need: the configured store and whatever a failover promotes in its place -------------
    def lineage(self, store: Store) -> list[RenderedResource]:
        if store.kind == "postgres":
            return self.r.of_type("aws:rds/instance:Instance")  # the stack's only database is the ledger (primary + replicas)
        rid = str(store.resource.id)
        grgs = [g for g in self.r.of_type("aws:elasticache/globalReplicationGroup:GlobalReplicationGroup")
                if str(g.inputs["primaryReplicationGroupId"]) == rid
                or str(store.resource.inputs.get("globalReplicationGroupId")) == str(g.id)]
        if not grgs:
            return [store.resource]
        ids = {str(g.id) for g in grgs}
        return [rg for rg in self.r.of_type("aws:elasticache/replicationGroup:ReplicationGroup")
                if str(rg.inputs.get("globalReplicationGroupId")) in ids or any(str(rg.id) == str(g.inputs["primaryReplicationGroupId"]) for g in grgs)]
