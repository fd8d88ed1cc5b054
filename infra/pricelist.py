"""The versioned AWS price table (`infra/prices/aws-prices.json`) and its refresh from the AWS Price List API.

The table is data in the repo, so an estimate is reproducible and reviewable: it records where its prices came
from and when. `refresh_price_table` rewrites the hourly rates it can fetch (EC2, ElastiCache, RDS, EKS, NAT,
ALB, EBS gp3) for every region that has explicit prices, through the `pricing` client (served from us-east-1),
and stamps the table with the new source and date. Everything else is kept as it was.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

PRICES_PATH = Path(__file__).resolve().parent / "prices" / "aws-prices.json"
PRICE_LIST_REGION = "us-east-1"  # the Price List API answers from us-east-1 (and ap-south-1), for every region


class PriceError(Exception):
    """A price the estimate needs is missing from the table, or the table is malformed (one line)."""


@dataclass(frozen=True)
class RegionPrices:
    """The rates of one region: explicit, or derived from another region by a multiplier."""

    region: str
    rates: dict[str, Any]
    multiplier: float = 1.0
    derived_from: str | None = None
    invariant_keys: frozenset[str] = field(default_factory=frozenset)
    table_path: str = "infra/prices/aws-prices.json"

    def rate(self, key: str, *sub: str) -> float:
        """`rate("ec2_hour", "g5.xlarge")`: the rate at that path, scaled when the region is derived."""
        node: Any = self.rates.get(key)
        path = ".".join((key, *sub))
        for part in sub:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, (int, float)) or isinstance(node, bool):
            raise PriceError(
                f"{self.table_path}: no price {path!r} for region {self.region}; "
                "add it to the table or run `python -m infra.cli prices --refresh`"
            )
        scale = 1.0 if key in self.invariant_keys or key.endswith("_factor") else self.multiplier
        return float(node) * scale

    def has(self, key: str, *sub: str) -> bool:
        try:
            self.rate(key, *sub)
        except PriceError:
            return False
        return True

    @property
    def basis(self) -> str:
        if self.derived_from is None:
            return f"{self.region} prices"
        return f"{self.region} approximated as {self.derived_from} × {self.multiplier:g} (derived; refresh for exact prices)"


@dataclass(frozen=True)
class PriceTable:
    raw: dict[str, Any]
    path: Path = PRICES_PATH

    @property
    def display_path(self) -> str:
        try:
            return str(self.path.relative_to(Path(__file__).resolve().parent.parent))
        except ValueError:
            return str(self.path)

    @property
    def hours_per_month(self) -> float:
        return float(self.raw["hours_per_month"])

    @property
    def source(self) -> str:
        return str(self.raw["source"])

    @property
    def retrieved(self) -> str:
        return str(self.raw["retrieved"])

    @property
    def version(self) -> str:
        return str(self.raw["table_version"])

    @property
    def notes(self) -> list[str]:
        return [str(n) for n in self.raw.get("notes", [])]

    @property
    def assumptions(self) -> dict[str, Any]:
        return dict(self.raw.get("assumptions", {}))

    def region(self, name: str) -> RegionPrices:
        regions: dict[str, Any] = self.raw["regions"]
        entry = regions.get(name)
        if entry is None:
            raise PriceError(
                f"{self.display_path}: no prices for region {name!r}; known regions: {', '.join(sorted(regions))}"
            )
        invariant = frozenset(self.raw.get("region_invariant", []))
        derived = entry.get("derived")
        if derived is None:
            return RegionPrices(name, entry, invariant_keys=invariant, table_path=self.display_path)
        base_name = str(derived["from"])
        base = regions.get(base_name)
        if base is None or "derived" in base:
            raise PriceError(f"{self.display_path}: region {name!r} derives from {base_name!r}, which has no explicit prices")
        return RegionPrices(name, base, float(derived["multiplier"]), base_name, invariant, self.display_path)

    def spot_discount(self, instance_type: str) -> float:
        spot = self.raw.get("spot", {})
        family = instance_type.split(".", 1)[0]
        return float(spot.get("by_family", {}).get(family, spot.get("default_discount", 0.0)))


def load_price_table(path: Path = PRICES_PATH) -> PriceTable:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise PriceError(f"price table {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise PriceError(f"price table {path}: not valid JSON ({exc})") from None
    missing = [k for k in ("schema_version", "table_version", "hours_per_month", "source", "retrieved", "regions") if k not in raw]
    if missing:
        raise PriceError(f"price table {path}: missing key {missing[0]!r}")
    return PriceTable(raw, path)


# --- refresh from the AWS Price List API -----------------------------------------------------------------

def _term(field_name: str, value: str) -> dict[str, str]:
    return {"Type": "TERM_MATCH", "Field": field_name, "Value": value}


def _on_demand_usd(price_item: str, unit_prefix: str) -> float | None:
    """The USD on-demand rate of one Price List product (a JSON string), for a dimension whose unit starts so."""
    product = json.loads(price_item)
    for offer in product.get("terms", {}).get("OnDemand", {}).values():
        for dim in offer.get("priceDimensions", {}).values():
            if str(dim.get("unit", "")).lower().startswith(unit_prefix.lower()):
                usd = dim.get("pricePerUnit", {}).get("USD")
                if usd is not None and float(usd) > 0:
                    return float(usd)
    return None


def _usage_type(price_item: str) -> str:
    return str(json.loads(price_item).get("product", {}).get("attributes", {}).get("usagetype", ""))


def _fetch(client: Any, service: str, filters: list[dict[str, str]], unit: str, usage_suffix: str | None = None) -> float | None:
    """The first positive on-demand rate among the products matching `filters` (optionally by usage type suffix)."""
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"ServiceCode": service, "Filters": filters, "FormatVersion": "aws_v1", "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        page = client.get_products(**kwargs)
        for item in page.get("PriceList", []):
            if usage_suffix is not None and not _usage_type(item).endswith(usage_suffix):
                continue
            rate = _on_demand_usd(item, unit)
            if rate is not None:
                return rate
        token = page.get("NextToken")
        if not token:
            return None


@dataclass
class RefreshReport:
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)


def refresh_price_table(client: Any, raw: dict[str, Any], today: dt.date | None = None,
                        make_explicit: Sequence[str] = ()) -> tuple[dict[str, Any], RefreshReport]:
    """A copy of the table with every fetchable hourly rate re-read from the Price List API.

    `client` is a boto3 `pricing` client. Regions with explicit prices are refreshed; derived regions keep
    deriving unless named in `make_explicit` (then they get their own rates, starting from the derived ones).
    A rate the API does not return is kept and listed in `report.not_found`.
    """
    new = copy.deepcopy(raw)
    report = RefreshReport()
    table = PriceTable(raw)
    for name in make_explicit:
        if name not in new["regions"]:
            new["regions"][name] = {"derived": {"from": PRICE_LIST_REGION, "multiplier": 1.0}}
        if "derived" in new["regions"][name]:
            derived = table.region(name) if name in raw["regions"] else PriceTable(new).region(name)
            new["regions"][name] = _scaled(derived.rates, derived.multiplier, derived.invariant_keys)

    def apply(region: str, container: dict[str, Any], key: str, rate: float | None) -> None:
        label = f"{region}:{key}"
        if rate is None:
            report.not_found.append(label)
            return
        if container.get(key) == rate:
            report.unchanged.append(label)
        else:
            report.updated.append(f"{label} {container.get(key)} -> {rate}")
            container[key] = rate

    for region, rates in new["regions"].items():
        if "derived" in rates:
            continue
        where = _term("regionCode", region)
        for itype in list(rates.get("ec2_hour", {})):
            rate = _fetch(client, "AmazonEC2", [
                where, _term("instanceType", itype), _term("operatingSystem", "Linux"), _term("tenancy", "Shared"),
                _term("preInstalledSw", "NA"), _term("capacitystatus", "Used"), _term("licenseModel", "No License required"),
            ], "Hrs")
            apply(region, rates["ec2_hour"], itype, rate)
        for engine, label in (("redis", "Redis"), ("valkey", "Valkey")):
            table = rates.get("elasticache_hour", {}).get(engine, {})
            for node_type in list(table):
                rate = _fetch(client, "AmazonElastiCache", [where, _term("instanceType", node_type), _term("cacheEngine", label)], "Hrs")
                apply(region, table, node_type, rate)
        rds = rates.get("rds_postgres_single_az_hour", {})
        for db_class in list(rds):
            rate = _fetch(client, "AmazonRDS", [
                where, _term("instanceType", db_class), _term("databaseEngine", "PostgreSQL"), _term("deploymentOption", "Single-AZ"),
            ], "Hrs")
            apply(region, rds, db_class, rate)
        apply(region, rates, "eks_cluster_hour",
              _fetch(client, "AmazonEKS", [where], "Hrs", usage_suffix="AmazonEKS-Hours:perCluster"))
        apply(region, rates, "nat_gateway_hour",
              _fetch(client, "AmazonEC2", [where, _term("productFamily", "NAT Gateway")], "Hrs", usage_suffix="NatGateway-Hours"))
        apply(region, rates, "alb_hour",
              _fetch(client, "AWSELB", [where, _term("productFamily", "Load Balancer-Application")], "Hrs", usage_suffix="LoadBalancerUsage"))
        if "ebs_gb_month" in rates:
            apply(region, rates["ebs_gb_month"], "gp3",
                  _fetch(client, "AmazonEC2", [where, _term("productFamily", "Storage"), _term("volumeApiName", "gp3")], "GB-Mo"))

    if report.updated or report.unchanged:
        today = today or dt.date.today()
        new["retrieved"] = today.isoformat()
        new["table_version"] = f"{today.isoformat()}.api"
        new["source"] = (
            "AWS Price List API (pricing.get_products, us-east-1 endpoint) for EC2/ElastiCache/RDS/EKS/NAT/ALB/EBS "
            "hourly and gp3 rates; other rates as compiled from the AWS public price pages"
        )
    return new, report


def _scaled(rates: dict[str, Any], multiplier: float, invariant: frozenset[str], key: str = "") -> Any:
    if isinstance(rates, dict):
        return {k: _scaled(v, multiplier, invariant, key or k) for k, v in rates.items()}
    if isinstance(rates, (int, float)) and not isinstance(rates, bool) and key not in invariant and not key.endswith("_factor"):
        return round(float(rates) * multiplier, 6)
    return rates


def write_price_table(raw: dict[str, Any], path: Path = PRICES_PATH) -> None:
    path.write_text(json.dumps(raw, indent=2) + "\n")


# --- command line ----------------------------------------------------------------------------------------------

def cmd_prices(args: Any) -> int:
    from infra.config import ConfigError

    table = load_price_table(args.table)
    if not args.refresh:
        explicit = [name for name, entry in table.raw["regions"].items() if "derived" not in entry]
        derived = [name for name, entry in table.raw["regions"].items() if "derived" in entry]
        print(f"price table {table.display_path}: version {table.version}, retrieved {table.retrieved}")
        print(f"source: {table.source}")
        print(f"regions with explicit prices: {', '.join(explicit)}; derived: {', '.join(derived) or 'none'}")
        print("refresh: python -m infra.cli prices --refresh  (AWS Price List API, needs AWS credentials with pricing:GetProducts)")
        return 0
    import boto3

    session = boto3.Session(profile_name=args.profile)
    if session.get_credentials() is None:
        raise ConfigError("prices --refresh needs AWS credentials (pricing:GetProducts): none found")
    client = session.client("pricing", region_name=PRICE_LIST_REGION)
    new, rep = refresh_price_table(client, table.raw, make_explicit=args.region)
    for line in rep.updated:
        print(f"updated {line}")
    print(f"{len(rep.updated)} updated, {len(rep.unchanged)} unchanged, {len(rep.not_found)} not found in the Price List API")
    if rep.not_found:
        print(f"kept as they were: {', '.join(rep.not_found)}")
    if args.dry_run:
        print("dry run: table not written")
    else:
        write_price_table(new, args.table)
        print(f"wrote {args.table}")
    return 0


def register(sub: Any) -> None:
    """Add `prices [--refresh]` to the CLI's subcommands."""
    parser = sub.add_parser("prices", help="show the price table the cost estimate uses, or refresh it from the AWS Price List API")
    parser.add_argument("--refresh", action="store_true", help="re-read hourly rates from the AWS Price List API and rewrite the table")
    parser.add_argument("--region", action="append", default=[],
                        help="with --refresh: give this region its own explicit prices (repeatable); default: refresh explicit regions")
    parser.add_argument("--dry-run", action="store_true", help="with --refresh: print what would change, write nothing")
    parser.add_argument("--profile", default=None, help="AWS profile to use (default: the usual credential chain)")
    parser.add_argument("--table", type=Path, default=PRICES_PATH, help="price table file (default: infra/prices/aws-prices.json)")
    parser.set_defaults(func=cmd_prices)
