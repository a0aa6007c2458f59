"""The params and MACs of every registered model at its defaults, measured by the profiler and stored in
``model_table.json`` so that ``ghostnet list`` shows them without building ~25 models. The file is generated
(``python scripts/model_table.py``), never edited by hand; a test re-measures every row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..models import create_model, list_models, model_entry
from ..models.files import write_atomically
from ..models.registry import IMAGE_TASKS
from .profile import profile_model

__all__ = ["TABLE_PATH", "default_input_size", "load_table", "measure", "write_table"]

TABLE_PATH = Path(__file__).with_name("model_table.json")


def default_input_size(name: str) -> int:
    """The square input side a registered model is described at: its ``input_size``, else ImageNet's 224."""
    return int(model_entry(name).default_cfg.get("input_size", 224))


def measure(name: str) -> dict[str, int]:
    """``{"input_size", "params", "macs"}`` of the registered model `name`, built with its default arguments."""
    size = default_input_size(name)
    with torch.no_grad():
        p = profile_model(create_model(name).eval(), (size, size))
    return {"input_size": size, "params": p.params, "macs": p.macs}


def write_table(path: Path = TABLE_PATH, names: list[str] | None = None) -> dict[str, dict[str, int]]:
    """Measure every registered model (or `names`) and write the table as JSON; returns it."""
    table = {name: measure(name) for name in (names if names is not None else list_models(task=IMAGE_TASKS))}
    text = json.dumps(table, indent=1, sort_keys=True) + "\n"
    write_atomically(Path(path), lambda f: f.write(text.encode()), lambda: len(text))
    return table


def load_table(path: Path = TABLE_PATH) -> dict[str, Any]:
    """The stored table (empty when the file is missing)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
