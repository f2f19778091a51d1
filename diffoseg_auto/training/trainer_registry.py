"""Trainers selectable with ``-tr`` by name: DiffOSeg and the baselines of the same pipeline.

Entries are import strings, so listing a name never imports a baseline (and no import cycle with
the trainer module arises). A dotted path ``package.module.ClassName`` selects a user subclass.
"""
from __future__ import annotations

import importlib

from diffoseg_auto.errors import InvalidArgumentError

TRAINERS: dict[str, str] = {
    "DiffOSegTrainer": "diffoseg_auto.training.trainer:DiffOSegTrainer",
    "ConsensusUNetTrainer": "diffoseg_auto.training.baselines.consensus_unet:ConsensusUNetTrainer",
    "ConsensusUNetSTAPLETrainer": "diffoseg_auto.training.baselines.consensus_unet:ConsensusUNetSTAPLETrainer",
    "MultiHeadUNetTrainer": "diffoseg_auto.training.baselines.multihead_unet:MultiHeadUNetTrainer",
    "ProbUNetTrainer": "diffoseg_auto.training.baselines.prob_unet:ProbUNetTrainer",
}


def _import(path: str, name: str) -> type:
    module, _, cls = path.replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise InvalidArgumentError(f"Trainer '{name}' could not be imported ({e}). Give a dotted path module.ClassName.") from None


def get_trainer_class(name: str) -> type:
    """A registered name (see TRAINERS) or a dotted path to a DiffOSegTrainer subclass."""
    if name in TRAINERS:
        return _import(TRAINERS[name], name)
    if "." in name:
        found = _import(name, name)
        # the base class by its import string too: the trainer module imports the training request, which asks here
        if isinstance(found, type) and issubclass(found, _import(TRAINERS["DiffOSegTrainer"], "DiffOSegTrainer")):
            return found
    raise InvalidArgumentError(f"Unknown trainer '{name}'. Use one of {sorted(TRAINERS)} or a dotted path to a "
                     "DiffOSegTrainer subclass.")

