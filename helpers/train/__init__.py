"""Training: the ``swift sft`` config and its runner, the thinking-loss switch, run logs and checkpoints."""
