"""GET /v1/models: the served model names of the one loaded model."""

from __future__ import annotations

from collections.abc import Sequence

from vdiff.engine.protocol import EngineClient
from vdiff.entrypoints.openai.models.protocol import ModelCard, ModelList
from vdiff.entrypoints.openai.serving_base import engine_max_model_len


class OpenAIServingModels:
    def __init__(self, engine: EngineClient, served_model_names: Sequence[str]) -> None:
        self.engine = engine
        self.served_model_names = list(served_model_names)

    def list_models(self) -> ModelList:
        config = self.engine.config
        cards = [
            ModelCard(id=name, root=config.model, max_model_len=engine_max_model_len(self.engine))
            for name in self.served_model_names
        ]
        return ModelList(data=cards)
