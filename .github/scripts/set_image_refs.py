"""Point stack configs at a freshly built image (run by .github/workflows/images.yml; also by hand).

    python .github/scripts/set_image_refs.py --image gateway --repository <registry>/llm-platform/gateway \
        --tag <commit sha> --digest sha256:<64 hex> stacks/Pulumi.*.yaml

Sets `llm-platform:workloads` → `gateway.image` or `vllm_image` (`{repository, tag}`, infra/workload_config.py) in
every given stack file that has a workloads section, and writes the digest as a comment beside the tag: ECR tags are
immutable, so the tag pins the digest, and the comment lets a reviewer check it. Everything else in the file,
comments and layout included, stays as it was (ruamel.yaml round-trip). Exit 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

ROOT_DIR = Path(__file__).resolve().parents[2]
if str(ROOT_DIR) not in sys.path:
    sys.path.insert(0, str(ROOT_DIR))

from infra.workload_config import ImageRef  # noqa: E402

WORKLOADS_KEY = "llm-platform:workloads"
# Where each image lives under the workloads section.
IMAGE_PATHS: dict[str, tuple[str, ...]] = {"gateway": ("gateway", "image"), "vllm": ("vllm_image",)}
DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")


class ImageRefError(Exception):
    """Bad input or a stack file this tool cannot update: one line naming what and what is allowed."""


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: keeps comments, key order and quoting
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def validate(image: str, repository: str, tag: str, digest: str) -> None:
    if image not in IMAGE_PATHS:
        raise ImageRefError(f"--image: got {image!r}; allowed: {', '.join(IMAGE_PATHS)}")
    if not DIGEST_PATTERN.match(digest):
        raise ImageRefError(f"--digest: got {digest!r}; allowed: sha256:<64 lowercase hex digits>")
    try:
        ImageRef(repository=repository, tag=tag)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        if not message.startswith("got "):
            message = f"got {first.get('input')!r}; {message}"
        raise ImageRefError(f"--{field}: {message}") from None


def set_image(path: Path, image: str, repository: str, tag: str, digest: str) -> bool:
    """Update one stack file. False when the stack has no workloads section (nothing to point at an image)."""
    validate(image, repository, tag, digest)
    yaml = _yaml()
    try:
        document: Any = yaml.load(path.read_text())
    except OSError as err:
        raise ImageRefError(f"{path}: cannot read ({err.strerror})") from None
    config = document.get("config") if isinstance(document, dict) else None
    workloads = config.get(WORKLOADS_KEY) if isinstance(config, dict) else None
    if workloads is None:
        return False
    node = workloads
    where = WORKLOADS_KEY
    for key in IMAGE_PATHS[image]:
        where += f".{key}"
        child = node.get(key) if isinstance(node, dict) else None
        if child is None:
            node[key] = child = CommentedMap()
        if not isinstance(child, CommentedMap):
            raise ImageRefError(f"{path}: {where}: got {type(child).__name__}; allowed: a mapping {{repository, tag}}")
        node = child
    node.fa.set_block_style()  # a flow mapping cannot carry the digest comment cleanly
    node["repository"] = repository
    node["tag"] = DoubleQuotedScalarString(tag)  # a sha of digits only must stay a string
    node.ca.items.pop("tag", None)  # drop the previous digest comment before writing the new one
    node.yaml_add_eol_comment(f"digest {digest}", "tag")
    with path.open("w") as handle:
        yaml.dump(document, handle)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True, help=f"one of {', '.join(IMAGE_PATHS)}")
    parser.add_argument("--repository", required=True, help="registry/repository, e.g. <account>.dkr.ecr.<region>.amazonaws.com/llm-platform/gateway")
    parser.add_argument("--tag", required=True, help="the immutable tag pushed (the commit sha)")
    parser.add_argument("--digest", required=True, help="sha256:... of the pushed manifest")
    parser.add_argument("stack_files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    try:
        updated = [p for p in args.stack_files if set_image(p, args.image, args.repository, args.tag, args.digest)]
    except ImageRefError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    skipped = [p for p in args.stack_files if p not in updated]
    for p in updated:
        print(f"{p}: {args.image} -> {args.repository}:{args.tag} ({args.digest})")
    for p in skipped:
        print(f"{p}: no {WORKLOADS_KEY} section; left as it is")
    return 0


if __name__ == "__main__":
    sys.exit(main())
