"""A campaign run's identity: model, loss and fold, and its folder name."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bone_age.evaluation.pooling import MODEL_ORDER

FOLDS = 5
# ASCII only and matched whole (fullmatch): ``\d`` would take Arabic-Indic digits, ``$`` a
# trailing newline, and either would name a folder no run has.
RUN_NAME = re.compile(r"(?P<model>[a-z0-9_]+?)_(?P<loss>mse|softmax|mv)_fold(?P<fold>[0-9])")


@dataclass(frozen=True)
class Run:
    """One run of the campaign."""

    model: str
    loss: str
    fold: int

    @property
    def name(self) -> str:
        return f"{self.model}_{self.loss}_fold{self.fold}"

    @classmethod
    def parse(cls, name: str) -> Run | None:
        m = RUN_NAME.fullmatch(name) if isinstance(name, str) else None
        if m is None or m["model"] not in MODEL_ORDER or int(m["fold"]) >= FOLDS:
            return None
        return cls(m["model"], m["loss"], int(m["fold"]))
