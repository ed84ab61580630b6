"""The web page in a real browser: Debian's chromium driven by Playwright against a live ``fpf-server up``
with API keys (two tenants and an admin).

One browser serves the whole module; each test opens its own context (its own session storage) and
fails on any error the browser's console reports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from service_harness import SLOW_OPTIONS

from fpf_client import FixedPoints
from service.core.api_keys import KeyStore, Role
from service.ops.embedded_redis import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FLIPFLOP = REPO / "tests" / "data" / "flipflop_tanh.pt"
SCREENSHOT = REPO / "docs" / "web" / "result-view.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
READY_WITHIN_S = 120.0
#: Generous: the machine may be busy with other tests.
UI_TIMEOUT_MS = 60_000
HOSTILE_NAME = "<img src=x onerror=alert(1)>.pt"


@dataclass
class Server:
    """A running ``fpf-server up``, its keys, and every process seen under it."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    keys: dict[str, str]
    seen: dict[int, float] = field(default_factory=dict)

    def remember_descendants(self) -> None:
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                self.seen[child.pid] = child.create_time()
            except psutil.NoSuchProcess:
                pass

    def stop(self) -> None:
        self.remember_descendants()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid, created in self.seen.items():
            try:
                if psutil.Process(pid).create_time() == created:
                    os.kill(pid, signal.SIGKILL)
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("web")
    store = KeyStore(root / "keys.json")
    keys = {"a": store.create("lab-a")[1], "b": store.create("lab-b")[1], "admin": store.create("ops", Role.ADMIN)[1]}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FPF_")}
    env.update(
        OMP_NUM_THREADS="1", FPF_WORKER_TORCH_THREADS="1", PYTHONUNBUFFERED="1", FPF_KEYS_FILE=str(root / "keys.json")
    )
    port = free_port()
    log = root / "fpf-server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.ops.cli",
                "up",
                "--port",
                str(port),
                "--grpc-port",
                "0",
                "--data-dir",
                str(root / "var"),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Server(process, f"http://127.0.0.1:{port}", log, keys)
    try:
        deadline = time.monotonic() + READY_WITHIN_S
        while f"Web:      {running.url}/" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            time.sleep(0.2)
        while httpx.get(f"{running.url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            time.sleep(0.2)
        running.remember_descendants()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "the web page's tests need Debian's chromium: make system-deps"
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Tab:
    """A page in its own browser context, with everything its console and dialogs reported."""

    page: Page
    context: BrowserContext
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    #: Console errors a test causes on purpose (a request for another tenant's job answers 404).
    expected_errors: list[str] = field(default_factory=list)
    #: Requests to anywhere but the gateway (there must be none: nothing comes from the internet).
    foreign_requests: list[str] = field(default_factory=list)

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(part in e for part in self.expected_errors)]


@pytest.fixture
def open_tab(browser: Browser, server: Server) -> Iterator:
    """Opens pages, each in a fresh context and signed in with a key unless None; checks them at teardown."""
    tabs: list[Tab] = []

    def open_(key: str | None) -> Tab:
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1000})
        context.set_default_timeout(UI_TIMEOUT_MS)
        tab = Tab(context.new_page(), context)
        tab.page.on("console", lambda m: m.type == "error" and tab.errors.append(m.text))
        tab.page.on("pageerror", lambda e: tab.errors.append(str(e)))
        tab.page.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
        tab.page.on(
            "request",
            lambda r: r.url.startswith((server.url + "/", "data:", "blob:")) or tab.foreign_requests.append(r.url),
        )
        tab.page.goto(server.url + "/")
        if key is not None:
            tab.page.fill("#api-key", key)
            tab.page.click("#sign-in-form button[type=submit]")
            expect(tab.page.locator("#whoami")).not_to_be_empty()
        tabs.append(tab)
        return tab

    yield open_
    for tab in tabs:
        tab.context.close()
    for tab in tabs:
        assert tab.unexpected_errors() == [], tab.errors
        assert tab.dialogs == [], tab.dialogs
        assert tab.foreign_requests == [], tab.foreign_requests


