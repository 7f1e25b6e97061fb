"""Pydantic models of the DiffusionModel custom resource (spec and status), mirroring crds/."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

GROUP = "vdiff.io"
VERSION = "v1alpha1"
PLURAL = "diffusionmodels"
KIND = "DiffusionModel"
API_VERSION = f"{GROUP}/{VERSION}"

STORAGE_URI_SCHEMES = (
    "hf",
    "pvc",
    "s3",
    "gs",
    "oci",
    "oci+native",
    "oci+fetch",
    "https",
    "http",
    "file",
    "hdfs",
    "webhdfs",
)
DRAFT_DOWNLOAD_SCHEMES = ("s3", "gs", "https", "http")
"""Draft URIs an extra init container fetches with KServe's storage-initializer image (builders/)."""
DRAFT_URI_SCHEMES = ("hf", "pvc", "oci", *DRAFT_DOWNLOAD_SCHEMES)
"""oci:// drafts become a second modelcar (builders/modelcar.py)."""
OCI_DRAFT_REFUSAL = (
    "draftModel.uri cannot be oci+native:// or oci+fetch://: the operator renders a draft image only as a "
    "modelcar sidecar (oci://). Use oci://, hf://, pvc://, s3://, gs:// or https://"
)
MAX_NAME_LENGTH = 53
TENSOR_PARALLEL_ARG = re.compile(r"^(--tensor-parallel-size|-tp)(=|$)")
TENSOR_PARALLEL_ARG_REFUSAL = (
    "spec.args cannot set --tensor-parallel-size (-tp): the operator derives it from resources.gpus, "
    "one rank per GPU the pod gets"
)

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
CpuQuantity = int | Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?m?$")]
MemoryQuantity = int | Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?|[mk])?$")]
Duration = Annotated[str, StringConstraints(pattern=r"^[0-9]+(us|ms|s|m|h|d)?$")]


