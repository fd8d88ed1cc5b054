"""The bootstrap Pulumi program (its own project, `bootstrap/Pulumi.yaml`): state bucket, KMS keys, CI identity, ECR."""
