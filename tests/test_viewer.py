"""``heartseg viewer``: OHIF's released viewer (``make viewer``) over a real Orthanc that asks for credentials.

``heartseg run --fast --publish`` segments one cardiac phase of the Sunnybrook cine series with the shipped
model and stores the series and the SEG the pipeline wrote into Orthanc; ``heartseg viewer`` serves OHIF
behind its own login, its proxy adding the PACS's credentials; headless Debian Chromium (WebGL on
SwiftShader) logs in, opens the study list, finds the study, opens it, loads the SEG, finds the three
segments in the segmentation panel in the colours the SEG recommends (HeartSeg's), those colours in the
pixels of the viewport, and leaves no error in the console. The other tests check the proxy, the login, the
generated configuration (evaluated by node), the links of the report, and the pinned OHIF release.

Length: the tests share module fixtures that take half a minute to build (Orthanc, the published study, the
running viewer), so they live in one module.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests

from heartseg.errors import ConfigurationError
from heartseg.labels import Structure
from heartseg.settings import PROJECT_ROOT, Settings
from heartseg.studies.dicom import read_dataset
from scheduler.viewer.auth import BasicAuth, basic_header, viewer_auth
from scheduler.viewer.config import app_config
from scheduler.viewer.dist import OHIF_INTEGRITY, OHIF_VERSION, SEG_EXTENSION, VIEWER_MODE, check_dist
from scheduler.viewer.links import ViewerLinks, study_links, viewer_route
from tests.conftest import free_port, require_shared
from tests.orthanc_server import Orthanc, orthanc_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PACS_USERS = {"pacs": "pacs-secret"}
PACS_AUTH = "pacs:pacs-secret"
#: The viewer's own login (HEARTSEG_VIEWER_AUTH), which the browser test logs in with.
VIEWER_LOGIN = ("alice", "viewer-secret")
SEGMENTS = ["RV cavity", "LV myocardium", "LV cavity"]
#: Where ``make viewer-screenshot`` asks the browser test to save its screenshot (docs/viewer.png).
SCREENSHOT_ENV = "HEARTSEG_VIEWER_SCREENSHOT"
WAIT_S = 180.0


def heartseg_env(**settings: str) -> dict[str, str]:
    """The environment of a ``heartseg`` subprocess: none of the caller's HEARTSEG_* settings, these instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTSEG_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return {**env, **settings}


