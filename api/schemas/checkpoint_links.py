"""Signed checkpoint download links (Juice extension): request and response bodies."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_EXPIRES_IN = 900  # long enough to start a download; a started download outlives its link


class CheckpointLinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expires_in: int = Field(DEFAULT_EXPIRES_IN, ge=10, le=86400, description="Seconds the link stays valid.")


class CheckpointLink(BaseModel):
    object: Literal["fine_tuning.job.checkpoint.link"] = "fine_tuning.job.checkpoint.link"
    url: str  # root-relative: open it on the API's own origin, with no Authorization header
    expires_at: int
