"""GET /v1/models and GET /v1/models/{model}: the served model names of the one loaded model."""

from __future__ import annotations

from collections.abc import Sequence

from vdiff.engine.protocol import EngineClient
from vdiff.entrypoints.openai.errors import ModelNotFoundError
from vdiff.entrypoints.openai.models.protocol import ModelCard, ModelList
from vdiff.entrypoints.openai.serving_base import engine_max_model_len


class OpenAIServingModels:
    def __init__(self, engine: EngineClient, served_model_names: Sequence[str]) -> None:
        self.engine = engine
        self.served_model_names = list(served_model_names)

    def _card(self, name: str) -> ModelCard:
        return ModelCard(
            id=name, root=self.engine.config.model, max_model_len=engine_max_model_len(self.engine)
        )

    def list_models(self) -> ModelList:
        return ModelList(data=[self._card(name) for name in self.served_model_names])

    def retrieve_model(self, model_id: str) -> ModelCard:
        """One served name's card (the openai client's models.retrieve); an unknown id is a 404."""
        if model_id not in self.served_model_names:
            raise ModelNotFoundError(model_id, self.served_model_names)
        return self._card(model_id)