@contextmanager
def running_viewer(env: dict[str, str], log: Path, *args: str) -> Iterator[str]:
    """``heartseg viewer`` on a free loopback port until the block ends; yields its root URL."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "viewer", "--port", str(port), *args],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/healthcheck", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"heartseg viewer did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)


@dataclass(frozen=True)
class Published:
    """The study that ``heartseg run --publish`` stored in the PACS."""

    study_uid: str
    stdout: str


@pytest.fixture(scope="module")
def ohif_dist() -> Path:
    """The OHIF build of ``make viewer`` (a failure, not a skip, when missing: ``make test`` fetches it)."""
    folder = Settings().viewer_dist
    try:
        return check_dist(folder)
    except ConfigurationError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with orthanc_server(tmp_path_factory.mktemp("orthanc"), users=PACS_USERS) as server:
        yield server


@pytest.fixture(scope="module")
def published(pacs: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """One phase of the Sunnybrook series through ``heartseg run --fast --publish`` (the shipped model, the CPU)."""
    series = require_shared(Settings().shared_data / "sunnybrook" / "SCD0000101", "Sunnybrook series")
    folder = tmp_path_factory.mktemp("cohort") / "SCD0000101"
    folder.mkdir()
    for path in first_phase(series):
        shutil.copy(path, folder / path.name)
    out = tmp_path_factory.mktemp("run")
    env = heartseg_env(HEARTSEG_DEVICE="cpu", HEARTSEG_DICOMWEB_AUTH=PACS_AUTH)
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", "run", str(folder.parent), "-o", str(out),
                             "--fast", "--publish", f"dicomweb://127.0.0.1:{pacs.port}/dicom-web"],
                            env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    study_uid = str(read_dataset(next(folder.iterdir())).StudyInstanceUID)
    return Published(study_uid, result.stdout)


def first_phase(series: Path) -> list[Path]:
    """The images of the first cardiac phase: at each slice position, the one with the smallest TriggerTime."""
    by_position: dict[tuple[float, ...], list[tuple[float, Path]]] = {}
    for path in series.iterdir():
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        position = tuple(round(float(v), 3) for v in dataset.ImagePositionPatient)
        by_position.setdefault(position, []).append((float(dataset.TriggerTime), path))
    return [min(images)[1] for images in by_position.values()]


@pytest.fixture(scope="module")
def viewer(pacs: Orthanc, published: Published, ohif_dist: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = heartseg_env(HEARTSEG_DICOMWEB_URL=f"dicomweb://127.0.0.1:{pacs.port}/dicom-web",
                       HEARTSEG_DICOMWEB_AUTH=PACS_AUTH, HEARTSEG_VIEWER_AUTH=":".join(VIEWER_LOGIN),
                       HEARTSEG_VIEWER_DIST=str(ohif_dist))
    with running_viewer(env, tmp_path_factory.mktemp("viewer") / "viewer.log") as url:
        yield url


# --- the pinned release and the configuration -------------------------------------------------------------------


def test_one_ohif_pin_everywhere(ohif_dist: Path) -> None:
    """The Makefile and the viewer image read the version and integrity pinned in scheduler/viewer/dist.py."""
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert "OHIF_PIN := scheduler/viewer/dist.py" in makefile
    assert 'grep -qF \'"integrity": "$(OHIF_INTEGRITY)"\'' in makefile
    dockerfile = (PROJECT_ROOT / "deploy" / "docker" / "viewer.Dockerfile").read_text()
    assert f"ARG OHIF_VERSION={OHIF_VERSION}\n" in dockerfile
    assert f"ARG OHIF_INTEGRITY={OHIF_INTEGRITY}\n" in dockerfile
    assert json.loads((ohif_dist.parent / "package.json").read_text())["version"] == OHIF_VERSION
    assert "/ohif/" in (PROJECT_ROOT / ".gitignore").read_text().splitlines()


def test_check_dist_names_what_is_wrong(ohif_dist: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"no index\.html.*make viewer"):
        check_dist(tmp_path / "dist")
    build = tmp_path / "dist"
    build.mkdir()
    (build / "index.html").write_text("<html></html>")
    (build / "app.bundle.0.js").write_text(f'x.push("{VIEWER_MODE}")')
    with pytest.raises(ConfigurationError, match=f"lacks {SEG_EXTENSION}"):
        check_dist(build)
    (tmp_path / "package.json").write_text('{"version": "3.0.0"}')
    with pytest.raises(ConfigurationError, match=f"holds OHIF 3.0.0, and HeartSeg pins {OHIF_VERSION}"):
        check_dist(build)


def test_app_config_evaluates_in_node(tmp_path: Path) -> None:
    """The generated app-config.js runs, has one data source under the proxy, and its BulkDataURI transform makes
    a PACS's absolute URI relative to the study (OHIF then resolves it under the proxy)."""
    node = shutil.which("node")
    assert node, "node is not installed (make viewer needs npm and node)"
    script = tmp_path / "app-config.js"
    script.write_text(app_config())
    probe = ("global.window = {}; require(process.argv[1]); const c = window.config;"
             "const t = c.dataSources[0].configuration.bulkDataURI.transform;"
             "console.log(JSON.stringify({c, absolute: t(process.argv[2]),"
             " relative: t('instances/3/bulk/7fe00010')}));")
    absolute = "http://127.0.0.1:8042/dicom-web/studies/1.2/series/1.3/instances/1.4/bulk/7fe00010"
    out = subprocess.run([node, "-e", probe, str(script), absolute], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    result = json.loads(out)
    config = result["c"]
    assert [s["sourceName"] for s in config["dataSources"]] == [config["defaultDataSourceName"]]
    source = config["dataSources"][0]["configuration"]
    assert {source[k] for k in ("qidoRoot", "wadoRoot", "wadoUriRoot")} == {"/dicom-web"}
    assert source["imageRendering"] == "wadors" and config["showStudyList"] is True
    assert result["absolute"] == "series/1.3/instances/1.4/bulk/7fe00010"
    assert result["relative"] == "instances/3/bulk/7fe00010"


# --- login and links ------------------------------------------------------------------------------------------


def test_login_rules() -> None:
    login = BasicAuth.parse("alice:secret,bob:other:colon")
    assert login.accepts(basic_header("alice:secret")) and login.accepts(basic_header("bob:other:colon"))
    assert not login.accepts(basic_header("alice:wrong")) and not login.accepts(None)
    assert not login.accepts("Basic not-base64!") and not login.accepts("Bearer x")
    with pytest.raises(ConfigurationError, match="user:password"):
        BasicAuth.parse("alice")
    assert viewer_auth("127.0.0.1", None) is None and viewer_auth("::1", None) is None
    with pytest.raises(ConfigurationError, match=r"0\.0\.0\.0 needs HEARTSEG_VIEWER_AUTH"):
        viewer_auth("0.0.0.0", None)


def test_viewer_refuses_to_listen_off_loopback_without_login(ohif_dist: Path) -> None:
    env = heartseg_env(HEARTSEG_DICOMWEB_URL="dicomweb://127.0.0.1:1/dicom-web", HEARTSEG_VIEWER_DIST=str(ohif_dist))
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", "viewer", "--address", "0.0.0.0"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "the viewer on 0.0.0.0 needs HEARTSEG_VIEWER_AUTH=user:password" in result.stderr
    no_pacs = subprocess.run([sys.executable, "-m", "scheduler.cli", "viewer"], env=heartseg_env(),
                             capture_output=True, text=True, timeout=60, check=False)
    assert no_pacs.returncode == 2 and "set HEARTSEG_DICOMWEB_URL or give --pacs" in no_pacs.stderr


def test_viewer_modules_import_neither_torch_nor_nnunet() -> None:
    code = ("import sys, scheduler.viewer.server, scheduler.viewer.links, scheduler.viewer.publish; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'nnunetv2')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         env=heartseg_env(), cwd=PROJECT_ROOT).stdout
    assert out.strip() == "[]"


def test_viewer_without_its_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import heartseg.extras
    from scheduler.cli import app

    real = heartseg.extras.find_spec
    monkeypatch.setattr(heartseg.extras, "find_spec", lambda name: None if name == "tornado" else real(name))
    result = CliRunner().invoke(app, ["viewer"])
    assert result.exit_code == 2
    assert "heartseg viewer needs tornado: pip install 'heartseg[viewer]'" in result.output


def test_study_links_flagged_first() -> None:
    links = ViewerLinks("http://viewer.example:3000/", "http://PACS.example:8042/dicom-web")
    source = "dicomweb://pacs.example:8042/dicom-web/studies/1.2.3/series/1.2.4"
    assert links.study_url(source) == "http://viewer.example:3000/viewer?StudyInstanceUIDs=1.2.3"
    assert links.study_url("dicomweb://other.example:8042/dicom-web/studies/1.2.3/series/1.2.4") is None
    assert links.study_url("/data/cohort/patient001") is None
    assert links.study_url("dicomweb://pacs.example:8042/dicom-web") is None  # no study named
    assert ViewerLinks("http://v").study_url("dicomwebs://any.example/rs/studies/9.8/series/7") == \
        viewer_route("http://v", "9.8")
    rows = [{"study_id": i, "patient_id": f"p{i}", "source_uri": source.replace("1.2.3", f"1.{i}")} for i in (1, 2, 3)]
    listed = study_links(links, [{"study_id": 3, "severity": 2}, {"study_id": 4, "severity": 1}], rows,
                         [{"study_id": 4, "patient_id": "p4", "source_uri": "/local/p4"}])
    assert [(s["study_id"], s["flagged"]) for s in listed] == [(3, True), (1, False), (2, False)]


def test_report_gives_viewer_urls(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``report --json``: a viewer_url per study in the viewer's PACS, flagged first; ``report`` and ``status``
    print them."""
    from db.session import open_record, session_scope
    from db.writes import record_qc_flags
    from scheduler.cli.common import print_viewer_links
    from scheduler.report_page import write_report
    from tests.record_fixtures import new_run, write_results

    pacs = "dicomweb://127.0.0.1:8042/dicom-web"
    sources = [f"{pacs}/studies/1.1/series/2.1", f"{pacs}/studies/1.2/series/2.2", "/cohort/local",
               "dicomweb://elsewhere:8042/dicom-web/studies/1.4/series/2.4"]
    engine = open_record(sqlite_url)
    model_id, ids = new_run(engine, "links", sources=sources)
    for study_id in ids.values():
        write_results(engine, study_id, model_id)
    with session_scope(engine) as session:
        record_qc_flags(session, study_id=ids[sources[1]], model_id=model_id, flags=[
            {"flag": "pieces", "frame": 1, "structure": "LV", "value": 9.0, "threshold": 5.0, "severity": 1,
             "reason": "LV in 2 pieces"}])
    settings = Settings(database_url=sqlite_url, dicomweb_url=pacs, viewer_url="http://viewer:3000")
    write_report(engine, settings, "links", json_path=tmp_path / "summary.json", html=tmp_path / "page")
    print_viewer_links(engine, settings, "links", limit=1)  # status's cut: the flagged study, then a count
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"  {sources[1]} (flagged): http://viewer:3000/viewer?StudyInstanceUIDs=1.2",
        "  and 1 more: heartseg report links --json FILE lists them all"]
    engine.dispose()
    document = json.loads((tmp_path / "summary.json").read_text())
    urls = [s["viewer_url"] for s in document["viewer"]["studies"]]
    assert urls == ["http://viewer:3000/viewer?StudyInstanceUIDs=1.2", "http://viewer:3000/viewer?StudyInstanceUIDs=1.1"]
    assert document["viewer"]["studies"][0]["flagged"] is True and document["viewer"]["url"] == "http://viewer:3000"
    assert [f["viewer_url"] for f in document["flags"]] == [urls[0]]
    assert {w["patient_id"]: w["viewer_url"] for w in document["worst"]}[sources[2]] is None

    # the page: its viewer section lists both, flagged first; the flagged study's row and montage link to it
    html = (tmp_path / "page" / "index.html").read_text()
    # no PACS listens there: the first montage names that, the other one of that PACS is not fetched again
    assert html.count("the PACS does not answer") == 3 and html.count("not fetched: ") == 1, html
    links = page_links(html)
    assert [href for section, _, href in links if section == "viewer"] == urls
    assert [href for section, _, href in links if section == "flags" and "StudyInstanceUIDs" in href] == [urls[0]]
    assert [href for _, div, href in links if div == f"study{ids[sources[1]]}"] == [urls[0]]
    env = heartseg_env(HEARTSEG_DATABASE_URL=sqlite_url, HEARTSEG_DICOMWEB_URL=pacs,
                       HEARTSEG_VIEWER_URL="http://viewer:3000")
    text = subprocess.run([sys.executable, "-m", "scheduler.cli", "report", "links"], env=env, capture_output=True,
                          text=True, timeout=120, check=True).stdout
    lines = [line.strip() for line in text.splitlines() if "StudyInstanceUIDs" in line]
    assert lines == [f"{sources[1]} (flagged): {urls[0]}", f"{sources[0]}: {urls[1]}"]
    status = subprocess.run([sys.executable, "-m", "scheduler.cli", "status", "links"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert [line.strip() for line in status.stdout.splitlines() if "StudyInstanceUIDs" in line] == lines


def page_links(html: str) -> list[tuple[str | None, str | None, str]]:
    """(id of the last ``h2`` before it, id of the ``div`` holding it, href) of every link of a page."""
    from html.parser import HTMLParser

    class Links(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.section: str | None = None
            self.divs: list[str | None] = []
            self.found: list[tuple[str | None, str | None, str]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            values = dict(attrs)
            if tag == "h2":
                self.section = values.get("id")
            elif tag == "div":
                self.divs.append(values.get("id"))
            elif tag == "a" and values.get("href"):
                self.found.append((self.section, next((d for d in reversed(self.divs) if d), None),
                                   str(values["href"])))

        def handle_endtag(self, tag: str) -> None:
            if tag == "div" and self.divs:
                self.divs.pop()

    parser = Links()
    parser.feed(html)
    return parser.found


# --- the proxy -------------------------------------------------------------------------------------------------


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (requests would normalise ``..``), with the viewer's login."""
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    try:
        connection.request("GET", path, headers={"Authorization": basic_header(":".join(VIEWER_LOGIN))})
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def test_viewer_asks_for_its_login(viewer: str, published: Published) -> None:
    for path in ("/", "/app-config.js", "/dicom-web/studies", viewer_route("", published.study_uid)):
        reply = requests.get(f"{viewer}{path}", timeout=30)
        assert reply.status_code == 401 and reply.headers["WWW-Authenticate"].startswith("Basic"), path
        assert requests.get(f"{viewer}{path}", auth=("alice", "wrong"), timeout=30).status_code == 401, path
        assert requests.get(f"{viewer}{path}", auth=VIEWER_LOGIN, timeout=30).status_code == 200, path
    # Open: the probes', and the manifest, which browsers fetch without credentials.
    assert requests.get(f"{viewer}/healthcheck", timeout=30).text == "OK\n"
    assert requests.get(f"{viewer}/manifest.json", timeout=30).status_code == 200


def test_proxy_adds_the_pacs_credentials_and_only_reads(viewer: str, pacs: Orthanc, published: Published) -> None:
    assert requests.get(f"{pacs.dicomweb_url}/studies", timeout=30).status_code == 401  # the PACS asks for them
    studies = requests.get(f"{viewer}/dicom-web/studies", auth=VIEWER_LOGIN, timeout=30)
    assert studies.status_code == 200, studies.text
    assert [s["0020000D"]["Value"][0] for s in studies.json()] == [published.study_uid]
    assert studies.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    for method in ("POST", "PUT", "DELETE"):
        reply = requests.request(method, f"{viewer}/dicom-web/studies", auth=VIEWER_LOGIN, timeout=30)
        assert reply.status_code == 405, method
    assert raw_get(viewer, "/dicom-web/studies/../../system")[0] == 400  # not out of the DICOMweb root
    status, body = raw_get(viewer, "/../../../../etc/passwd")
    assert status in (403, 404) or b"root:" not in body  # nothing outside OHIF's build
    assert "/dicom-web" in requests.get(f"{viewer}/app-config.js", auth=VIEWER_LOGIN, timeout=30).text
    route = requests.get(viewer_route(viewer, published.study_uid), auth=VIEWER_LOGIN, timeout=30)
    assert route.status_code == 200 and "app-config.js" in route.text  # OHIF's index.html for its own route


def test_a_pacs_that_refuses_heartsegs_login(pacs: Orthanc, ohif_dist: Path, tmp_path: Path) -> None:
    """502 naming the setting, never the PACS's own login prompt in the browser."""
    env = heartseg_env(HEARTSEG_DICOMWEB_URL=f"dicomweb://127.0.0.1:{pacs.port}/dicom-web",
                       HEARTSEG_DICOMWEB_AUTH="pacs:wrong", HEARTSEG_VIEWER_DIST=str(ohif_dist))
    with running_viewer(env, tmp_path / "viewer.log") as url:
        refused = requests.get(f"{url}/dicom-web/studies", timeout=30)
    assert refused.status_code == 502 and "WWW-Authenticate" not in refused.headers
    assert "check HEARTSEG_DICOMWEB_AUTH" in (tmp_path / "viewer.log").read_text()


# --- the browser -----------------------------------------------------------------------------------------------


def chromium() -> Any:
    """Debian's headless Chromium with WebGL on SwiftShader (no GPU), its console kept (fails when missing)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for program in (CHROMIUM, CHROMEDRIVER):
        assert Path(program).exists(), f"{program} is not installed (make system)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                     "--use-angle=swiftshader", "--enable-unsafe-swiftshader"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def wait_for(what: str, found: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """``found()`` once it is truthy (exceptions of a page still rendering count as not yet)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = found()
        except Exception:  # stale or hidden elements while OHIF renders
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.5)


def click_text(driver: Any, text: str, *, double: bool = False, timeout_s: float = WAIT_S) -> None:
    """Click (or double-click) the visible element whose text is ``text``."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    def click() -> bool:
        element = next(e for e in driver.find_elements(By.XPATH, f"//*[normalize-space(text())='{text}']")
                       if e.is_displayed())
        if double:
            ActionChains(driver).double_click(element).perform()
        else:
            element.click()
        return True

    wait_for(f"'{text}' to click", click, timeout_s)


def dismiss(driver: Any, text: str, timeout_s: float = 15) -> None:
    """Click ``text`` (OHIF's first-visit notices) when it shows up within ``timeout_s``."""
    with suppress(AssertionError):
        click_text(driver, text, timeout_s=timeout_s)


def colour_pixels(png: bytes, colour: tuple[int, int, int], tolerance: int = 10) -> np.ndarray:
    """(row, column) of the pixels within ``tolerance`` of ``colour`` in every channel."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return np.argwhere(np.abs(pixels - np.asarray(colour)).max(axis=2) <= tolerance)


def save_screenshot(driver: Any, path: Path) -> None:
    """The window as a PNG of at most 128 colours (small enough to commit)."""
    from PIL import Image

    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=128).save(path, optimize=True)


def test_browser_shows_the_segments_over_the_image(viewer: str, published: Published) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    assert f"view: {viewer_route(Settings().viewer_url, published.study_uid)}" in published.stdout
    driver = chromium()
    try:
        # Log in as a user does in the browser's dialog: the answered challenge fills its login cache, which
        # then answers every request of the page, its workers' included (a page opened at a URL that holds the
        # credentials could not make requests by relative URLs).
        driver.get(viewer.replace("http://", "http://{}:{}@".format(*VIEWER_LOGIN)) + "/app-config.js")
        driver.get(f"{viewer}/")
        dismiss(driver, "Confirm and hide")  # "for investigational use only", once per browser
        click_text(driver, "SCD0000101")  # the study list: the patient's row
        click_text(driver, "Basic Viewer")  # the longitudinal mode
        wait_for("the viewer route", lambda: "/viewer?" in driver.current_url)
        assert driver.current_url == viewer_route(viewer, published.study_uid)  # what the report links to
        dismiss(driver, "Skip all")  # the first-visit tour
        canvas = wait_for("the viewport", lambda: driver.find_element(By.CSS_SELECTOR, "canvas.cornerstone-canvas"))
        wait_for("the first image", lambda: shown_slice(driver) == 1)
        before = canvas.screenshot_as_png
        click_text(driver, "HeartSeg cardiac segmentation", double=True)  # the SEG series in the study browser
        click_text(driver, "Yes")  # "Do you want to open this Segmentation?"
        driver.find_element(By.CSS_SELECTOR, "[data-cy='panelSegmentation-btn']").click()
        rows = wait_for("the three segments", lambda: segment_rows(driver) if len(segment_rows(driver)) == 3 else None)
        assert [name for name, _ in rows] == SEGMENTS
        for (name, shown), structure in zip(rows, (Structure.RV, Structure.MYO, Structure.LV), strict=True):
            wanted = tuple(int(structure.colour[i:i + 2], 16) for i in (1, 3, 5))
            assert max(abs(a - b) for a, b in zip(shown, wanted, strict=True)) <= 2, (name, shown, wanted)
        click_text(driver, "LV myocardium")  # jumps to the slice at the segment's centre
        wait_for("a mid-ventricular slice", lambda: 4 <= shown_slice(driver) <= 9)
        canvas = driver.find_element(By.CSS_SELECTOR, "canvas.cornerstone-canvas")  # drawn anew with the SEG
        ActionChains(driver).move_to_element_with_offset(canvas, 0, canvas.size["height"] // 2 - 5).perform()
        time.sleep(2)  # the hover card fades; the slice is drawn
        after = canvas.screenshot_as_png
        if os.environ.get(SCREENSHOT_ENV):
            save_screenshot(driver, PROJECT_ROOT / os.environ[SCREENSHOT_ENV])
        logs = driver.get_log("browser")
    finally:
        driver.quit()
    found = {}
    for name, colour in rows:
        assert len(colour_pixels(before, colour)) < 5, f"{name}'s colour {colour} is on the image before the SEG"
        found[name] = colour_pixels(after, colour)
        assert len(found[name]) > 200, f"{name}: {len(found[name])} pixels of {colour} in the viewport"
    lv, myo = found["LV cavity"].mean(axis=0), found["LV myocardium"]
    assert (myo.min(axis=0) < lv).all() and (lv < myo.max(axis=0)).all(), "the LV cavity is not inside the myocardium"
    errors = [entry for entry in logs if entry["level"] == "SEVERE"]
    assert errors == [], errors


def shown_slice(driver: Any) -> int:
    """The number of the image the viewport shows, of the 12 (its overlay reads ``I:101 (6/12)``)."""
    from selenium.webdriver.common.by import By

    text = driver.find_element(By.CSS_SELECTOR, "[data-cy='viewport-overlay-bottom-right']").text
    match = re.search(r"\((\d+)/12\)", text)
    return int(match[1]) if match else 0


def segment_rows(driver: Any) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) of each row of OHIF's segmentation panel."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll(\"[data-cy='data-row']\")).map(r => ["
        "r.querySelector(\"[data-cy='data-row-title']\").textContent,"
        "getComputedStyle(r.querySelector(\"[data-cy='data-row-colorhex']\")).backgroundColor]);")
    out = []
    for name, css in rows:
        rgb = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, [\d.]+)?\)", css)
        assert rgb, css
        out.append((name.strip(), (int(rgb[1]), int(rgb[2]), int(rgb[3]))))
    return out
