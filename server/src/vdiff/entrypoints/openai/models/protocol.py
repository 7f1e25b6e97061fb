"""Wire types of GET /v1/models and GET /v1/models/{model} (vLLM's ModelCard, with its permission list)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vdiff.entrypoints.openai.common import OpenAIBaseModel, random_id, unix_time


class ModelPermission(OpenAIBaseModel):
    """vLLM's fixed permission entry (every served model allows sampling and logprobs, nothing else)."""

    id: str = Field(default_factory=lambda: random_id("modelperm"))
    object: Literal["model_permission"] = "model_permission"
    created: int = Field(default_factory=unix_time)
    allow_create_engine: bool = False
    allow_sampling: bool = True
    allow_logprobs: bool = True
    allow_search_indices: bool = False
    allow_view: bool = True
    allow_fine_tuning: bool = False
    organization: str = "*"
    group: str | None = None
    is_blocking: bool = False


class ModelCard(OpenAIBaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=unix_time)
    owned_by: str = "vdiff"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None
    permission: list[ModelPermission] = Field(default_factory=lambda: [ModelPermission()])


class ModelList(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
