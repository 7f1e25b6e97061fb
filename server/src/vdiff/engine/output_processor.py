"""Frontier advances -> reported tokens and text: end tokens, stop strings, max_tokens, streaming."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vdiff.engine.sequence import Sequence

REPLACEMENT_CHAR = "\ufffd"


@dataclass(slots=True)
class DetokenizerState:
    """Incremental detokenization (vLLM's prefix/read offsets) over a sequence's output_token_ids.

    `text` is decode(ids[:read_offset]), ending on a complete character; `prefix_text` is
    decode(ids[prefix_offset:read_offset]). New text is decode(ids[prefix_offset:]) minus
    `prefix_text`: decoding a short window that starts a few tokens back keeps context-dependent
    rendering (a leading-space marker, a multi-token UTF-8 character) exactly as a full decode has it.
    """

    prefix_offset: int = 0
    read_offset: int = 0
    text: str = ""
    prefix_text: str = ""


WINDOW_SAFE_DECODERS = frozenset({"ByteLevel", "Metaspace", "Replace", "ByteFallback", "Fuse", "Strip"})
"""Decoders that render a token from its own bytes, plus a leading-space rule that a window reproduces
(byte-level BPE: LLaDA, Qwen2/Dream; SentencePiece-style Metaspace / byte fallback)."""


def supports_incremental_decoding(tokenizer: Any) -> bool:
    """True when decoding a window of recent tokens gives exactly the tail of a full decode.

    Decoders that rewrite text across tokens (WordPiece's cleanup, clean_up_tokenization_spaces) and
    slow tokenizers keep the full re-decode."""
    if getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return False
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    try:
        decoder = json.loads(backend.to_str()).get("decoder")
    except (ValueError, AttributeError):
        return False
    if decoder is None:
        return False
    parts = decoder.get("decoders", []) if decoder.get("type") == "Sequence" else [decoder]
    return bool(parts) and all(part.get("type") in WINDOW_SAFE_DECODERS for part in parts)


class OutputProcessor:
    def __init__(
        self, decode: Callable[[list[int], bool], str], eos_token_ids: list[int], incremental: bool = True
    ) -> None:
        """incremental=False re-decodes the whole answer each time (for tokenizers whose decode
        rewrites text across token boundaries, e.g. clean_up_tokenization_spaces)."""
        self.decode = decode
        self.eos_token_ids = frozenset(eos_token_ids)
        self.incremental = incremental

    def process(self, seq: Sequence, frontier_tokens: list[int]) -> tuple[list[int], str]:
        """Report the tokens the frontier just advanced over; may finish the sequence.

        Returns (new_token_ids, new_text). End tokens are not reported; text is held back while it ends
        in an incomplete UTF-8 character or could still be the start of a stop string.
        """
        params = seq.params
        accepted: list[int] = []
        for token in frontier_tokens:
            if len(seq.output_token_ids) + len(accepted) >= params.max_tokens:
                break
            if token in params.stop_token_ids:
                seq.finish("stop", token)
                break
            if not params.ignore_eos and token in self.eos_token_ids:
                seq.finish("stop")
                break
            accepted.append(token)
        previous_count = len(seq.output_token_ids)
        seq.output_token_ids.extend(accepted)
        if not seq.is_finished and len(seq.output_token_ids) >= params.max_tokens:
            seq.finish("length")

        text = self._decoded_text(seq) if accepted or seq.is_finished else seq.text
        if params.stop and accepted:
            text = self._apply_stop_strings(seq, text, previous_count)
        if not seq.is_finished:
            text = self._stable_prefix(text, params.stop)
        # What was streamed is never retracted: the reported text is the concatenation of the deltas.
        new_text = text[len(seq.text) :]
        seq.text += new_text
        new_token_ids = seq.output_token_ids[previous_count:]
        return new_token_ids, new_text

    def _decoded_text(self, seq: Sequence) -> str:
        """decode(seq.output_token_ids), decoding only the tokens added since the last complete character."""
        ids = seq.output_token_ids
        skip = seq.params.skip_special_tokens
        state = seq.detokenizer_state
        if not self.incremental or state is None or state.read_offset > len(ids):
            state = seq.detokenizer_state = DetokenizerState()
            if not self.incremental:
                return self.decode(ids, skip)
        window_text = self.decode(ids[state.prefix_offset :], skip)
        if not window_text.startswith(state.prefix_text):
            seq.detokenizer_state = None  # never seen with real tokenizers; stay exact
            return self.decode(ids, skip)
        text = state.text + window_text[len(state.prefix_text) :]
        if not text.endswith(REPLACEMENT_CHAR) and len(ids) > state.read_offset:
            state.prefix_offset, state.read_offset = state.read_offset, len(ids)
            state.text = text
            state.prefix_text = self.decode(ids[state.prefix_offset :], skip)
        return text

    def _apply_stop_strings(self, seq: Sequence, text: str, previous_count: int) -> str:
        """Cut the text at the first stop string; drop the tokens after the one that completed it."""
        search_from = max(0, len(seq.text) - max(len(stop) for stop in seq.params.stop))
        hits = [(text.find(stop, search_from), stop) for stop in seq.params.stop]
        hits = [(index, stop) for index, stop in hits if index >= 0]
        if not hits:
            return text
        index, stop = min(hits)
        skip = seq.params.skip_special_tokens
        for count in range(previous_count + 1, len(seq.output_token_ids) + 1):
            if len(self.decode(seq.output_token_ids[:count], skip)) >= index + len(stop):
                del seq.output_token_ids[count:]
                break
        if seq.finish_reason is None or seq.finish_reason == "length":
            seq.finish("stop", stop)
        else:
            seq.finish_reason, seq.stop_reason = "stop", stop
        return text[: index + len(stop)] if seq.params.include_stop_str_in_output else text[:index]

    @staticmethod
    def _stable_prefix(text: str, stops: list[str]) -> str:
        end = len(text)
        while end and text[end - 1] == REPLACEMENT_CHAR:
            end -= 1
        held_back = 0
        for stop in stops:
            for overlap in range(min(len(stop) - 1, end), held_back, -1):
                if text[end - overlap : end] == stop[:overlap]:
                    held_back = overlap
                    break
        return text[: end - held_back]
