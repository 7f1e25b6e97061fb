"""`vdiff-operator render -f dm.yaml [--openshift] [--rhoai]`: print the children the operator makes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from vdiff_operator.builders import build_children
from vdiff_operator.builders.common import Platform
from vdiff_operator.builders.credentials import credentials_from_objects
from vdiff_operator.builders.inferenceservice import downloads_draft
from vdiff_operator.models import KIND, DiffusionModel
from vdiff_operator.settings import default_image, prometheus_url


class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line too: `error: ... (vdiff-operator render --help)`, exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vdiff-operator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="print the child manifests of DiffusionModel objects")
    render.add_argument(
        "-f",
        "--filename",
        required=True,
        help="DiffusionModel YAML (with the predictor's ServiceAccount and its Secrets, if any); - for stdin",
    )
    render.add_argument("-n", "--namespace", default="default", help="namespace when the object has none")
    render.add_argument("--openshift", action="store_true", help="Route API present (OpenShift)")
    render.add_argument("--rhoai", action="store_true", help="OpenShift AI present (implies --openshift)")
    render.add_argument(
        "--applications-namespace",
        default="redhat-ods-applications",
        help="dashboard namespace for the runtime Template with --rhoai (ODH: opendatahub)",
    )
    render.add_argument("--monitoring", action="store_true", help="monitoring.coreos.com API present")
    render.add_argument("--keda", action="store_true", help="KEDA present (keda.sh scaledobjects)")
    render.add_argument(
        "--prometheus-url",
        default=None,
        help="Prometheus for KEDA outside OpenShift AI (VDIFF_PROMETHEUS_URL)",
    )
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
        has_keda=args.keda,
        prometheus_url=args.prometheus_url or prometheus_url(),
    )


def render(
    documents: Sequence[Any], platform: Platform, namespace: str, warnings: list[str] | None = None
) -> list[dict[str, Any]]:
    """ServiceAccount and Secret documents in the input stand for the cluster's: an s3/gs/http(s) draft's
    init container gets the credentials the operator would derive from them (builders/credentials.py)."""
    manifests: list[dict[str, Any]] = []
    cluster = [
        {**d, "metadata": {"namespace": namespace, **(d.get("metadata") or {})}}
        for d in documents
        if isinstance(d, dict) and d.get("kind") in ("ServiceAccount", "Secret")
    ]
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") != KIND:
            continue
        body = {**document, "metadata": {"namespace": namespace, **(document.get("metadata") or {})}}
        dm = DiffusionModel.from_body(body)
        credentials = None
        if downloads_draft(dm):
            account = dm.spec.predictor_service_account
            credentials, missing = credentials_from_objects(cluster, dm.namespace, account)
            if warnings is not None:
                warnings += missing
        for child in build_children(dm, platform, credentials):
            if not dm.uid:  # no live owner yet: an empty uid would be rejected by the API server
                child["metadata"].pop("ownerReferences", None)
            manifests.append(child)
    return manifests


class CliError(Exception):
    """One line for stderr; main() prints it as `error: ...` and exits 2."""


def _read_documents(filename: str) -> list[Any]:
    source = "stdin" if filename == "-" else filename
    try:
        if filename == "-":
            return list(yaml.safe_load_all(sys.stdin))
        with open(filename, encoding="utf-8") as stream:
            return list(yaml.safe_load_all(stream))
    except FileNotFoundError:
        raise CliError(f"{filename}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{filename}: is a directory, not a YAML file") from None
    except OSError as error:
        raise CliError(f"{filename}: cannot read it ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise CliError(f"{source}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise CliError(f"{source}: invalid YAML{where}: {problem}") from None


def _one_line(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        problems = [
            f"{'.'.join(str(part) for part in problem['loc']) or 'spec'}: {problem['msg']}"
            for problem in error.errors()
        ]
        return "; ".join(problems)
    return " ".join(str(error).split())


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    documents = _read_documents(args.filename)
    warnings: list[str] = []
    try:
        manifests = render(documents, _platform(args), args.namespace, warnings)
    except (ValidationError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise CliError(f"invalid {KIND} in {args.filename}: {_one_line(error)}") from None
    if not manifests:
        raise CliError(f"no {KIND} found in {args.filename} (a document with kind: {KIND})")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    yaml.safe_dump_all(manifests, sys.stdout, sort_keys=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Every failure is one `error: ...` line on stderr and exit status 2 (argparse's usage errors too);
    Ctrl-C is exit 130 without a traceback."""
    try:
        return _run(argv)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `| head` closed the pipe: nothing left to say
        return 0
    except Exception as error:  # a bug still gets one line, not a traceback
        print(f"error: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
