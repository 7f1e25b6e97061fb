"""The only module that talks to the Kubernetes API (aiohttp, kopf's own login sources)."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import logging
import os
import ssl
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import kopf

from vdiff_operator import merge
from vdiff_operator.builders.common import Platform

logger = logging.getLogger(__name__)

KSERVE_GROUP = "serving.kserve.io"
ROUTE_GROUP = "route.openshift.io"
MONITORING_GROUP = "monitoring.coreos.com"
DSCI_GROUP = "dscinitialization.opendatahub.io"
TEMPLATE_GROUP = "template.openshift.io"
KEDA_GROUP_VERSION = "keda.sh/v1alpha1"
DEFAULT_APPLICATIONS_NAMESPACE = "opendatahub"

PLURALS = {
    "ServingRuntime": "servingruntimes",
    "InferenceService": "inferenceservices",
    "Route": "routes",
    "ServiceMonitor": "servicemonitors",
    "Template": "templates",
    "DSCInitialization": "dscinitializations",
    "DiffusionModel": "diffusionmodels",
    "ServiceAccount": "serviceaccounts",
    "Secret": "secrets",
}
TOKEN_REFRESH_S = 60.0
"""Re-read the bearer token at least this often, as client-go does for a projected service-account token
(k8s.io/client-go/transport/token_source.go: NewCachedFileTokenSource re-reads the file every minute; the
kubelet rotates the projected token long before it expires), and at once after a 401."""

ApplyAction = Literal["created", "updated", "unchanged"]


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFoundError(ApiError):
    pass


@dataclass(frozen=True)
class Discovery:
    has_kserve: bool
    platform: Platform


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = prefix + (f"/namespaces/{namespace}" if namespace else "") + f"/{PLURALS[kind]}"
    return path + (f"/{name}" if name else "")


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    context = ssl.create_default_context(
        cafile=str(info.ca_path) if info.ca_path else None,
        cadata=_text(info.ca_data) if info.ca_data else None,
    )
    cert, key = info.certificate_path, info.private_key_path
    with tempfile.TemporaryDirectory() as tmp:
        if info.certificate_data:
            cert = _write(tmp, "cert.pem", info.certificate_data)
        if info.private_key_data:
            key = _write(tmp, "key.pem", info.private_key_data)
        if cert:
            context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def _text(data: str | bytes) -> str:
    raw = data if isinstance(data, bytes) else data.encode()
    return raw.decode() if raw.lstrip().startswith(b"-----") else base64.b64decode(raw).decode()


def _write(directory: str, name: str, data: str | bytes) -> str:
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(_text(data))
    return path


def load_connection(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then $KUBECONFIG / ~/.kube/config; kopf logs in the same way."""
    return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)


