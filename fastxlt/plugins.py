"""The plugin list: every module that registers built-in tasks and task families into the registry.

Registration goes up, not down (docs/design.md, "Layers"): a family module imports the registry
(``fastxlt.tasks.base``) and ``FAMILY_OPS`` to add itself, and the registry never imports a family.
This module, in the top layer, is the one place that names them all; the registry loads it by name on
its first lookup, as it would an entry point. A user task plugs in the same way: a module that calls
``register(TaskSpec(...))``, imported before the task is looked up.

The order is the registration order (``all_tasks()`` lists tasks in it), so it is not alphabetical.
"""

# isort: skip_file
from __future__ import annotations

import fastxlt.tasks.pair_classification  # noqa: F401
import fastxlt.tasks.span_qa  # noqa: F401
import fastxlt.tasks.tagging  # noqa: F401
import fastxlt.tasks.multiple_choice  # noqa: F401
import fastxlt.retrieval.dual_encoder  # noqa: F401  - squad_retrieval (the retrieval family)
import fastxlt.retrieval.mewsli  # noqa: F401  - mewslix_wikipedia
import fastxlt.synthetic.tasks  # noqa: F401  - the embedded synthetic world's tasks
