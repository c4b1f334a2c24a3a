"""The organisation directory: agencies, the towns they serve, public keys and escalation posts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import AnyCaller, ServicesDep
from hub.api.problem import problem_responses

router = APIRouter(prefix="/v1", tags=["directory"])


class DirectoryPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "id": "camhs-songjiang-mhc",
                            "type": "camhs",
                            "name": {"zh": "松江区精神卫生中心", "en": "Songjiang Mental Health Centre"},
                            "towns": "all",
                            "queues": ["child-adolescent"],
                            "public_keys": [],
                            "escalation": [
                                {"role": {"zh": "值班医生", "en": "duty doctor"}, "phone": "021-0000-0000"}
                            ],
                            "on_duty": [{"from": "08:00", "to": "17:00", "days": ["mon", "tue"]}],
                            "active": True,
                        }
                    ],
                    "count": 1,
                    "total": 1,
                    "limit": 100,
                    "offset": 0,
                    "next_offset": None,
                    "version": "sha256:…",
                    "source": "database",
                    "towns": [
                        {"code": "yueyang", "zh": "岳阳街道", "en": "Yueyang Subdistrict", "kind": "street"}
                    ],
                }
            ]
        }
    )

    items: list[dict[str, Any]]
    count: int
    total: int
    limit: int
    offset: int
    next_offset: int | None = None
    version: str | None = Field(default=None, description="Hash of the directory content")
    source: str | None = Field(default=None, description="'database' or the YAML file it was read from")
    towns: list[dict[str, Any]]


@router.get(
    "/directory",
    response_model=DirectoryPage,
    summary="Organisations in the directory, filterable by agency type, town and active flag",
    responses=problem_responses(401, 403, 422),
)
def directory(
    caller: AnyCaller,
    services: ServicesDep,
    type: Annotated[str | None, Query(examples=["camhs"], description="Agency type")] = None,
    town: Annotated[str | None, Query(examples=["yueyang"])] = None,
    active: Annotated[bool | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    assert services.listings is not None
    return services.listings.directory(caller, type, town, active, limit, offset).as_dict()
