"""Server-rendered staff pages: sign-in, worklist, referral, referrer view, dashboard, escalations, audit.

Chinese first (``?lang=en`` switches and is remembered in a cookie). Every form POST carries the
session's CSRF token; every page checks role and agency through the same services as the API.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from hub.api import chart
from hub.api.deps import LANG_COOKIE, SESSION_COOKIE, ApiServices, client_address, session_caller
from hub.api.i18n import LANGS, Translator, pick_lang
from hub.api.routes.auth import clear_session_cookie, set_session_cookie
from hub.domain.error import Forbidden, HubError, TooManyRequests, Unauthenticated
from hub.domain.lifecycle import Party, TaskStatus, allowed_targets
from hub.services.breakglass import GUARDIAN_NOTICES, REVIEW_FILTERS, REVIEW_OUTCOMES
from hub.services.identity import StaffCaller, csrf_matches
from hub.services.listing import ListFilter
from hub.services.task import ChangeStatus

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
LOGIN_CSRF_COOKIE = "qx_login_csrf"
PAGE_SIZE = 25

RECIPIENT_ROLES = frozenset({"clinician", "case-worker", "supervisor"})
SENDER_ROLES = frozenset({"referrer", "supervisor"})
PARTY_ROLES = RECIPIENT_ROLES | SENDER_ROLES
MONITOR_ROLES = frozenset({"district-monitor", "supervisor"})
HOME = {
    "clinician": "/worklist",
    "case-worker": "/worklist",
    "supervisor": "/worklist",
    "referrer": "/referrals",
    "district-monitor": "/dashboard",
    "auditor": "/audit",
    "admin": "/admin/users",
}
NAV = [
    ("/worklist", "nav.worklist", RECIPIENT_ROLES),
    ("/referrals", "nav.referrals", SENDER_ROLES),
    ("/escalations", "nav.escalations", frozenset({"supervisor"})),
    ("/break-glass", "nav.breakglass", frozenset({"supervisor"})),
    ("/dashboard", "nav.dashboard", MONITOR_ROLES),
    ("/audit", "nav.audit", frozenset({"auditor"})),
    ("/admin/users", "nav.users", frozenset({"admin"})),
]

router = APIRouter(include_in_schema=False)


# ------------------------------------------------------------------------------------------ helpers


def _services(request: Request) -> ApiServices:
    services: ApiServices = request.app.state.services
    return services


def _lang(request: Request) -> str:
    return pick_lang(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))


def local_time(value: Any, with_date: bool = True) -> str:
    if not isinstance(value, datetime):
        return "—" if value in (None, "") else str(value)
    local = value.astimezone(SHANGHAI)
    return local.strftime("%Y-%m-%d %H:%M" if with_date else "%H:%M")


def duration_text(seconds: int | float | None) -> str:
    if seconds is None:
        return "—"
    s = abs(int(seconds))
    days, rem = divmod(s, 86400)
    hours, rem = divmod(rem, 3600)
    minutes = rem // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m"


def _org_names(services: ApiServices, caller: Any, lang: str) -> dict[str, str]:
    if services.listings is None or caller is None:
        return {}
    try:
        page = services.listings.directory(caller, limit=10_000)
    except HubError:
        return {}
    key = "en" if lang == "en" else "zh"
    return {o["id"]: (o.get("name") or {}).get(key) or o["id"] for o in page.items}


def render(
    request: Request,
    template: str,
    caller: StaffCaller | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    services = _services(request)
    lang = _lang(request)
    t = Translator(lang)
    names = _org_names(services, caller, lang)
    other = "en" if lang == "zh" else "zh"
    params = dict(request.query_params)
    params["lang"] = other
    response = templates.TemplateResponse(
        request,
        template,
        {
            "t": t,
            "lang": lang,
            "caller": caller,
            "csrf": caller.csrf_token if caller else "",
            "nav": [(href, t(key)) for href, key, roles in NAV if caller and caller.role in roles],
            "org": lambda org_id: names.get(org_id, org_id),
            "local_time": local_time,
            "duration": duration_text,
            "switch_lang_url": f"{request.url.path}?{urlencode(params)}",
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
    )
    if request.query_params.get("lang") in LANGS:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax", httponly=True)
    # Pages carry referral data: never cached, never framed, scripts and styles only from the hub.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def html_error(request: Request, status: int, code: str, message: str) -> Response:
    """Problem details for browsers: sign-in redirect for 401, a page for the rest."""
    if status == 401:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    services = _services(request)
    caller = session_caller(request, services)
    return render(
        request, "error.html", caller, status_code=status, status=status, code=code, message=message
    )


def _require(request: Request, roles: Iterable[str]) -> StaffCaller:
    caller = session_caller(request, _services(request))
    if caller is None:
        raise Unauthenticated("sign in first")
    if caller.role not in frozenset(roles):
        raise Forbidden(f"role '{caller.role}' may not open this page", code="role-forbidden")
    return caller


def _check_csrf(caller: StaffCaller, token: str) -> None:
    if not csrf_matches(caller.csrf_token, token):
        raise Forbidden("the form's CSRF token is missing or stale; reload the page", code="csrf-failed")


def _safe_next(value: str | None) -> str | None:
    # Only local paths: an open redirect after sign-in would be a phishing aid.
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return None


# ------------------------------------------------------------------------------------------ sign-in


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    caller = session_caller(request, _services(request))
    if caller is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(HOME.get(caller.role, "/login"), status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    identity = _services(request).identity
    # A redirect-based provider (OIDC) offers its own button; the local provider has none.
    external = identity.provider.login_url(token) if identity is not None else None
    response = render(
        request,
        "login.html",
        None,
        login_csrf=token,
        next=_safe_next(next) or "",
        error=None,
        external=external,
    )
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login")
    return response


@router.post("/login", response_class=HTMLResponse)
def login_submit(
    request: Request,
    username: str = Form(...),
    password: str = Form(...),
    csrf_token: str = Form(""),
    next: str = Form(""),
) -> Response:
    services = _services(request)
    # Login CSRF: a double-submit token (cookie + field), since there is no session yet.
    if not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE, ""), csrf_token):
        raise Forbidden("the sign-in form expired; reload the page", code="csrf-failed")
    t = Translator(_lang(request))
    fresh = secrets.token_urlsafe(24)
    try:
        if services.identity is None:
            raise Unauthenticated("staff sign-in is not configured")
        session = services.identity.login(username, password, client_address(request))
    except TooManyRequests as exc:
        response = render(
            request,
            "login.html",
            None,
            status_code=429,
            login_csrf=fresh,
            next=next,
            error=t("login.throttled", minutes=max(1, exc.retry_after // 60 + 1)),
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        response.set_cookie(LOGIN_CSRF_COOKIE, fresh, httponly=True, samesite="strict", path="/login")
        return response
    except Unauthenticated:
        response = render(
            request, "login.html", None, status_code=401, login_csrf=fresh, next=next, error=t("login.failed")
        )
        response.set_cookie(LOGIN_CSRF_COOKIE, fresh, httponly=True, samesite="strict", path="/login")
        return response
    target = _safe_next(next) or HOME.get(session.user.role.value, "/")
    redirect = RedirectResponse(target, status_code=303)
    set_session_cookie(redirect, request, session, services.cookie_secure)
    redirect.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return redirect


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("")) -> Response:
    services = _services(request)
    caller = session_caller(request, services)
    if caller is not None:
        _check_csrf(caller, csrf_token)
        token = request.cookies.get(SESSION_COOKIE, "")
        if services.identity is not None and token:
            services.identity.logout(token)
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(response)
    return response


# ------------------------------------------------------------------------------------------ worklist


@router.get("/worklist", response_class=HTMLResponse)
def worklist(request: Request, status: str = "pending", risk: int | None = None, offset: int = 0) -> Response:
    caller = _require(request, RECIPIENT_ROLES)
    services = _services(request)
    assert services.listings is not None
    statuses: tuple[str, ...] = ()
    if status == "pending":
        statuses = ("requested", "received", "accepted", "in-progress", "on-hold")
    elif status and status != "all":
        statuses = (status,)
    flt = ListFilter(statuses=statuses, risk_level=risk)
    page = services.listings.inbox(caller, flt, PAGE_SIZE, max(0, offset))
    return render(
        request,
        "worklist.html",
        caller,
        page=page,
        status=status,
        risk=risk,
        statuses=["pending", "all", *(s.value for s in TaskStatus)],
    )


@router.get("/worklist/{task_id}", response_class=HTMLResponse)
async def delivery_page(
    request: Request, task_id: str, done: str | None = None, error: str | None = None
) -> Response:
    caller = _require(request, RECIPIENT_ROLES)
    services = _services(request)
    assert services.open_delivery is not None
    opened = await services.open_delivery(caller, task_id)
    row = opened.delivery
    detail = services.queries.referral(caller, row.referral_id)
    mine: dict[str, Any] = next((d for d in detail["deliveries"] if d["task_id"] == task_id), {})
    status = TaskStatus(row.status)
    allowed = allowed_targets(status, Party.RECIPIENT)
    # Cancelling is the rare move: it goes last. Leaving on-hold for in-progress reads as "resume".
    actions = [s.value for s in allowed if s is not TaskStatus.CANCELLED]
    actions += [TaskStatus.CANCELLED.value] if TaskStatus.CANCELLED in allowed else []
    if status is TaskStatus.ON_HOLD:
        actions = ["resume" if a == TaskStatus.IN_PROGRESS.value else a for a in actions]
    return render(
        request,
        "delivery.html",
        caller,
        row=row,
        detail=detail,
        mine=mine,
        opened=opened,
        sections=summarise_bundle(opened.content, Translator(_lang(request))) if opened.content else [],
        raw=json.dumps(opened.content, ensure_ascii=False, indent=2) if opened.content else "",
        actions=actions,
        done=done,
        error=error,
    )


@router.post("/worklist/{task_id}/status")
async def delivery_action(
    request: Request,
    task_id: str,
    action: str = Form(...),
    csrf_token: str = Form(""),
    reason: str = Form(""),
    feedback: str = Form(""),
) -> Response:
    caller = _require(request, RECIPIENT_ROLES)
    _check_csrf(caller, csrf_token)
    services = _services(request)
    target = "in-progress" if action == "resume" else action
    try:
        await services.transition(
            caller,
            ChangeStatus(
                task_id=task_id,
                status=target,
                reason=reason.strip() or None,
                business_status="feedback-sent" if target == "completed" else None,
                feedback=feedback.strip() or None,
            ),
        )
    except HubError as exc:
        if exc.status in (404, 403):
            raise
        return RedirectResponse(f"/worklist/{quote(task_id)}?error={quote(exc.code)}", status_code=303)
    return RedirectResponse(f"/worklist/{quote(task_id)}?done={quote(target)}", status_code=303)


# ------------------------------------------------------------------------------------------ referrer


@router.get("/referrals", response_class=HTMLResponse)
def referrals_page(request: Request, offset: int = 0) -> Response:
    caller = _require(request, SENDER_ROLES)
    services = _services(request)
    assert services.listings is not None
    page = services.listings.sent(caller, ListFilter(), PAGE_SIZE, max(0, offset))
    return render(request, "referrals.html", caller, page=page)


@router.get("/referrals/{referral_id}", response_class=HTMLResponse)
def referral_page(request: Request, referral_id: str) -> Response:
    caller = _require(request, PARTY_ROLES)
    services = _services(request)
    detail = services.queries.referral(caller, referral_id)
    return render(request, "referral.html", caller, detail=detail)


# ------------------------------------------------------------------------------------------ dashboard


def _parse_day(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=SHANGHAI)
    except ValueError:
        return None


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(
    request: Request, period: str = "week", since: str | None = None, until: str | None = None
) -> Response:
    caller = _require(request, MONITOR_ROLES)
    services = _services(request)
    assert services.metrics is not None
    start, end = _parse_day(since), _parse_day(until)
    if end is not None:
        end += timedelta(days=1)  # "until" is inclusive on the page
    reports = services.metrics.reports(
        caller,
        ("pair", "town", "risk", "period"),
        period if period in ("day", "week", "month") else "week",
        start,
        end,
    )
    t = Translator(_lang(request))
    names = _org_names(services, caller, t.lang)
    return render(
        request,
        "dashboard.html",
        caller,
        reports={k: v.as_dict() for k, v in reports.items()},
        charts=_charts(reports, t, names),
        period=period,
        since=since or "",
        until=until or "",
        metric_keys=[
            "time_to_acknowledge",
            "time_to_decision",
            "time_to_first_contact",
            "delivery_latency",
        ],
        rate_keys=["rejection_rate", "closed_loop_rate", "ack_within_sla", "first_contact_within_sla"],
        hours=chart.hours,
        percent=chart.percent,
        label=lambda by, key: _group_label(by, key, t, names),
    )


def _group_label(by: str, key: str, t: Translator, names: dict[str, str]) -> str:
    if by == "pair" and " → " in key:
        a, b = key.split(" → ", 1)
        return f"{names.get(a, a)} → {names.get(b, b)}"
    if by == "town":
        return t.code("town", key) if key != "unknown" else t("unknown")
    if by == "risk":
        return t.risk(key)
    return key


def _charts(reports: dict[str, Any], t: Translator, names: dict[str, str]) -> list[Any]:
    out = []
    pair = reports["pair"]
    bars = []
    for g in pair.groups:
        d = g.time_to_acknowledge
        label = _group_label("pair", g.key, t, names)
        if g.suppressed or d.suppressed:
            bars.append(chart.Bar(label, None, "<5"))
        else:
            bars.append(chart.Bar(label, (d.median_s or 0) / 3600, chart.hours(d.median_s)))
    out.append(chart.bar_chart(t("dashboard.chart.ack"), bars))
    for by in ("town", "risk"):
        bars = []
        for g in reports[by].groups:
            r = g.closed_loop_rate
            label = _group_label(by, g.key, t, names)
            if g.suppressed or r.suppressed:
                bars.append(chart.Bar(label, None, "<5"))
            else:
                bars.append(
                    chart.Bar(label, r.value or 0.0, chart.percent(r.value), warn=(r.value or 0) < 0.5)
                )
        out.append(
            chart.bar_chart(f"{t('dashboard.chart.closed')} · {t('dashboard.by.' + by)}", bars, maximum=1.0)
        )
    return out


@router.get("/escalations", response_class=HTMLResponse)
def escalations_page(request: Request) -> Response:
    caller = _require(request, {"supervisor"})
    services = _services(request)
    assert services.listings is not None
    return render(request, "escalations.html", caller, items=services.listings.escalations(caller))


@router.get("/break-glass", response_class=HTMLResponse)
def break_glass_page(
    request: Request, status: str = "pending", done: str | None = None, error: str | None = None
) -> Response:
    caller = _require(request, {"supervisor"})
    services = _services(request)
    assert services.break_glass is not None
    shown = status if status in REVIEW_FILTERS else None  # "all" (or anything else): both
    return render(
        request,
        "breakglass.html",
        caller,
        items=services.break_glass.uses(caller, shown),
        status=shown or "",
        outcomes=REVIEW_OUTCOMES,
        notices=GUARDIAN_NOTICES,
        done=done,
        error=error,
    )


@router.post("/break-glass/{delivery_id}/review")
async def break_glass_review(
    request: Request,
    delivery_id: str,
    outcome: str = Form(""),
    guardian_notice: str = Form(""),
    csrf_token: str = Form(""),
) -> Response:
    caller = _require(request, {"supervisor"})
    _check_csrf(caller, csrf_token)
    services = _services(request)
    assert services.break_glass is not None
    try:
        await services.break_glass.review(caller, delivery_id, outcome, guardian_notice)
    except HubError as exc:
        if exc.status in (404, 403, 503):
            raise
        return RedirectResponse(f"/break-glass?status=all&error={quote(exc.code)}", status_code=303)
    return RedirectResponse("/break-glass?status=reviewed&done=1", status_code=303)


# ------------------------------------------------------------------------------------------ audit


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    referral_id: str | None = None,
    org_id: str | None = None,
    type: str | None = None,
) -> Response:
    caller = _require(request, {"auditor"})
    services = _services(request)
    audit = services.audit
    events: list[dict[str, Any]] = []
    verification: dict[str, Any] | None = None
    if audit is not None:
        from hub.services.audit import AuditSearch
        from schemas.audit import AuditType

        kind = AuditType(type) if type in {t.value for t in AuditType} else None
        found = audit.search(
            AuditSearch(referral_id=referral_id or None, agency=org_id or None, type=kind, limit=200)
        )
        events = [{**item["event"], "seq": item["seq"], "hash": item["hash"]} for item in found.items]
        verification = audit.verify().as_dict()
    return render(
        request,
        "audit.html",
        caller,
        available=audit is not None,
        events=events,
        verification=verification,
        q={"referral_id": referral_id or "", "org_id": org_id or "", "type": type or ""},
    )


# ------------------------------------------------------------------------------------------ admin


@router.get("/admin/users", response_class=HTMLResponse)
def users_page(request: Request) -> Response:
    caller = _require(request, {"admin"})
    services = _services(request)
    assert services.identity is not None
    return render(request, "users.html", caller, users=services.identity.users(caller))


# ------------------------------------------------------------------------------------------ content


def _codings(value: Any) -> str:
    """Display text of a CodeableConcept (or a list of them)."""
    items = value if isinstance(value, list) else [value]
    out = []
    for cc in items:
        if not isinstance(cc, dict):
            continue
        if cc.get("text"):
            out.append(str(cc["text"]))
            continue
        for coding in cc.get("coding", []) or []:
            out.append(str(coding.get("display") or coding.get("code") or ""))
    return ", ".join(x for x in out if x)


def _value(res: dict[str, Any]) -> str:
    for key, val in res.items():
        if not key.startswith("value"):
            continue
        if isinstance(val, dict):
            if "value" in val:
                return f"{val['value']} {val.get('unit', '')}".strip()
            return _codings(val)
        return str(val)
    return ""


def _name(res: dict[str, Any]) -> str:
    names = res.get("name") or []
    if isinstance(names, list) and names:
        n = names[0]
        return str(n.get("text") or (n.get("family", "") + "".join(n.get("given", []) or [])))
    return ""


def summarise_bundle(bundle: dict[str, Any] | None, t: Translator) -> list[dict[str, Any]]:
    """The minimised view as titled sections of label/value rows; only what the view contains."""
    sections: list[dict[str, Any]] = []
    for entry in (bundle or {}).get("entry", []) or []:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict):
            continue
        kind = str(res.get("resourceType", "?"))
        rows: list[tuple[str, str]] = []
        if kind in ("Patient", "RelatedPerson"):
            rows += [
                ("name", _name(res)),
                ("gender", str(res.get("gender", ""))),
                ("birthDate", str(res.get("birthDate", ""))),
            ]
            if res.get("relationship"):
                rows.append(("relationship", _codings(res["relationship"])))
            for tel in res.get("telecom", []) or []:
                rows.append((str(tel.get("system", "telecom")), str(tel.get("value", ""))))
            for addr in res.get("address", []) or []:
                rows.append(
                    ("address", str(addr.get("text") or addr.get("district") or addr.get("city") or ""))
                )
        elif kind == "ServiceRequest":
            rows += [
                ("reason", _codings(res.get("reasonCode", []))),
                ("priority", str(res.get("priority", ""))),
                ("category", _codings(res.get("category", []))),
            ]
            rows += [("note", str(n.get("text", ""))) for n in res.get("note", []) or []]
        elif kind == "Observation":
            rows += [("code", _codings(res.get("code", {}))), ("value", _value(res))]
            for comp in res.get("component", []) or []:
                rows.append((_codings(comp.get("code", {})), _value(comp)))
            rows += [("note", str(n.get("text", ""))) for n in res.get("note", []) or []]
        elif kind == "QuestionnaireResponse":
            rows += [
                ("questionnaire", str(res.get("questionnaire", ""))),
                ("items", str(len(res.get("item", []) or []))),
            ]
        elif kind == "Condition":
            rows += [("code", _codings(res.get("code", {})))]
        elif kind == "Task":
            rows += [
                ("status", t.status(res.get("status"))),
                ("description", str(res.get("description", ""))),
            ]
        elif kind == "Consent":
            rows += [("status", str(res.get("status", ""))), ("scope", _codings(res.get("scope", {})))]
        elif kind == "Organization":
            rows += [("name", str(res.get("name", "")))]
        elif kind == "MessageHeader":
            continue
        else:
            rows += [
                (k, json.dumps(v, ensure_ascii=False)[:200])
                for k, v in res.items()
                if k not in ("resourceType", "id", "meta")
            ]
        sections.append({"title": kind, "rows": [(k, v) for k, v in rows if v and v != "None"]})
    return sections
