"""Dashboard metrics: aggregates only, small counts suppressed."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import Monitor, ServicesDep
from hub.api.problem import problem_responses

router = APIRouter(prefix="/v1", tags=["dashboard"])

_CELL_EXAMPLE: dict[str, Any] = {
    "key": "school-songjiang-no2-middle → camhs-songjiang-mhc",
    "n": 12,
    "suppressed": False,
    "delivery_latency": {"n": 12, "median_s": 0.4, "p90_s": 1.1, "suppressed": False},
    "time_to_acknowledge": {"n": 11, "median_s": 1260.0, "p90_s": 5400.0, "suppressed": False},
    "time_to_decision": {"n": 10, "median_s": 7200.0, "p90_s": 86400.0, "suppressed": False},
    "time_to_first_contact": {"n": "<5", "suppressed": True},
    "rejection_rate": {"n": 10, "rate": 0.1, "suppressed": False},
    "closed_loop_rate": {"n": 9, "rate": 0.5556, "suppressed": False},
    "ack_within_sla": {"n": 11, "rate": 0.9091, "suppressed": False},
    "first_contact_within_sla": {"n": "<5", "suppressed": True},
    "open_breaches": 0,
}


class MetricsOut(BaseModel):
    """Turnaround metrics; a cell with fewer than 5 cases is ``{"n": "<5", "suppressed": true}``."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "by": "pair",
                    "period": "week",
                    "since": None,
                    "until": None,
                    "scope": "district",
                    "generated_at": "2025-03-03T08:00:00Z",
                    "small_count_threshold": 5,
                    "overall": {**_CELL_EXAMPLE, "key": "all"},
                    "groups": [
                        _CELL_EXAMPLE,
                        {"key": "police-songjiang → district-centre", "n": "<5", "suppressed": True},
                    ],
                    "legal_basis_share": {
                        "consent": {"n": 12, "count": 9, "rate": 0.75, "suppressed": False}
                    },
                }
            ]
        },
    )

    by: str
    period: str
    since: datetime | None = None
    until: datetime | None = None
    scope: str = Field(description="'district' or the supervisor's organisation")
    generated_at: datetime
    small_count_threshold: int
    overall: dict[str, Any]
    groups: list[dict[str, Any]]
    legal_basis_share: dict[str, Any]


@router.get(
    "/dashboard/metrics",
    response_model=MetricsOut,
    summary="Turnaround by agency pair, town, risk level or period: medians, p90, rates, % within SLA",
    responses=problem_responses(400, 401, 403, 422),
)
def dashboard_metrics(
    caller: Monitor,
    services: ServicesDep,
    by: Annotated[str, Query(pattern="^(pair|town|risk|period)$")] = "pair",
    period: Annotated[str, Query(pattern="^(day|week|month)$")] = "week",
    since: Annotated[datetime | None, Query(description="Deliveries created at or after")] = None,
    until: Annotated[datetime | None, Query(description="Deliveries created before")] = None,
    town: Annotated[str | None, Query(examples=["yueyang"])] = None,
    risk_level: Annotated[int | None, Query(ge=1, le=4)] = None,
) -> dict[str, Any]:
    assert services.metrics is not None
    report = services.metrics.report(caller, by, period, since, until, town, risk_level)
    return report.as_dict()
