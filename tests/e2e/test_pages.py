"""The staff pages in a real browser (Debian's Chromium driven by Playwright) on the real hub.

Sign in; work a referral from the worklist through acknowledge → accept → first contact → complete
with feedback; the district dashboard shows real numbers; another agency's user cannot see the
referral. Screenshots go to tests/artifacts/ (kept by CI as artifacts, ignored by git).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from tests.support.hub import RunningHub, make_hub, sample, with_new_message_id
from tests.support.servers import REPO
from tests.support.staff import PASSWORD, add_users

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "tests" / "artifacts"
SCHOOL = "school-songjiang-no2-middle"
CAMHS = "camhs-songjiang-mhc"
POLICE = "police-songjiang"
CLOSED_BY_API = 5  # enough closed cases that the dashboard is above the small-count threshold


@dataclass
class Scene:
    hub: RunningHub
    referral_id: str  # the one worked in the browser
    task_id: str
    others: list[str]


@pytest.fixture(scope="module")
def scene(kafka: str, postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    hub = make_hub(Path(tmp_path_factory.mktemp("e2e-hub")), kafka, postgres)
    try:
        add_users(
            hub,
            [
                ("e.clinician", CAMHS, "clinician"),
                ("e.police", POLICE, "case-worker"),
                ("e.monitor", "district-office", "district-monitor"),
                ("e.auditor", "district-office", "auditor"),
            ],
        )
        ids = []
        for _ in range(CLOSED_BY_API + 1):
            answer = hub.submit(SCHOOL, with_new_message_id(sample("referral-school-camhs-high.json")))
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["referral_id"])
        tasks = {rid: hub.wait_inbox(CAMHS, rid)[0]["task_id"] for rid in ids}
        with hub.client(CAMHS) as camhs:
            for rid in ids[:CLOSED_BY_API]:
                for change in (
                    {"status": "received"},
                    {"status": "accepted"},
                    {"status": "in-progress"},
                    {
                        "status": "completed",
                        "feedback": "seen; plan agreed",
                        "business_status": "feedback-sent",
                    },
                ):
                    done = camhs.post(f"/v1/tasks/{tasks[rid]}/status", json=change)
                    assert done.status_code == 202, done.text
        yield Scene(hub, ids[-1], tasks[ids[-1]], ids[:-1])
    finally:
        hub.stop_all()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/browser.sh install`")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1024, "height": 900},  # a landscape tablet
            locale="zh-CN",
        )
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


def _sign_in(context: Any, base_url: str, username: str) -> Any:
    context.clear_cookies()
    page = context.new_page()
    page.goto(f"{base_url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    return page


def test_sign_in_rejects_a_wrong_password_then_lands_on_the_worklist(scene: Scene, browser: Any) -> None:
    browser.clear_cookies()
    page = browser.new_page()
    page.goto(f"{scene.hub.base_url}/worklist")
    assert "/login" in page.url  # pages need a session
    page.fill("input[name=username]", "e.clinician")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    assert page.locator("[data-testid=login-error]").is_visible()
    page.fill("input[name=username]", "e.clinician")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/worklist$"))
    row = page.locator(f"tr[data-referral='{scene.referral_id}']")
    assert row.is_visible()
    assert row.locator(".sla").count() == 1  # the acknowledgement countdown runs
    assert page.locator("[data-testid=whoami]").inner_text().startswith("e.clinician")
    page.screenshot(path=str(ARTIFACTS / "worklist.png"), full_page=True)
    page.close()


def test_acknowledge_accept_first_contact_complete(scene: Scene, browser: Any) -> None:
    page = _sign_in(browser, scene.hub.base_url, "e.clinician")
    page.goto(f"{scene.hub.base_url}/worklist")
    page.click(f"tr[data-referral='{scene.referral_id}'] a.button")
    page.wait_for_url(re.compile(rf".*/worklist/{scene.task_id}"))
    content = page.locator("[data-testid=content]")
    assert content.is_visible()  # decrypted view, or "content unavailable" if not sealed yet
    page.screenshot(path=str(ARTIFACTS / "referral-opened.png"), full_page=True)

    for action, status in (
        ("received", "received"),
        ("accepted", "accepted"),
        ("in-progress", "in-progress"),
    ):
        page.click(f"button[data-action='{action}']")
        page.wait_for_selector("[data-testid=done]")
        assert page.locator("[data-testid=status] [data-status]").get_attribute("data-status") == status

    # Completing without feedback is refused by the browser (required field) and by the hub.
    page.fill("form.action-completed textarea[name=feedback]", "已面诊，制定随访计划；两周后复诊。")
    page.click("button[data-action='completed']")
    page.wait_for_selector("[data-testid=done]")
    assert page.locator("[data-testid=status] [data-status]").get_attribute("data-status") == "completed"
    steps = page.locator("[data-testid=timeline] b[data-status]").evaluate_all(
        "els => els.map(e => e.dataset.status)"
    )
    assert steps == ["requested", "received", "accepted", "in-progress", "completed"]
    page.screenshot(path=str(ARTIFACTS / "referral-completed.png"), full_page=True)

    # The referrer sees the loop closed through the API as well.
    with scene.hub.client(SCHOOL) as school:
        seen = school.get(f"/v1/referrals/{scene.referral_id}").json()
    assert seen["deliveries"][0]["status"] == "completed"


def _records(hub: RunningHub, topic: str) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(bootstrap_servers=hub.env["HUB_KAFKA__BOOTSTRAP"], consumer_timeout_ms=3000)
    try:
        name = hub.prefix + topic
        parts = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        return [orjson.loads(m.value) for m in consumer]
    finally:
        consumer.close()


def test_opening_was_noticed_and_audited(scene: Scene) -> None:
    deadline = time.monotonic() + 30
    while True:
        notices = [
            r for r in _records(scene.hub, "deliveries.opened") if r["referral_id"] == scene.referral_id
        ]
        audits = [
            r
            for r in _records(scene.hub, "audit.events")
            if r.get("type") == "access" and (r.get("entity") or {}).get("referral_id") == scene.referral_id
        ]
        if (notices and audits) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert notices, "no access notice on deliveries.opened"
    assert notices[0]["sender_org"] == SCHOOL
    assert notices[0]["opened_by_role"] == "clinician"
    assert notices[0]["opened_by_user"]  # the user id, never a name
    assert audits, "no access audit event"


def test_dashboard_renders_real_numbers(scene: Scene, browser: Any) -> None:
    page = _sign_in(browser, scene.hub.base_url, "e.monitor")
    assert page.url.endswith("/dashboard")
    deliveries = page.locator("[data-testid=kpi-deliveries]").inner_text()
    assert deliveries.isdigit()
    assert int(deliveries) >= CLOSED_BY_API + 1
    assert page.locator("[data-testid=kpi-closed-loop]").inner_text() == "100%"
    ack = page.locator("[data-testid=kpi-ack]").inner_text()
    assert ack != "<5"
    assert re.search(r"\d", ack)
    pair = page.locator("[data-testid=metrics-pair] tbody tr").first
    assert "→" in pair.inner_text()
    assert page.locator("svg.chart").count() >= 3
    assert page.locator("svg.chart rect.bar").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    page.click("a.lang")
    page.wait_for_load_state("networkidle")
    assert "District turnaround dashboard" in page.inner_text("h1")
    page.screenshot(path=str(ARTIFACTS / "dashboard-en.png"), full_page=True)
    page.goto(f"{scene.hub.base_url}/worklist")
    assert page.locator("[data-testid=error]").get_attribute("data-status") == "403"


def test_another_agency_cannot_see_the_referral(scene: Scene, browser: Any) -> None:
    page = _sign_in(browser, scene.hub.base_url, "e.police")
    page.goto(f"{scene.hub.base_url}/worklist")
    assert scene.referral_id not in page.content()
    for path in (f"/worklist/{scene.task_id}", f"/referrals/{scene.referral_id}"):
        answer = page.goto(f"{scene.hub.base_url}{path}")
        assert answer.status == 404
        assert page.locator("[data-testid=error]").get_attribute("data-status") == "404"
        assert scene.referral_id not in page.locator("main").inner_text()
    page.screenshot(path=str(ARTIFACTS / "other-agency-404.png"), full_page=True)


def test_tablet_portrait_worklist_fits(scene: Scene, browser: Any) -> None:
    page = _sign_in(browser, scene.hub.base_url, "e.clinician")
    page.set_viewport_size({"width": 768, "height": 1024})
    page.goto(f"{scene.hub.base_url}/worklist?status=all")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a tablet"
    page.screenshot(path=str(ARTIFACTS / "worklist-tablet.png"), full_page=True)


def test_a_supervisor_reviews_a_break_glass_disclosure(scene: Scene, browser: Any) -> None:
    hotline = "district-centre"
    add_users(scene.hub, [("e.centre.supervisor", hotline, "supervisor")])
    answer = scene.hub.submit(hotline, with_new_message_id(sample("referral-hotline-crisis-camhs.json")))
    assert answer.status_code == 202, answer.text
    referral_id = answer.json()["referral_id"]
    deadline = time.monotonic() + 60
    with scene.hub.client(hotline) as client:
        while not (deliveries := client.get(f"/v1/referrals/{referral_id}").json()["deliveries"]):
            assert time.monotonic() < deadline, "the crisis referral was not delivered"
            time.sleep(0.5)
    [delivery] = deliveries
    assert delivery["legal_basis"] == "emergency"

    page = _sign_in(browser, scene.hub.base_url, "e.centre.supervisor")
    page.click("nav.nav a[href='/break-glass']")
    page.wait_for_load_state("networkidle")
    assert "紧急披露复核" in page.inner_text("h1")
    row = page.locator(f"tr[data-delivery='{delivery['delivery_id']}']")
    row.locator("select[name=outcome]").select_option("justified")
    row.locator("select[name=guardian_notice]").select_option("informed")
    page.screenshot(path=str(ARTIFACTS / "break-glass-pending.png"), full_page=True)
    row.locator("button[type=submit]").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("[data-testid=review-done]").is_visible()
    reviewed = page.locator(f"tr[data-delivery='{delivery['delivery_id']}']")
    assert "正当" in reviewed.inner_text() and "已告知监护人" in reviewed.inner_text()
    page.screenshot(path=str(ARTIFACTS / "break-glass-reviewed.png"), full_page=True)
