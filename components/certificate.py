"""ACM certificates for one hostname, validated through a CNAME in a Route53 zone we own (the edge's ALB
certificate and the global tier's per-region listener certificates).

ACM asks for the same validation CNAME for one domain in one account, whatever the region, and keeps using it to
renew. So the record exists once per domain, not once per certificate: with one record per region (each with
`allow_overwrite`), removing a region would delete the record every other region's certificate renews with.
"""

from __future__ import annotations

from typing import Mapping

import pulumi
import pulumi_aws as aws


def dns_validated_certificates(
    name: str,
    validation_record_name: str,
    *,
    domain_name: pulumi.Input[str],
    zone_id: pulumi.Input[str],
    placements: Mapping[str, pulumi.ResourceOptions],
    tags: dict[str, str],
    record_opts: pulumi.ResourceOptions,
) -> dict[str, pulumi.Output[str]]:
    """One DNS-validated certificate for `domain_name` per placement (`key -> opts`, the opts pick its region),
    sharing ONE validation record; returns `key -> certificate ARN` once ACM has issued each.

    Certificates and their `CertificateValidation`s are named `<name>-<key>` (`name` alone for the key ""); the
    record is `validation_record_name` with `record_opts`. Its value is read from the first placement's
    certificate, and every certificate of the domain asks for the same one, so adding or removing a placement
    leaves the record as it is.
    """
    if not placements:
        raise ValueError("placements: got none; allowed: at least one region to request the certificate in")
    certificates = {
        key: aws.acm.Certificate(
            f"{name}-{key}" if key else name,
            domain_name=domain_name,
            validation_method="DNS",
            key_algorithm="RSA_2048",  # ECDSA-only would lock out older TLS clients
            tags=tags,
            opts=opts,
        )
        for key, opts in placements.items()
    }
    option = next(iter(certificates.values())).domain_validation_options.apply(lambda options: options[0])
    record = aws.route53.Record(
        validation_record_name,
        zone_id=zone_id,
        name=option.apply(lambda o: str(o.resource_record_name)),
        type=option.apply(lambda o: str(o.resource_record_type)),
        records=[option.apply(lambda o: str(o.resource_record_value))],
        ttl=300,
        # The record may be left over from an earlier deployment of this domain (ACM reuses the CNAME): adopt it.
        allow_overwrite=True,
        opts=record_opts,
    )
    return {
        key: aws.acm.CertificateValidation(
            f"{name}-{key}" if key else name,
            certificate_arn=certificate.arn,
            validation_record_fqdns=[record.fqdn],
            opts=placements[key],
        ).certificate_arn
        for key, certificate in certificates.items()
    }


def dns_validated_certificate(
    name: str,
    validation_record_name: str,
    *,
    domain_name: pulumi.Input[str],
    zone_id: pulumi.Input[str],
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
    record_opts: pulumi.ResourceOptions,
) -> pulumi.Output[str]:
    """The ARN of the one DNS-validated certificate for `domain_name` (a domain only one region serves)."""
    return dns_validated_certificates(
        name, validation_record_name, domain_name=domain_name, zone_id=zone_id, placements={"": opts}, tags=tags,
        record_opts=record_opts,
    )[""]
