"""Where a study's store is, as plain JSON: what a trainer is told and a runner opens."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal


@dataclass(frozen=True)
class StoreRef:
    """Where a study's store is; never holds credentials (they come from the environment)."""

    kind: Literal["local", "s3"]
    #: Local folder (kind local).
    root: str = ""
    endpoint: str = ""
    bucket: str = ""
    #: Key prefix inside the bucket, namespace included (``hpo/default``).
    prefix: str = ""
    tls: bool = True
    region: str | None = None
    ca_bundle: str | None = None
    create_bucket: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StoreRef:
        return cls(**json.loads(text))

    @property
    def uri(self) -> str:
        if self.kind == "local":
            return self.root
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")
