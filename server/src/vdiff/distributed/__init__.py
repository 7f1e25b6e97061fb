"""Tensor parallelism on one node (`--tensor-parallel-size N`).

Rank 0 is the `vdiff serve` process (scheduler, policies, HTTP); it starts N-1 worker processes
(worker.py) that load their slices of the same checkpoints and run every forward with it. Layers are
Megatron-style (layers.py): one all-reduce per attention block and per MLP block, a vocabulary-parallel
embedding and LM head whose logits are gathered on rank 0. Each rank keeps the keys/values of its own
heads: rank 0's engine holds MirroredTensor handles (mirror.py) and every operation on them is replayed
by the workers before the next forward, so no cache crosses a process boundary.
"""
