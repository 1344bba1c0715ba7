"""helpers: the reusable code behind the LLM distillation course, one subpackage per stage.

Read it in pipeline order; a stage imports only :mod:`helpers.core` and the stages
before it (``tests/test_layout.py`` checks it):

* :mod:`helpers.core` - configuration and profiles, JSONL files, the disk cache, rows, swift subprocesses
* :mod:`helpers.models` - the student prepared once, model loading, local greedy generation
* :mod:`helpers.teacher` - prompt files, one chat call, the batch engine, reply parsing, the local server
* :mod:`helpers.tasks` - each task's data as prompt rows and how its answers are checked
* :mod:`helpers.curate` - verify, filter, dedup, decontaminate, align, select, export; the funnel
* :mod:`helpers.train` - the ``swift sft`` config and runner, run logs, checkpoints
* :mod:`helpers.merge` - merge the adapter, prove nothing changed, chat side by side
* :mod:`helpers.evaluate` - evalscope before and after, one scorer, quick checks, ROI
* :mod:`helpers.techniques` - the further chapters: domain questions, soft labels and GKD, fast thinking
* :mod:`helpers.course` - course tooling: the headless runner, notebook 00's report, i18n, the CLI
"""

from .core.config import Settings, get_settings

__all__ = ["Settings", "get_settings"]
__version__ = "0.1.0"
