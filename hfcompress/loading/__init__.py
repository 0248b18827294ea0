"""Load any Hub model (repo id or local folder) with its tokenizer / processor."""

from .load import TASKS, ModelBundle, ModelSource, detect_task, load

__all__ = ["TASKS", "ModelBundle", "ModelSource", "detect_task", "load"]
