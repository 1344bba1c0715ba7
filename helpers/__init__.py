"""helpers: the reusable code behind the LLM distillation course.

Each module has one job; notebooks import from here and stay thin:

* :mod:`helpers.config`  - profiles, workspace paths, teacher endpoint, secrets
* :mod:`helpers.models`  - prepare the student model folder (bundled GGUF or ModelScope)
* :mod:`helpers.server`  - start/stop a local OpenAI-compatible teacher with ``swift deploy``
* :mod:`helpers.envcheck` - the environment report of notebook 00
* :mod:`helpers.course`  - run every notebook headless and summarise the run
* :mod:`helpers.prompts`, :mod:`helpers.tasks` - prompt templates (files under data/prompts) and task data
* :mod:`helpers.parsing`, :mod:`helpers.teacher` - parse replies; call any OpenAI-compatible teacher
* :mod:`helpers.generate` - the resumable, rate-limited batch generation engine (also ``python -m helpers generate``)
* :mod:`helpers.metrics` - accuracy / format / length / truncation tables
* curation stages: :mod:`helpers.calculator`, :mod:`helpers.verify`, :mod:`helpers.filters`,
  :mod:`helpers.dedup`, :mod:`helpers.decontam`, :mod:`helpers.align`, :mod:`helpers.select`,
  :mod:`helpers.export` (tied together by :mod:`helpers.curate`)
* :mod:`helpers.train` - the typed ``swift sft`` config per profile and the training run, built on
  :mod:`helpers.swift_process` (stream a swift subprocess), :mod:`helpers.runlog` (``logging.jsonl``
  tables and plots) and :mod:`helpers.checkpoints` (runs and checkpoints in swift's layout)
* :mod:`helpers.merge` - ``swift export --merge_lora``, the equivalence check, side-by-side chat
* :mod:`helpers.evaluate`, :mod:`helpers.roi` - evalscope before/after, and whether the student pays off
* further chapters: :mod:`helpers.tagtree` + :mod:`helpers.domain` + :mod:`helpers.consistency`
  (07, questions from a topic), :mod:`helpers.soft_labels` + :mod:`helpers.gkd` (08, soft-label
  distillation and ``swift rlhf --rlhf_type gkd``), :mod:`helpers.fast_thinking` (09, long-to-short)
* :mod:`helpers.i18n` - the Chinese notebooks, generated from the English ones plus translation files
"""

from .config import Settings, get_settings

__all__ = ["Settings", "get_settings"]
__version__ = "0.1.0"
