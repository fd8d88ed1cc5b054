"""An ACM certificate for one hostname, validated through a CNAME in a Route53 zone we own (the edge's ALB
certificate and the global tier's per-region listener certificates)."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws


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
    """The ARN of a DNS-validated certificate for `domain_name`, once ACM has issued it.

    The certificate and its `CertificateValidation` are both named `name` and take `opts` (where the provider picks
    the certificate's region); the validation record is `validation_record_name` with `record_opts`.
    """
    certificate = aws.acm.Certificate(
        name,
        domain_name=domain_name,
        validation_method="DNS",
        key_algorithm="RSA_2048",  # ECDSA-only would lock out older TLS clients
        tags=tags,
        opts=opts,
    )
    option = certificate.domain_validation_options.apply(lambda options: options[0])
    # ACM asks for the same CNAME for one domain in one account whatever the region; overwriting makes records for
    # several regions' certificates idempotent instead of conflicting.
    record = aws.route53.Record(
        validation_record_name,
        zone_id=zone_id,
        name=option.apply(lambda o: str(o.resource_record_name)),
        type=option.apply(lambda o: str(o.resource_record_type)),
        records=[option.apply(lambda o: str(o.resource_record_value))],
        ttl=300,
        allow_overwrite=True,
        opts=record_opts,
    )
    validation = aws.acm.CertificateValidation(
        name, certificate_arn=certificate.arn, validation_record_fqdns=[record.fqdn], opts=opts
    )
    return validation.certificate_arn