class SpecModel(BaseModel):
    """Fields are camelCase on the wire and snake_case in Python; unknown fields are rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def _check_uri(uri: str, schemes: tuple[str, ...]) -> str:
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in schemes or not rest or any(c.isspace() for c in uri):
        raise ValueError(f"uri must look like <scheme>://<path> with scheme one of {', '.join(schemes)}")
    return uri


class ModelSource(SpecModel):
    uri: str
    served_model_name: str | None = None
    trust_remote_code: bool = False
    max_model_len: int | None = Field(default=None, ge=2)
    max_num_seqs: int | None = Field(default=None, ge=1, le=4096)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = None

    @model_validator(mode="after")
    def _valid_uri(self) -> ModelSource:
        _check_uri(self.uri, STORAGE_URI_SCHEMES)
        return self


class DraftModel(SpecModel):
    uri: str

    @model_validator(mode="after")
    def _valid_uri(self) -> DraftModel:
        if re.match(r"^oci\+[a-z]+://", self.uri):
            raise ValueError(OCI_DRAFT_REFUSAL)
        _check_uri(self.uri, DRAFT_URI_SCHEMES)
        return self


class ApdSettings(SpecModel):
    mixture_weight: float | None = Field(default=None, ge=0, le=1)
    kv_window: int | None = Field(default=None, ge=1)
    max_lookahead: int | None = Field(default=None, ge=1)


class Decoding(SpecModel):
    profile: Literal["quality", "balanced", "fast"] = "balanced"
    decoding: Literal["reference", "threshold", "apd", "block"] | None = None
    steps: int | None = Field(default=None, ge=1, le=4096)
    block_length: int | None = Field(default=None, ge=1, le=4096)
    threshold: float | None = Field(default=None, gt=0, le=1)
    kv_cache: Literal["none", "prefix", "dual"] | None = None
    kv_cache_vicinity: int | None = Field(default=None, ge=0, le=4096)
    remasking: Literal["low_confidence", "random"] | None = None
    dream_alg: Literal["origin", "maskgit_plus", "topk_margin", "entropy"] | None = None
    apd: ApdSettings | None = None


class Limits(SpecModel):
    cpu: CpuQuantity | None = None
    memory: MemoryQuantity | None = None


class Resources(SpecModel):
    gpus: int = Field(default=1, ge=0, le=16)
    gpu_resource_name: str = "nvidia.com/gpu"
    cpu: CpuQuantity = "4"
    memory: MemoryQuantity = "32Gi"
    limits: Limits = Field(default_factory=Limits)
    shared_memory: (
        Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?|[mk])?$")] | None
    ) = None

    @property
    def tensor_parallel_size(self) -> int:
        """One rank per GPU of the pod (`--tensor-parallel-size`); CPU-only and one-GPU pods run one rank."""
        return max(self.gpus, 1)

    @property
    def effective_shared_memory(self) -> str:
        """`sharedMemory`, else 1Gi per GPU and at least 2Gi: NCCL's docs ask containers for at least 1g of
        /dev/shm (its SHM transport and bootstrap live there; Docker's 64Mi default breaks them) and the SHM
        transport's buffers grow with the number of peers; KServe's LLMInferenceService vLLM templates use
        1Gi (one pod, --tensor-parallel-size) and 8Gi (multi-GPU workers), charts/kserve-runtime-configs/
        files/llmisvcconfigs/resources.yaml. A Memory emptyDir is charged to the pod's memory limit only as
        it fills; sizeLimit is a cap, not a reservation."""
        if self.shared_memory is not None:
            return self.shared_memory
        return f"{max(2, self.gpus)}Gi"


class Replicas(SpecModel):
    min: int = Field(default=1, ge=0)
    max: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.max is not None and self.min > self.max:
            raise ValueError("replicas.min must be <= replicas.max")
        return self

    @property
    def effective_max(self) -> int:
        return self.max if self.max is not None else max(self.min, 1)


AutoscalingMetric = Literal["queueDepth", "concurrency", "cpu"]
DEFAULT_TARGETS: dict[str, int] = {"queueDepth": 4, "concurrency": 8, "cpu": 80}
"""Per-replica targets when spec.autoscaling.target is unset: waiting requests, running requests, CPU %."""
SERIES_METRICS = ("queueDepth", "concurrency")
"""Metrics read from the server's own Prometheus series: they vanish with the last pod."""


class Autoscaling(SpecModel):
    """Mirrors the CRD's spec.autoscaling and its CEL rules (crds/vdiff.io_diffusionmodels.yaml)."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(ge=1)
    metric: AutoscalingMetric = "queueDepth"
    target: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _valid(self) -> Autoscaling:
        if self.min_replicas < 1 and self.metric in SERIES_METRICS:
            raise ValueError(
                f"autoscaling.minReplicas must be at least 1 for metric {self.metric}: with no pod the "
                "server's vllm:num_requests_* series disappears, so it cannot wake the model from zero"
            )
        if self.min_replicas < 1:
            raise ValueError(
                "autoscaling.minReplicas must be at least 1 for metric cpu: an HPA never scales to zero"
            )
        if self.max_replicas < self.min_replicas:
            raise ValueError("autoscaling.maxReplicas must be >= autoscaling.minReplicas")
        if self.metric == "cpu" and self.target is not None and self.target > 100:
            raise ValueError("autoscaling.target for metric cpu is a utilization percentage in [1, 100]")
        return self

    @property
    def effective_target(self) -> int:
        return self.target if self.target is not None else DEFAULT_TARGETS[self.metric]


class SecretKeyRef(SpecModel):
    name: str = Field(min_length=1)
    key: str = "api-key"


class ApiKeysSecretRef(SpecModel):
    """A Secret of API keys: without `key`, every data key is a key name and its value the key; with
    `key`, that data key holds one key per line (`key` or `name:key`)."""

    name: str = Field(min_length=1)
    key: str | None = Field(default=None, min_length=1)


class Auth(SpecModel):
    api_keys_secret_ref: ApiKeysSecretRef | None = None


class RateLimits(SpecModel):
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)


class LocalObjectReference(SpecModel):
    name: str


class RouteSettings(SpecModel):
    enabled: bool = True
    host: str | None = Field(default=None, max_length=253)
    timeout: Duration = "600s"


class Monitoring(SpecModel):
    service_monitor: Literal["Auto", "Enabled", "Disabled"] = "Auto"
    interval: Annotated[str, StringConstraints(pattern=r"^[0-9]+(ms|s|m|h)$")] = "30s"


class Toleration(SpecModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class EnvVar(SpecModel):
    name: str = Field(min_length=1)
    value: str | None = None
    value_from: dict[str, Any] | None = None


class DiffusionModelSpec(SpecModel):
    model: ModelSource
    draft_model: DraftModel | None = None
    decoding: Decoding = Field(default_factory=Decoding)
    quantization: Literal["bitsandbytes", "bitsandbytes-4bit", "bitsandbytes-8bit"] | None = None
    resources: Resources = Field(default_factory=Resources)
    replicas: Replicas = Field(default_factory=Replicas)
    autoscaling: Autoscaling | None = None
    image: str | None = Field(default=None, min_length=1)
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    service_account_name: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN, max_length=253)] | None = (
        None
    )
    api_key_secret_ref: SecretKeyRef | None = None
    auth: Auth = Field(default_factory=Auth)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    route: RouteSettings = Field(default_factory=RouteSettings)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    display_name: str | None = None
    tolerations: list[Toleration] | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    env: list[EnvVar] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _apd_needs_draft(self) -> DiffusionModelSpec:
        if self.draft_model is None and (self.decoding.decoding == "apd" or self.decoding.apd is not None):
            raise ValueError("decoding apd needs spec.draftModel")
        if any(TENSOR_PARALLEL_ARG.match(arg) for arg in self.args):
            raise ValueError(TENSOR_PARALLEL_ARG_REFUSAL)
        if self.autoscaling is not None and "replicas" in self.model_fields_set:
            raise ValueError(
                "spec.replicas and spec.autoscaling are exclusive: set the bounds in spec.autoscaling"
            )
        return self

    @property
    def predictor_service_account(self) -> str:
        """The account the predictor pod (and so KServe's storage-initializer) runs as."""
        return self.service_account_name or "default"

    @property
    def min_replicas(self) -> int:
        return self.autoscaling.min_replicas if self.autoscaling else self.replicas.min

    @property
    def max_replicas(self) -> int:
        return self.autoscaling.max_replicas if self.autoscaling else self.replicas.effective_max


class DiffusionModel(BaseModel):
    """The parts of a DiffusionModel object the builders need."""

    name: str
    namespace: str
    uid: str
    generation: int = 1
    spec: DiffusionModelSpec

    @classmethod
    def from_body(cls, body: dict[str, Any] | Any) -> DiffusionModel:
        metadata = body.get("metadata", {})
        name = metadata.get("name", "")
        if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.match(name):
            raise ValueError(
                f"metadata.name must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters"
            )
        return cls(
            name=name,
            namespace=metadata.get("namespace") or "default",
            uid=metadata.get("uid", ""),
            generation=metadata.get("generation") or 1,
            spec=DiffusionModelSpec.model_validate(dict(body.get("spec") or {})),
        )

    @property
    def served_model_name(self) -> str:
        return self.spec.model.served_model_name or self.name


class Condition(BaseModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str = Field(alias="lastTransitionTime")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")

    model_config = ConfigDict(populate_by_name=True)


class DiffusionModelStatus(BaseModel):
    observed_generation: int = Field(alias="observedGeneration")
    url: str | None = None
    served_model_name: str = Field(alias="servedModelName")
    inference_service: str | None = Field(default=None, alias="inferenceService")
    conditions: list[Condition] = Field(default_factory=list)

    model_config = ConfigDict(populate_by_name=True)

    def to_patch(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=False)
