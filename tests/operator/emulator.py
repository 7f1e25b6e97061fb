"""kmock's KubernetesEmulator plus the API-server behaviour the operator depends on (rules: api_server.py)."""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

import aiohttp.web
import kmock
from api_server import (
    STORED_FORM,
    denial_status,
    dependents_to_collect,
    forbidden_status,
    isvc_autoscaling_denial,
    isvc_defaults,
    isvc_denial_status,
    rbac_attributes,
    servingruntime_denial,
    unauthorized_status,
)
from kmock._internal.dicts import patch_dict  # the merge kmock itself stores with

RECORDED: dict[str, set[tuple[str, str, str, str | None]]] = {}
"""e2e test name -> (apiGroup, resource, verb, namespace) of every request the operator made in it, kept here
(one module object) so every test_e2e_*.py records into the same place for the RBAC check."""


class Emulator(kmock.KubernetesEmulator):
    """Adds: generateName and uid on create (kopf posts Events with generated names), KServe's ServingRuntime
    admission, the stored (normalised) form of typed objects, ownerReference garbage collection, bearer
    token authentication when `valid_tokens` is set (requests without a token are the test's own), and an
    authorizer denying the `forbidden` resources."""

    valid_tokens: set[str] | None = None
    forbidden: frozenset[str] = frozenset()
    """Plurals the operator's token may not touch (an RBAC grant left out): 403 as the authorizer answers."""

    def _stored(self) -> list[tuple[Any, dict[str, Any]]]:
        return [(key, obj.raw) for key, obj in self.objects.items() if not obj.deleted]

    async def _handle(self, request: kmock.Request) -> Any:
        auth = request.headers.get("Authorization", "")
        if self.valid_tokens is not None and auth and auth.removeprefix("Bearer ") not in self.valid_tokens:
            return aiohttp.web.json_response(unauthorized_status(), status=401)
        data = request.data if isinstance(request.data, dict) else None
        resource = request.resource
        plural = resource.plural if resource is not None else None
        if auth and plural in self.forbidden:
            attributes = rbac_attributes(str(request.method.value), request.url.path, dict(request.params))
            assert attributes is not None
            status = forbidden_status(*attributes, request.name, request.namespace)
            return aiohttp.web.json_response(status, status=403)
        if request.action == kmock.action.CREATE and data is not None:
            meta = data.setdefault("metadata", {})
            if meta.get("generateName") and not meta.get("name"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("resourceVersion", "1")
            meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).isoformat())
            if plural in STORED_FORM:
                data.update(STORED_FORM[plural](data))
        if plural == "servingruntimes" and request.action in (kmock.action.CREATE, kmock.action.UPDATE):
            denied = self._admit_serving_runtime(request)
            if denied is not None:
                return aiohttp.web.json_response(denial_status(denied), status=403)
        if plural == "inferenceservices" and request.action in (kmock.action.CREATE, kmock.action.UPDATE):
            denied = self._admit_inference_service(request)
            if denied is not None:
                return aiohttp.web.json_response(isvc_denial_status(denied), status=403)

        key = (resource, request.namespace, request.name) if request.name else None
        existed = key is not None and key in self.objects and not self.objects[key].deleted
        uid = self.objects[key].get("metadata", {}).get("uid") if existed else None
        response = await super()._handle(request)

        if request.action == kmock.action.UPDATE and key and plural in STORED_FORM and response.status < 300:
            obj = self.objects[key]
            if not obj.deleted:
                stored = STORED_FORM[plural](obj.raw)
                obj.clear()
                obj.update(stored)
                response = aiohttp.web.json_response(json.loads(json.dumps(stored, default=dict)))
        if existed and uid and self.objects[key].deleted:
            await self._collect_garbage({uid})
        return response

    def _admit_serving_runtime(self, request: kmock.Request) -> str | None:
        if request.action == kmock.action.CREATE:
            candidate = request.data
            namespace = request.namespace or candidate["metadata"].get("namespace")
        else:
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted or request.subresource:
                return None
            candidate = dict(patch_dict(self.objects[key].raw, request.data))
            namespace = request.namespace
        candidate = {**candidate, "metadata": {**candidate["metadata"], "namespace": namespace}}
        peers = [
            raw for (res, ns, _name), raw in self._stored() if res == request.resource and ns == namespace
        ]
        return servingruntime_denial(candidate, peers)

    def _admit_inference_service(self, request: kmock.Request) -> str | None:
        """KServe's defaulting then validating webhook, on the object as it would be stored."""
        if request.action == kmock.action.CREATE:
            candidate = request.data
        else:
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted or request.subresource:
                return None
            candidate = dict(patch_dict(self.objects[key].raw, request.data))
        if not isinstance(candidate, dict):
            return None
        return isvc_autoscaling_denial(isvc_defaults(json.loads(json.dumps(candidate, default=dict))))

    async def _collect_garbage(self, gone: set[str]) -> None:
        """Background cascading deletion, repeated until no dependent is left (owners of owners)."""
        while gone:
            stored = self._stored()
            delete, strip = dependents_to_collect([raw for _, raw in stored], gone)
            keys = {id(raw): key for key, raw in stored}
            collected, gone = gone, set()
            for raw in strip:
                refs = [r for r in raw["metadata"]["ownerReferences"] if r.get("uid") not in collected]
                self.objects[keys[id(raw)]].patch({"metadata": {"ownerReferences": refs}})
            for raw in delete:
                key = keys[id(raw)]
                obj = self.objects[key]
                if raw["metadata"].get("finalizers"):
                    now = datetime.datetime.now(datetime.UTC).isoformat()
                    obj.patch({"metadata": {"deletionTimestamp": now}})
                    event = {"type": "MODIFIED", "object": obj.raw}
                else:
                    obj.delete()
                    event = {"type": "DELETED", "object": raw}
                    gone.add(raw["metadata"].get("uid"))
                await self._buses[key[0]].put(event)
