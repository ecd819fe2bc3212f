"""The page at /ui, the read-only routes behind it, and a real headless Chromium driving it."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from app.ui import STATIC
from core import keys
from export.live import load_from_samples
from export.publish import publish_bundle
from export.report import REPORT_IMAGE, REPORT_SUMMARY
from export.versions import activate_version
from tests.service import in_process, service_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def two_versions(redis_client, ns, reported_bundle, bundle):
    first = publish_bundle(redis_client, ns, bundle, progress=False)
    second = publish_bundle(redis_client, ns, reported_bundle, progress=False)
    return first, second


def test_page_and_assets_are_served_and_load_nothing_from_elsewhere(redis_server, ns):
    with in_process(redis_server.url, ns, ready=False) as client:
        page = client.get("/ui")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        for asset in re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page.text):
            assert client.get(asset).status_code == 200
    for path in (p for p in STATIC.iterdir() if p.suffix in {".html", ".js", ".css"}):
        assert not re.search(r"https?://", path.read_text()), f"{path.name} reaches outside"


def test_versions_listing_has_metrics_and_activation_times(
    redis_server, redis_client, ns, two_versions
):
    first, second = two_versions
    activate_version(redis_client, ns, first.version)  # a rollback: both have been active
    with in_process(redis_server.url, ns) as client:
        listing = client.get("/v1/versions").json()
    assert listing["active"] == listing["serving"] == first.version
    assert [v["version"] for v in listing["versions"]] == [second.version, first.version]
    newest, oldest = listing["versions"]
    assert newest["metrics"]["seed"] == 0 and newest["pooling"] == "attention"
    assert newest["published_at"] == pytest.approx(second.created_at)
    assert oldest["activated_at"] > newest["activated_at"] > 0
    activated = [a["version"] for a in listing["activations"]]  # newest first
    assert activated == [first.version, second.version, first.version]


def test_version_detail_and_report_files(redis_server, ns, two_versions, reported_bundle):
    _, second = two_versions
    with in_process(redis_server.url, ns) as client:
        detail = client.get(f"/v1/versions/{second.version}").json()
        image = client.get(f"/v1/versions/{second.version}/report/{REPORT_IMAGE}")
        summary = client.get(f"/v1/versions/{second.version}/report/{REPORT_SUMMARY}")
        assert client.get(f"/v1/versions/{second.version}/report/other.png").status_code == 404
        assert client.get("/v1/versions/no-such-version").status_code == 404
        assert client.get("/v1/versions/bad:name").status_code == 422
    assert detail["explainable"] and detail["report"] == sorted([REPORT_IMAGE, REPORT_SUMMARY])
    assert detail["demo_users"] == reported_bundle.demo_users and detail["demo_items"]
    assert detail["schema"] == reported_bundle.schema.to_dict()
    assert (detail["row_dtype"], detail["row_layout"]) == ("float32", "keys")
    assert image.headers["content-type"] == "image/png"
    assert image.content == reported_bundle.report[REPORT_IMAGE]
    assert summary.text == reported_bundle.report[REPORT_SUMMARY].decode()


def test_a_broken_report_file_stops_the_publish(redis_client, ns, reported_bundle):
    from export import publish

    real_set, broken = redis_client.set, keys.report_key(ns, "v1", REPORT_IMAGE)

    def corrupting_set(key, value, *args, **kwargs):
        return real_set(key, b"not it" if key == broken else value, *args, **kwargs)

    redis_client.set = corrupting_set
    with pytest.raises(publish.PublishError, match="report file"):
        publish_bundle(redis_client, ns, reported_bundle, version="v1", progress=False)
    assert redis_client.get(keys.manifest_key(ns, "v1")) is None


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make test installs it where it can)")
    with sync_api.sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS
            )
        except sync_api.Error as error:
            pytest.skip(f"chromium does not start here: {error}")
        yield chromium
        chromium.close()


def test_page_explains_a_demo_user_in_headless_chromium(
    browser, redis_server, redis_client, ns, reported_bundle, samples, tmp_path
):
    published = publish_bundle(redis_client, ns, reported_bundle, progress=False)
    load_from_samples(redis_client, ns, samples, progress=False)
    with service_process(redis_server.url, ns) as service:
        service.wait_ready()
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        problems = []  # script errors, and anything the page's CSP blocked
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.goto(f"{service.url}/ui")
        page.wait_for_selector("#demo-user option:nth-child(2)", state="attached")
        user = page.locator("#demo-user option").nth(1).get_attribute("value")
        page.select_option("#demo-user", user)
        candidates = page.input_value("#candidates").split()
        inputs = page.locator("input.user-field, input.context-field").evaluate_all(
            "inputs => inputs.map(i => i.id)"
        )
        page.fill("#context-hour", "13")
        page.click("#submit")
        page.wait_for_selector("#bars .bar")
        page.wait_for_function("document.querySelector('#report-image').naturalWidth > 0")
        page.wait_for_selector("#report-summary table")
        shown = {
            "bars": page.locator("#bars .bar").count(),
            "cells": page.locator("#heatmap .cell").count(),
            "values": page.locator("#bars .bar-value").all_inner_texts(),
            "fields": page.locator("#bars .bar-fields").all_inner_texts(),
            "meta": page.inner_text("#result-meta"),
            "shades": set(
                page.locator("#heatmap .cell").evaluate_all(
                    "cells => cells.map(c => c.style.background)"
                )
            ),
            "status": page.inner_text("#status"),
            "metrics": page.inner_text("#active-metrics"),
            "report_tables": page.locator("#report-summary table").count(),
            "summary_rows": page.locator("#report-summary table").first.inner_text(),
            "image_width": page.evaluate("document.querySelector('#report-image').naturalWidth"),
        }
        page.screenshot(path=tmp_path / "ui.png", full_page=True)
        request = {
            "user_id": user,
            "context": {"hour": "13"},
            "candidates": [{"item_id": c} for c in candidates],
        }
        scored = httpx.post(f"{service.url}/v1/score", json=request).json()
    history = redis_client.llen(keys.history_key(ns, user))
    assert candidates == reported_bundle.demo_items and user in reported_bundle.demo_users
    assert shown["bars"] == len(candidates)
    assert shown["cells"] == len(candidates) * min(history, reported_bundle.max_history) > 0
    assert shown["values"] == [f"{s:.4f}" for s in scored["scores"]]
    assert inputs == ["user-age", "user-gender", "user-occupation", "context-hour"]
    metadata = reported_bundle.item_metadata
    assert shown["fields"] == [
        " · ".join(f"{k}: {v}" for k, v in metadata[c]["fields"].items()) for c in candidates
    ]
    assert "no unknown values" in shown["meta"]
    assert len(shown["shades"]) > 1  # DIN weighs behaviours differently
    assert published.version in shown["status"] and shown["image_width"] == 1300
    assert f"{reported_bundle.metrics['test_auc']:.4f}" in shown["metrics"]
    assert shown["report_tables"] == 3  # the summary, then one per-epoch table per model
    assert [row.split("\t")[0] for row in shown["summary_rows"].splitlines()] == [
        "model",
        "DIN",
        "BaseModel",
    ]
    assert (tmp_path / "ui.png").stat().st_size > 10_000
    assert problems == []


def test_unreadable_manifests_and_log_records_do_not_break_the_listing(
    redis_server, redis_client, ns, two_versions
):
    first, second = two_versions
    redis_client.lpush(keys.activations_key(ns), b"not json", b'{"version": "v9"}')
    with in_process(redis_server.url, ns) as client:
        redis_client.set(keys.manifest_key(ns, first.version), b"[]")
        listing = client.get("/v1/versions")
        detail = client.get(f"/v1/versions/{first.version}")
    assert listing.status_code == 200, listing.text
    assert [v["metrics"] for v in listing.json()["versions"]][1] == {}
    assert [a["version"] for a in listing.json()["activations"]] == [second.version, first.version]
    assert detail.status_code == 404
