"""Field types shared by the status models: Kubernetes timestamps and bounded free text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, PlainSerializer
from pydantic.alias_generators import to_camel


def now_utc() -> datetime:
    """The current time at whole seconds, as metav1.Time stores it (no churn from microseconds)."""
    return datetime.now(UTC).replace(microsecond=0)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def truncated(limit: int) -> AfterValidator:
    """Cut free text (Job messages, reasons for a person) to the CRD's maxLength.

    Cut, never refused: the operator must not fail to write status because a Pod printed a
    long message.
    """

    def cut(text: str) -> str:
        return text if len(text) <= limit else text[: limit - 3] + "..."

    return AfterValidator(cut)


# A timestamp as Kubernetes writes it: RFC 3339, UTC, whole seconds ("2026-01-02T03:04:05Z").
Time = Annotated[AwareDatetime, PlainSerializer(_rfc3339, return_type=str, when_used="json")]


class StatusModel(BaseModel):
    """camelCase like the CRD; fields a newer operator wrote are ignored, not fatal."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
    )
