"""Batches and objectives for the demo models: masked-diffusion SFT (LLaDA, Dream) and next-token (AR).

Models follow the `vdiff.models.base.DiffusionModel` contract: model(input_ids, position_ids,
attention_mask) -> ModelOutput with raw per-position logits. Prompts are left-padded (keys masked,
positions = cumsum(mask) - 1), the response canvas is `answer + end-of-answer + pad...` as in LLaDA's SFT.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from bench.tasks import TaskInstance

PROMPT_PLACEHOLDER = "\x00PROMPT\x00"


@dataclass(frozen=True, slots=True)
class SpecialIds:
    mask: int
    pad: int
    end_of_answer: int


class ChatEncoder:
    """Encodes user prompts exactly as the chat template + tokenizer do at serving time."""

    def __init__(self, tokenizer: Tokenizer, rendered_template: str) -> None:
        self.tokenizer = tokenizer
        self.prefix, self.suffix = rendered_template.split(PROMPT_PLACEHOLDER)

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(self.prefix + prompt + self.suffix, add_special_tokens=False).ids

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer.encode(answer, add_special_tokens=False).ids


@dataclass(slots=True)
class Batch:
    input_ids: torch.Tensor
    """[B, P + L]: left-padded prompt then the clean response canvas."""
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    """[B, P + L] bool key mask (False on left padding)."""
    prompt_width: int
    answer_lengths: torch.Tensor
    """[B] tokens up to and including the end-of-answer token."""


def make_batch(
    examples: list[tuple[str, str]], encoder: ChatEncoder, special: SpecialIds, canvas_length: int
) -> Batch:
    prompts = [encoder.prompt_ids(prompt) for prompt, _ in examples]
    answers = [[*encoder.answer_ids(answer), special.end_of_answer] for _, answer in examples]
    if any(len(answer) > canvas_length for answer in answers):
        raise ValueError(f"an answer does not fit in a canvas of {canvas_length} tokens")
    width = max(map(len, prompts))
    rows, masks = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        padding = width - len(prompt)
        canvas = answer + [special.pad] * (canvas_length - len(answer))
        rows.append([special.pad] * padding + prompt + canvas)
        masks.append([False] * padding + [True] * (len(prompt) + canvas_length))
    attention_mask = torch.tensor(masks)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return Batch(
        input_ids=torch.tensor(rows),
        position_ids=position_ids,
        attention_mask=attention_mask,
        prompt_width=width,
        answer_lengths=torch.tensor([len(answer) for answer in answers]),
    )


def masked_diffusion_loss(
    model: torch.nn.Module, batch: Batch, special: SpecialIds, generator: torch.Generator, logit_shift: bool
) -> torch.Tensor:
    """LLaDA SFT: mask each response token with prob t ~ U(0, 1), CE on masked tokens weighted by 1/t.

    Normalised per sequence by the response length (answer, end token and its EOS padding), like the
    reference SFT; the prompt is never masked. Stratified t across the batch lowers the variance.
    """
    batch_size, total = batch.input_ids.shape
    canvas = total - batch.prompt_width
    eps = 1e-3
    strata = (torch.arange(batch_size) + torch.rand(batch_size, generator=generator)) / batch_size
    t = eps + (1 - eps) * strata[torch.randperm(batch_size, generator=generator)]
    is_masked = torch.rand(batch_size, canvas, generator=generator) < t[:, None]
    # Every sequence learns from at least one position.
    forced = torch.randint(canvas, (batch_size,), generator=generator)
    is_masked[torch.arange(batch_size), forced] = True
    noisy = batch.input_ids.clone()
    noisy[:, batch.prompt_width :][is_masked] = special.mask
    logits = model(noisy, batch.position_ids, batch.attention_mask).logits
    if logit_shift:
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    response_logits = logits[:, batch.prompt_width :].float()
    targets = batch.input_ids[:, batch.prompt_width :]
    token_loss = F.cross_entropy(response_logits[is_masked], targets[is_masked], reduction="none")
    weights = (1.0 / t)[:, None].expand(batch_size, canvas)[is_masked] / canvas
    return (token_loss * weights).sum() / batch_size


def next_token_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Causal LM loss on the response: answer, end-of-answer and the EOS padding after it."""
    logits = model(batch.input_ids, batch.position_ids, batch.attention_mask).logits.float()
    start = batch.prompt_width - 1
    predictions = logits[:, start:-1]
    targets = batch.input_ids[:, start + 1 :]
    return F.cross_entropy(predictions.reshape(-1, predictions.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def greedy_one_token_per_step(
    model: torch.nn.Module,
    batch: Batch,
    special: SpecialIds,
    *,
    logit_shift: bool,
    is_causal: bool,
    block_size: int | None = None,
) -> torch.Tensor:
    """Training-time monitor: commit the single most confident masked position per forward (for the
    AR model: the next position; for a block-diffusion model: within the earliest block, by absolute
    position, that still has a mask). The benchmark measures the engine's decoders, not this one."""
    x = batch.input_ids.clone()
    width = batch.prompt_width
    x[:, width:] = special.mask
    rows = torch.arange(x.shape[0])
    for step in range(x.shape[1] - width):
        logits = model(x, batch.position_ids, batch.attention_mask).logits.float()
        if logit_shift or is_causal:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        logits[..., special.mask] = float("-inf")
        confidence, tokens = logits[:, width:].softmax(-1).max(-1)
        if is_causal:
            position = torch.full_like(rows, step)
        else:
            is_open = x[:, width:] == special.mask
            if block_size is not None:
                blocks = batch.position_ids[:, width:] // block_size
                first = torch.where(is_open, blocks, blocks.max() + 1).min(-1, keepdim=True).values
                is_open &= blocks == first
            confidence[~is_open] = -1.0
            position = confidence.argmax(-1)
        x[rows, width + position] = tokens[rows, position]
    return x[:, width:]


def decode_answer(token_ids: list[int], tokenizer: Tokenizer, end_ids: set[int]) -> str:
    for index, token_id in enumerate(token_ids):
        if token_id in end_ids:
            token_ids = token_ids[:index]
            break
    return tokenizer.decode(token_ids, skip_special_tokens=True)


def monitor_accuracy(
    model: torch.nn.Module,
    instances: dict[str, list[TaskInstance]],
    encoder: ChatEncoder,
    special: SpecialIds,
    end_ids: set[int],
    canvas_length: int,
    *,
    logit_shift: bool,
    is_causal: bool,
    block_size: int | None = None,
) -> dict[str, float]:
    was_training = model.training
    model.eval()
    accuracy: dict[str, float] = {}
    for task, task_instances in instances.items():
        batch = make_batch(
            [(i.prompt, i.answers[0]) for i in task_instances], encoder, special, canvas_length
        )
        outputs = greedy_one_token_per_step(
            model, batch, special, logit_shift=logit_shift, is_causal=is_causal, block_size=block_size
        )
        correct = sum(
            instance.check(decode_answer(row.tolist(), encoder.tokenizer, end_ids))
            for instance, row in zip(task_instances, outputs, strict=True)
        )
        accuracy[task] = correct / len(task_instances)
    model.train(was_training)
    return accuracy