@pytest.fixture(scope="module")
def finished() -> dict:
    """Filled by the first test: the job tenant a ran through the page."""
    return {}


def test_sign_in_upload_submit_and_see_the_result(
    open_tab, server: Server, finished: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tab = open_tab(None)
    page = tab.page
    expect(page.locator("#sign-in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.fill("#api-key", server.keys["a"])
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#whoami")).to_have_text("lab-a (user)")
    # The key stays in the tab's session storage: no cookie, nothing in the address.
    assert tab.context.cookies() == []
    assert server.keys["a"] not in page.url

    page.click("[data-nav=models]")
    page.set_input_files("#model-file", str(FLIPFLOP))
    row = page.locator("#models tbody tr", has_text="flipflop_tanh.pt")
    expect(row.locator(".status")).to_have_text("ready")
    expect(row).to_contain_text("16")

    page.click("[data-nav=new]")
    page.select_option("#job-model", label="flipflop_tanh.pt — 16 states, 3 inputs")
    page.fill("#n-samples", "1024")
    page.fill("#sample-scale", "0.5")
    page.click("#submit-job")
    expect(page).to_have_url(re.compile(r"#/jobs/[0-9a-f-]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    finished["job_id"] = job_id
    finished["model_id"] = _job(server, "a", job_id)["model_id"]
    expect(page.locator("#job-status .status")).to_have_text("succeeded")
    bar = page.locator("#job-progress")
    expect(bar).to_have_js_property("value", 1)
    expect(bar).to_have_js_property("max", 1)

    counts = page.locator("#counts")
    expect(counts.locator("[data-count=fixed_points] .value")).to_have_text("27")
    expect(counts.locator("[data-count=stable] .value")).to_have_text("8")
    expect(counts.locator("[data-count=certified] .value")).to_have_text("27")
    page.wait_for_function("() => document.getElementById('plot-3d').data !== undefined")
    plotted = page.evaluate("""() => {
        const traces = document.getElementById('plot-3d').data;
        const n = (meta) => traces.filter(t => t.meta === meta).reduce((s, t) => s + t.x.length, 0);
        return {stable: n('stable'), unstable: n('unstable'), modes: traces.some(t => t.meta === 'modes')};
    }""")
    assert plotted == {"stable": 8, "unstable": 19, "modes": True}
    page.screenshot(path=str(tmp_path_factory.mktemp("shots") / "result-view.png"))
    if os.environ.get("FPF_UPDATE_SCREENSHOT"):  # the README's picture
        page.screenshot(path=str(SCREENSHOT))

    page.click("[data-tab=Spectra]")
    page.wait_for_function("() => document.getElementById('plot-spectra').data !== undefined")
    spectra = page.evaluate("document.getElementById('plot-spectra').data.map(t => t.x.length)")
    assert sum(spectra) == 27 * 16
    assert page.evaluate("document.getElementById('plot-spectra').layout.shapes[0].type") == "circle"

    page.click("[data-tab=Discovery]")
    page.wait_for_function("() => document.getElementById('plot-discovery').data !== undefined")
    discovery = page.evaluate("document.getElementById('plot-discovery').data[0].y")

    page.click("[data-tab=Table]")
    expect(page.locator("#points-table tbody tr")).to_have_count(27)
    page.click("#points-table th[data-sort=index]")
    page.click("#points-table th[data-sort=index]")
    expect(page.locator("#points-table tbody tr").first.locator("td").nth(2)).to_have_text("3")

    with page.expect_download() as download:
        page.click("#download-npz")
    path = tmp_path_factory.mktemp("download") / "result.npz"
    download.value.save_as(path)
    fps = FixedPoints.load(path)
    assert (fps.n, int(fps.is_stable.sum())) == (27, 8)
    assert discovery == fps.info["discovery_curve"]["n_certified_roots"] and 0 < discovery[-1] <= 27
    with page.expect_download() as download:
        page.click("#download-json")
    assert FixedPoints.from_json_dict(json.loads(Path(download.value.path()).read_text())) == fps

    page.click("[data-nav=jobs]")
    job_row = page.locator(f"#jobs tr[data-job-id='{job_id}']")
    expect(job_row.locator(".status")).to_have_text("succeeded")
    expect(job_row).to_contain_text("flipflop_tanh.pt")
    expect(job_row.locator("progress")).to_have_js_property("value", 1)
    expect(page.locator("#cluster")).to_be_hidden()
    page.select_option("#status-filter", "failed")
    expect(page.locator("#jobs tbody")).to_have_text("No failed jobs.")
    page.select_option("#status-filter", "succeeded")
    expect(job_row).to_be_visible()


def test_another_tenant_sees_none_of_it(open_tab, server: Server, finished: dict) -> None:
    assert finished, "runs after test_sign_in_upload_submit_and_see_the_result"
    tab = open_tab(server.keys["b"])
    page = tab.page
    expect(page.locator("#whoami")).to_have_text("lab-b (user)")
    expect(page.locator("#jobs tbody")).to_have_text("No jobs yet.")
    page.click("[data-nav=models]")
    expect(page.locator("#models tbody")).to_have_text("No models yet.")
    page.click("[data-nav=new]")
    expect(page.locator("#view")).to_contain_text("No model is ready yet")
    page.goto(f"{server.url}/#/jobs/{finished['job_id']}")
    expect(page.locator("#view .error")).to_contain_text("job_not_found")
    # The browser reports the 404 itself; nothing else may appear.
    tab.expected_errors.append("status of 404")
    headers = {"Authorization": f"Bearer {server.keys['b']}"}
    for path, code in ((f"/web/jobs/{finished['job_id']}/view", "job_not_found"), ("/web/cluster", "not_found")):
        answer = httpx.get(server.url + path, headers=headers, timeout=30)
        assert (answer.status_code, answer.json()["code"]) == (404, code)


def test_an_admin_sees_the_cluster(open_tab, server: Server, finished: dict) -> None:
    headers = {"Authorization": f"Bearer {server.keys['a']}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as lab_a:
        states = np.random.default_rng(0).normal(size=(256, 16)).tolist()
        running = lab_a.post(
            "/v1/jobs", json={"model_id": finished["model_id"], "initial_states": states, "options": SLOW_OPTIONS}
        ).json()
        try:
            page = open_tab(server.keys["admin"]).page
            expect(page.locator("#whoami")).to_have_text("ops (admin)")
            expect(page.locator("#queue-depth")).to_have_text("0")
            expect(page.locator("#workers")).to_contain_text("worker1@")
            expect(page.locator(f"#jobs tr[data-job-id='{finished['job_id']}']")).to_be_visible()
            # Running now: lab-a's job, on the worker's process (hostname:pid).
            expect(page.locator("#cluster tbody tr", has_text=running["id"][:12])).to_contain_text("lab-a")
            row = page.locator(f"#jobs tr[data-job-id='{running['id']}']")
            expect(row.locator(".status")).to_have_text("running")
            row.locator("button", has_text="Cancel").click()
            expect(row.locator(".status")).to_have_text("cancelled")
        finally:
            lab_a.post(f"/v1/jobs/{running['id']}/cancel")


def _job(server: Server, key: str, job_id: str) -> dict:
    headers = {"Authorization": f"Bearer {server.keys[key]}"}
    return httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers, timeout=30).raise_for_status().json()


def test_a_hostile_file_name_shows_as_text(open_tab, server: Server) -> None:
    page = open_tab(server.keys["b"]).page
    page.click("[data-nav=models]")
    dropped = page.evaluate_handle(
        "name => { const t = new DataTransfer(); t.items.add(new File(['not a model'], name)); return t; }",
        HOSTILE_NAME,
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})
    row = page.locator("#models tbody tr", has_text="onerror")
    expect(row.locator(".status")).to_have_text("invalid")
    expect(row.locator(".filename")).to_have_text(HOSTILE_NAME)
    expect(row.locator(".model-error")).not_to_be_empty()
    assert page.locator("#models img").count() == 0


def test_the_api_docs_need_no_internet(open_tab, server: Server) -> None:
    page = open_tab(None).page
    page.goto(server.url + "/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    assert page.locator(".opblock").count() > 10
