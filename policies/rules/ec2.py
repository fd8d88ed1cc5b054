"""EC2 launch templates of the EKS nodes (POLICIES.md 7-9)."""

from __future__ import annotations

from collections.abc import Iterator

from policies.core import MANDATORY, Res, Rule, Settings, as_list, number, truthy

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"


def imdsv2_required(r: Res, s: Settings) -> Iterator[str]:
    if str(r.get("metadataOptions", "httpEndpoint", default="enabled")) == "disabled":
        return  # no metadata service at all is stricter still
    tokens = r.get("metadataOptions", "httpTokens", default="optional")
    if str(tokens) != "required":
        yield f"metadataOptions.httpTokens is {tokens} (IMDSv1 allowed); set required"


def imds_hop_limit(r: Res, s: Settings) -> Iterator[str]:
    if str(r.get("metadataOptions", "httpEndpoint", default="enabled")) == "disabled":
        return
    hops = number(r.get("metadataOptions", "httpPutResponseHopLimit"), default=1.0)
    if hops > s["max_hop_limit"]:
        yield f"metadataOptions.httpPutResponseHopLimit is {hops:g}: pods could read the node role's credentials"


def no_public_ip(r: Res, s: Settings) -> Iterator[str]:
    for i, nic in enumerate(as_list(r.get("networkInterfaces"))):
        if truthy(nic.get("associatePublicIpAddress")):
            yield f"networkInterfaces[{i}].associatePublicIpAddress is true"


def ebs_encrypted(r: Res, s: Settings) -> Iterator[str]:
    mappings = as_list(r.get("blockDeviceMappings"))
    ebs_volumes = [(i, m.get("ebs")) for i, m in enumerate(mappings) if m.get("ebs") is not None]
    if not ebs_volumes:
        yield "no blockDeviceMappings with ebs: the root volume would follow the account default (often unencrypted)"
    for i, ebs in ebs_volumes:
        if not truthy(ebs.get("encrypted")):
            yield f"blockDeviceMappings[{i}].ebs.encrypted is not true"
        elif not ebs.get("kmsKeyId"):
            yield f"blockDeviceMappings[{i}].ebs.kmsKeyId is not set (customer-managed key required)"


RULES = [
    Rule(
        id="launch-template-imdsv2",
        controls=("FSBP EC2.170", "CKV_AWS_79", "CKV_AWS_341"),
        summary="Node launch templates require IMDSv2 tokens with a hop limit of 1",
        remediation="Set metadataOptions={httpEndpoint: 'enabled', httpTokens: 'required', httpPutResponseHopLimit: 1}; "
                    "pods get AWS credentials through IRSA / Pod Identity instead.",
        enforcement=MANDATORY, types=(LAUNCH_TEMPLATE,), checks=(imdsv2_required, imds_hop_limit), policies_md=(7,),
        config={"max_hop_limit": {"type": "integer", "minimum": 1, "maximum": 64, "default": 1}},
    ),
    Rule(
        id="launch-template-no-public-ip",
        controls=("FSBP EC2.25",),
        summary="Node launch templates never assign public IP addresses",
        remediation="Set networkInterfaces[*].associatePublicIpAddress='false' (or omit network interfaces).",
        enforcement=MANDATORY, types=(LAUNCH_TEMPLATE,), checks=(no_public_ip,), policies_md=(8,),
    ),
    Rule(
        id="launch-template-ebs-encrypted",
        controls=("FSBP EC2.7", "CKV_AWS_8"),
        summary="Node EBS volumes are encrypted with a customer-managed KMS key",
        remediation="Declare the root volume in blockDeviceMappings with ebs={encrypted: 'true', kmsKeyId: <key ARN>}.",
        enforcement=MANDATORY, types=(LAUNCH_TEMPLATE,), checks=(ebs_encrypted,), policies_md=(9,),
    ),
]