class KubeApi:
    """A small async Kubernetes client; credentials come from the same sources kopf logs in with.

    The token is not fixed at the first request: a bound service-account token is rotated by the kubelet
    (and a kubeconfig token may be replaced), so it is re-read every TOKEN_REFRESH_S and after a 401,
    and the failed request is sent once more with the new token.
    """

    def __init__(self, settings: kopf.OperatorSettings, token_refresh_s: float = TOKEN_REFRESH_S) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._server = ""
        self._token: str | None = None
        self._token_read_at = 0.0
        self._token_refresh_s = token_refresh_s
        self._closed = False

    def _login(self) -> kopf.ConnectionInfo:
        info = load_connection(self._settings)
        if info is None:
            raise kopf.TemporaryError("No credentials (service account or kubeconfig)", delay=30)
        self._token, self._token_read_at = info.token, time.monotonic()
        return info

    async def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise kopf.TemporaryError("operator is shutting down", delay=60)
        if self._session is None or self._session.closed:
            info = self._login()
            self._server = info.server.rstrip("/")
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=_ssl_context(info)),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        elif time.monotonic() - self._token_read_at >= self._token_refresh_s:
            self._login()
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        session = await self._ensure_session()
        for attempt in (1, 2):
            headers = {"Content-Type": content_type}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            async with session.request(method, self._server + path, json=body, headers=headers) as response:
                if response.status == 401 and attempt == 1:
                    logger.info("401 from the API server: re-reading credentials")
                    self._login()
                    continue
                payload = await response.json(content_type=None) if response.content_length != 0 else {}
                if response.status >= 400:
                    payload = payload if isinstance(payload, dict) else {}
                    error = NotFoundError if response.status == 404 else ApiError
                    raise error(response.status, payload.get("reason", ""), payload.get("message", ""))
                return payload if isinstance(payload, dict) else {}
        raise AssertionError("unreachable")

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            return await self.request("GET", resource_path(api_version, kind, namespace, name))
        except NotFoundError:
            return None

    async def list(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return (await self.request("GET", resource_path(api_version, kind, namespace))).get("items", [])

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        namespace = body["metadata"].get("namespace")
        return await self.request("POST", resource_path(body["apiVersion"], body["kind"], namespace), body)

    async def patch(self, body: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        path = resource_path(body["apiVersion"], body["kind"], meta.get("namespace"), meta["name"])
        return await self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the status subresource (the resync loop; kopf's handlers patch through kopf)."""
        path = resource_path(api_version, kind, namespace, name) + "/status"
        return await self.request("PATCH", path, {"status": status}, "application/merge-patch+json")

    async def post_event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on `obj`, as kopf.event posts one (the resync loop runs outside kopf's handlers,
        where kopf's event queue is not available)."""
        meta = obj["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"namespace": meta["namespace"], "generateName": "vdiff-operator-"},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "vdiff-operator"},
            "reportingComponent": "vdiff-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", event)

    async def apply(self, desired: dict[str, Any]) -> tuple[ApplyAction, dict[str, Any]]:
        """Create the object, or merge-patch only the fields we own when they drifted."""
        meta = desired["metadata"]
        observed = await self.get(desired["apiVersion"], desired["kind"], meta.get("namespace"), meta["name"])
        if observed is None:
            try:
                return "created", await self.create(merge.with_last_applied(desired))
            except ApiError as error:
                if error.status != 409:  # 409: created concurrently (timer vs. event); patch it instead
                    raise
                observed = await self.get(
                    desired["apiVersion"], desired["kind"], meta.get("namespace"), meta["name"]
                )
                if observed is None:
                    raise
        patch = merge.apply_patch(desired, observed)
        if patch is None:
            return "unchanged", observed
        return "updated", await self.patch(desired, patch)

    async def api_groups(self) -> dict[str, set[str]]:
        groups = (await self.request("GET", "/apis")).get("groups", [])
        return {group["name"]: {v["version"] for v in group.get("versions", [])} for group in groups}

    async def serves(self, group_version: str, plural: str) -> bool:
        """Whether a group version lists a resource (discovery: a non-resource URL, no RBAC needed)."""
        try:
            listing = await self.request("GET", f"/apis/{group_version}")
        except NotFoundError:
            return False
        return any(r.get("name") == plural for r in listing.get("resources") or [])

    async def discover(self, default_image: str, prometheus_url: str | None = None) -> Discovery:
        """Which optional APIs exist right now (asked on every reconcile, so late installs are seen)."""
        groups = await self.api_groups()
        keda_group, keda_version = KEDA_GROUP_VERSION.split("/")
        has_keda = keda_version in groups.get(keda_group, set()) and await self.serves(
            KEDA_GROUP_VERSION, "scaledobjects"
        )
        has_kserve = {"v1beta1", "v1alpha1"} <= groups.get(KSERVE_GROUP, set())
        applications_namespace = None
        if "v1" in groups.get(DSCI_GROUP, set()):
            items = await self.list(f"{DSCI_GROUP}/v1", "DSCInitialization")
            if items:
                spec = items[0].get("spec") or {}
                applications_namespace = spec.get("applicationsNamespace") or DEFAULT_APPLICATIONS_NAMESPACE
        platform = Platform(
            has_route_api="v1" in groups.get(ROUTE_GROUP, set()),
            has_service_monitor_api="v1" in groups.get(MONITORING_GROUP, set()),
            has_dsc_initialization=applications_namespace is not None,
            applications_namespace=applications_namespace,
            default_image=default_image,
            has_keda=has_keda,
            prometheus_url=prometheus_url,
        )
        if applications_namespace and "v1" not in groups.get(TEMPLATE_GROUP, set()):
            platform = dataclasses.replace(platform, applications_namespace=None)
        return Discovery(has_kserve=has_kserve, platform=platform)
