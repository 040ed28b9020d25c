"""Restoration pretext tasks (BiaPy's self-supervision): a dense network learns to undo a degradation of each image.

One file per task (``crappify``, ``masking``), each registering itself in :data:`PRETEXT_TASKS`; the Lightning
module that trains any of them on patches and evaluates them on whole images is :mod:`innerssl.restoration.module`.
"""

from innerssl.restoration.registry import PRETEXT_TASKS, PretextTask, Restoration, pretext_task, register_task

__all__ = ["PRETEXT_TASKS", "PretextTask", "Restoration", "pretext_task", "register_task"]
