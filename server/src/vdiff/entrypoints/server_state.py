"""The typed state one app holds (instead of an untyped grab-bag on app.state)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from vdiff.engine.protocol import EngineClient
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.openai.chat_completion.serving import OpenAIServingChat
from vdiff.entrypoints.openai.completion.serving import OpenAIServingCompletion
from vdiff.entrypoints.openai.models.serving import OpenAIServingModels
from vdiff.entrypoints.openai.tokenize.serving import OpenAIServingTokenization
from vdiff.entrypoints.rate_limit import AccessControl
from vdiff.entrypoints.stats import EngineStatsPoller
from vdiff.metrics import ServerMetrics


@dataclass(slots=True)
class ServerState:
    engine: EngineClient
    args: FrontendArgs
    metrics: ServerMetrics
    models: OpenAIServingModels
    completion: OpenAIServingCompletion
    chat: OpenAIServingChat
    tokenization: OpenAIServingTokenization
    stats_poller: EngineStatsPoller
    access: AccessControl
    is_draining: bool = False


def get_server_state(request: Request) -> ServerState:
    return request.app.state.vdiff
