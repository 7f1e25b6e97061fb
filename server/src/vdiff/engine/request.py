"""A request: the prompt, its resolved parameters and its n sequences; builds the RequestOutputs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vdiff.engine.canvas_trace import take_frames
from vdiff.engine.outputs import CompletionOutput, RequestOutput, RequestStats
from vdiff.engine.sequence import Sequence
from vdiff.sampling_params import SamplingParams


@dataclass(eq=False)
class Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    seqs: list[Sequence]
    stats: RequestStats = field(default_factory=RequestStats)

    @property
    def is_finished(self) -> bool:
        return all(seq.is_finished for seq in self.seqs)

    def make_output(self, deltas: dict[int, tuple[list[int], str]]) -> RequestOutput:
        """A snapshot of all n generations; `deltas` maps sequence index -> (new tokens, new text)."""
        outputs = []
        for seq in self.seqs:
            new_token_ids, new_text = deltas.get(seq.index, ([], ""))
            logprobs = new_logprobs = stop_logprob = None
            if seq.token_logprobs is not None:
                logprobs = [seq.token_logprobs[i] for i in range(len(seq.output_token_ids))]
                new_logprobs = logprobs[len(logprobs) - len(new_token_ids) :]
                if seq.finish_reason == "stop" and not isinstance(seq.stop_reason, str):
                    stop_logprob = seq.token_logprobs.get(len(seq.output_token_ids))
            outputs.append(
                CompletionOutput(
                    index=seq.index,
                    token_ids=list(seq.output_token_ids),
                    new_token_ids=list(new_token_ids),
                    text=seq.text,
                    new_text=new_text,
                    finish_reason=seq.finish_reason,
                    stop_reason=seq.stop_reason,
                    logprobs=logprobs,
                    new_logprobs=new_logprobs,
                    stop_logprob=stop_logprob,
                    canvas_frames=take_frames(seq),
                )
            )
        self.stats.num_denoising_steps = sum(seq.stats.num_denoising_steps for seq in self.seqs)
        first = self.seqs[0]
        return RequestOutput(
            request_id=self.request_id,
            prompt_token_ids=self.prompt_token_ids,
            outputs=outputs,
            finished=self.is_finished,
            stats=dataclasses.replace(self.stats),
            prompt_logprobs=None if first.is_scoring else first.prompt_logprobs,
        )
