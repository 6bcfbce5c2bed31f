"""The catalog of the shipped registry, opened in headless Chromium: every dataset page and lineage edge."""

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.components.catalog import build_catalog, lineage_edges
from pipelines.components.environment import get_settings
from pipelines.components.registry import load_registry
from pipelines.components.resources import Lake, Warehouse
from pipelines.components.status import read_destination
from tests.conftest import require_service

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
READ_PAGE = """JSON.stringify({
  h1: document.querySelector('h1') && document.querySelector('h1').textContent,
  links: [...document.querySelectorAll('a')].map(a => a.getAttribute('href')),
  nodes: [...document.querySelectorAll('svg .node')].map(n => n.dataset.dataset),
  edges: [...document.querySelectorAll('svg .edge')].map(e => [e.dataset.from, e.dataset.to]),
  columns: [...document.querySelectorAll('table.columns tbody tr')].map(r => [...r.cells].map(c => c.textContent)),
  svgWidth: document.querySelector('svg.lineage') ? document.querySelector('svg.lineage').getBoundingClientRect().width : 0,
})"""


class Browser:
    """One headless Chromium driven over the DevTools protocol (one process for every page)."""

    def __init__(self, profile: Path):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            require_service("Chromium is not installed: run scripts/install-browser")
        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1400,900",
            "about:blank",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                require_service("Chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        from websockets.sync.client import connect

        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.next_id = 0
        self.call("Page.enable")

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def open(self, url: str) -> dict:
        self.call("Page.navigate", url=url)
        while True:  # wait for this navigation's load event
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("method") == "Page.loadEventFired":
                break
        result = self.call("Runtime.evaluate", expression=READ_PAGE, returnByValue=True)
        return json.loads(result["result"]["value"])

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self):
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def browser(tmp_path):
    opened = Browser(tmp_path / "profile")
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.integration
def test_catalog_of_the_shipped_registry_in_chromium(browser, tmp_path):
    settings = get_settings()
    registry = load_registry(settings.registry_path)
    warehouse = Warehouse.from_settings(settings)
    try:
        facts = read_destination(Lake.from_settings(settings), warehouse, list(registry))
    finally:
        warehouse.dispose()
    index = build_catalog(registry, facts, settings.namespace, tmp_path / "catalog")
    edges = lineage_edges(registry)
    assert ("flights", "flight_delays_daily") in edges and ("user_top3_avg", "top_users") in edges

    page = browser.open(index.as_uri())
    assert page["h1"] == "Data catalog: namespace test"
    names = sorted(s.name for s in registry)
    assert sorted(page["nodes"]) == names
    assert sorted(map(tuple, page["edges"])) == edges
    assert {f"datasets/{n}.html" for n in names} <= set(page["links"])  # the table and the graph link them
    assert page["svgWidth"] > 400
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "catalog-index.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    for spec in registry:
        page = browser.open((index.parent / "datasets" / f"{spec.name}.html").as_uri())
        assert page["h1"] == spec.name
        assert spec.name in page["nodes"]
        for upstream in spec.inputs:
            assert [upstream, spec.name] in page["edges"], (spec.name, upstream)
        for downstream in registry.downstream(spec.name):
            assert [spec.name, downstream.name] in page["edges"], (spec.name, downstream.name)
        assert [row[0] for row in page["columns"]] == list(spec.contract.columns), spec.name
        for row in page["columns"]:
            assert (row[4] == "PII") == (row[0] in spec.pii_columns), (spec.name, row)
    parcels = browser.open((index.parent / "datasets" / "county_parcels.html").as_uri())
    owner = next(r for r in parcels["columns"] if r[0] == "owner_name")
    assert (owner[0], owner[4]) == ("owner_name", "PII")
