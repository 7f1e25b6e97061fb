"""`vdiff-operator render -f dm.yaml [--openshift] [--rhoai]`: print the children the operator makes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from vdiff_operator.builders import build_children
from vdiff_operator.builders.common import Platform
from vdiff_operator.models import KIND, DiffusionModel
from vdiff_operator.settings import default_image


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vdiff-operator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="print the child manifests of DiffusionModel objects")
    render.add_argument("-f", "--filename", required=True, help="DiffusionModel YAML; - for stdin")
    render.add_argument("-n", "--namespace", default="default", help="namespace when the object has none")
    render.add_argument("--openshift", action="store_true", help="Route API present (OpenShift)")
    render.add_argument("--rhoai", action="store_true", help="OpenShift AI present (implies --openshift)")
    render.add_argument(
        "--applications-namespace",
        default="redhat-ods-applications",
        help="dashboard namespace for the runtime Template with --rhoai (ODH: opendatahub)",
    )
    render.add_argument("--monitoring", action="store_true", help="monitoring.coreos.com API present")
    render.add_argument("--image", default=None, help="server image (RELATED_IMAGE_VDIFF_SERVER)")
    return parser


def _platform(args: argparse.Namespace) -> Platform:
    openshift = args.openshift or args.rhoai
    return Platform(
        has_route_api=openshift,
        has_service_monitor_api=openshift or args.monitoring,
        has_dsc_initialization=args.rhoai,
        applications_namespace=args.applications_namespace if args.rhoai else None,
        default_image=args.image or default_image(),
    )


def render(documents: Sequence[Any], platform: Platform, namespace: str) -> list[dict[str, Any]]:
    manifests: list[dict[str, Any]] = []
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") != KIND:
            continue
        body = {**document, "metadata": {"namespace": namespace, **(document.get("metadata") or {})}}
        dm = DiffusionModel.from_body(body)
        for child in build_children(dm, platform):
            if not dm.uid:  # no live owner yet: an empty uid would be rejected by the API server
                child["metadata"].pop("ownerReferences", None)
            manifests.append(child)
    return manifests


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stream = sys.stdin if args.filename == "-" else open(args.filename, encoding="utf-8")  # noqa: SIM115
    with stream:
        documents = list(yaml.safe_load_all(stream))
    try:
        manifests = render(documents, _platform(args), args.namespace)
    except (ValidationError, ValueError) as error:
        print(f"error: invalid DiffusionModel: {error}", file=sys.stderr)
        return 2
    if not manifests:
        print(f"error: no {KIND} found in {args.filename}", file=sys.stderr)
        return 2
    yaml.safe_dump_all(manifests, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
