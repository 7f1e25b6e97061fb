"""Frontier advances -> reported tokens and text: end tokens, stop strings, max_tokens, streaming."""

from __future__ import annotations

from collections.abc import Callable

from vdiff.engine.sequence import Sequence

REPLACEMENT_CHAR = "\ufffd"


class OutputProcessor:
    def __init__(self, decode: Callable[[list[int]], str], eos_token_ids: list[int]) -> None:
        self.decode = decode
        self.eos_token_ids = frozenset(eos_token_ids)

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

        text = self.decode(seq.output_token_ids) if accepted or seq.is_finished else seq.text
        if params.stop and accepted:
            text = self._apply_stop_strings(seq, text, previous_count)
        if not seq.is_finished:
            text = self._stable_prefix(text, params.stop)
        # What was streamed is never retracted: the reported text is the concatenation of the deltas.
        new_text = text[len(seq.text) :]
        seq.text += new_text
        new_token_ids = seq.output_token_ids[previous_count:]
        return new_token_ids, new_text

    def _apply_stop_strings(self, seq: Sequence, text: str, previous_count: int) -> str:
        """Cut the text at the first stop string; drop the tokens after the one that completed it."""
        search_from = max(0, len(seq.text) - max(len(stop) for stop in seq.params.stop))
        hits = [(text.find(stop, search_from), stop) for stop in seq.params.stop]
        hits = [(index, stop) for index, stop in hits if index >= 0]
        if not hits:
            return text
        index, stop = min(hits)
        for count in range(previous_count + 1, len(seq.output_token_ids) + 1):
            if len(self.decode(seq.output_token_ids[:count])) >= index + len(stop):
                del seq.output_token_ids[count:]
                break
        if seq.finish_reason is None or seq.finish_reason == "length":
            seq.finish("stop", stop)
        else:
            seq.finish_reason, seq.stop_reason = "stop", stop
        return text[:index]

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
