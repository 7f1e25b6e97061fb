"""Wire types of GET /v1/models."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vdiff.entrypoints.openai.common import OpenAIBaseModel, unix_time


class ModelCard(OpenAIBaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=unix_time)
    owned_by: str = "vdiff"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None


class ModelList(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
