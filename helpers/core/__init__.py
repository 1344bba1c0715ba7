"""The layer under every stage: configuration, JSONL files, the one disk cache, rows and text, swift subprocesses.

Nothing here imports another part of ``helpers``.
"""
