"""The viewer's web server (Tornado): OHIF's built files, its generated ``app-config.js``, and a same-origin,
read-only reverse proxy to the PACS's DICOMweb API that adds ``HEARTSEG_DICOMWEB_AUTH`` on the way.

=========================  ======================================================  ===========
path                       what                                                    login
=========================  ======================================================  ===========
``/healthcheck``           ``OK`` (for probes)                                     no
``/manifest.json``         OHIF's web app manifest, which browsers fetch without   no
                           credentials (a name and icons; nothing of the studies)
``/app-config.js``         :func:`scheduler.viewer.config.app_config`              yes
``/dicom-web/...``         GET and HEAD relayed to the PACS (QIDO-RS, WADO-RS)     yes
anything else              a file of OHIF's build, else ``index.html`` (its        yes
                           routes: ``/viewer``, ``/segmentation``, ...)
=========================  ======================================================  ===========

The login is HTTP basic (``HEARTSEG_VIEWER_AUTH``; none on loopback without it). The browser never sees the
PACS's address or credentials, and the proxy refuses every method but GET and HEAD, so nothing is stored into
or deleted from the PACS through the viewer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.httputil import HTTPHeaders, ResponseStartLine, parse_response_start_line
from tornado.log import access_log

from heartseg.errors import ConfigurationError
from heartseg.settings import Settings
from heartseg.sources.dicomweb import parse_source
from scheduler.viewer.auth import BasicAuth, basic_header, viewer_auth
from scheduler.viewer.config import PROXY_PATH, app_config
from scheduler.viewer.dist import check_dist

logger = logging.getLogger(__name__)

#: Request headers passed on to the PACS (the browser's cookies and login never are).
REQUEST_HEADERS = ("Accept", "Range", "If-None-Match", "If-Modified-Since")
#: Response headers passed back from the PACS.
RESPONSE_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Last-Modified",
                    "Cache-Control")
#: Files of OHIF's build served without login: browsers fetch the web app manifest without credentials.
PUBLIC_FILES = frozenset({"/manifest.json"})
#: A DICOMweb resource path: UIDs, resource names, frame lists; no ``..`` (checked apart).
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._,/-]*$")
#: Concurrent requests to the PACS (OHIF asks for up to 25 prefetched images at once, and thumbnails).
MAX_PACS_REQUESTS = 64
PACS_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ViewerOptions:
    """What the server needs: OHIF's build, the PACS, and who may log in."""

    dist: Path
    """OHIF's built viewer (checked by :func:`scheduler.viewer.dist.check_dist`)."""
    pacs_url: str
    """The PACS's DICOMweb root over HTTP(S), e.g. ``http://127.0.0.1:8042/dicom-web``."""
    pacs_auth: str | None = None
    """``user:password`` for the PACS (``HEARTSEG_DICOMWEB_AUTH``), added by the proxy."""
    login: BasicAuth | None = None
    """The viewer's users (``HEARTSEG_VIEWER_AUTH``); None: no login (loopback only)."""

    @classmethod
    def from_settings(cls, settings: Settings, address: str, pacs: str | None = None) -> ViewerOptions:
        """The options of a viewer listening on ``address``, showing ``pacs`` (a ``dicomweb://`` URI; default
        ``HEARTSEG_DICOMWEB_URL``), everything checked before it starts.

        Raises
        ------
        ConfigurationError
            No PACS; no OHIF build, or not the pinned one; off loopback without ``HEARTSEG_VIEWER_AUTH``.
        StudyError
            A PACS that is not a ``dicomweb://`` URI.
        """
        source = pacs or settings.dicomweb_url
        if not source:
            raise ConfigurationError("heartseg viewer needs the PACS to show: set HEARTSEG_DICOMWEB_URL or give "
                                     "--pacs dicomweb://HOST:PORT/PATH")
        return cls(dist=check_dist(settings.viewer_dist), pacs_url=parse_source(source).base_url,
                   pacs_auth=settings.dicomweb_auth, login=viewer_auth(address, settings.viewer_auth))


class _Guarded(tornado.web.RequestHandler):
    """A handler behind the viewer's login, whose responses allow OHIF's cross-origin isolation."""

    def set_default_headers(self) -> None:
        """Cross-origin isolation lets OHIF use SharedArrayBuffer; every resource it loads is same-origin."""
        self.set_header("Cross-Origin-Opener-Policy", "same-origin")
        self.set_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.set_header("X-Content-Type-Options", "nosniff")

    def prepare(self) -> None:
        """Answer 401 unless the request carries one of the viewer's users (when it has any)."""
        options: ViewerOptions = self.settings["viewer"]
        if options.login is None or self.request.path in PUBLIC_FILES:
            return
        if not options.login.accepts(self.request.headers.get("Authorization")):
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Basic realm="HeartSeg viewer", charset="UTF-8"')
            self.finish("login required\n")


class HealthHandler(tornado.web.RequestHandler):
    """``/healthcheck``: the server answers (no login, nothing about the PACS or the studies)."""

    def get(self) -> None:
        """``OK``."""
        self.set_header("Content-Type", "text/plain")
        self.write("OK\n")


class ConfigHandler(_Guarded):
    """``/app-config.js``: OHIF's configuration, generated (:func:`scheduler.viewer.config.app_config`)."""

    def get(self) -> None:
        """The script, never cached (it follows the settings)."""
        self.set_header("Content-Type", "application/javascript; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.write(self.settings["app_config"])


class OhifFiles(_Guarded, tornado.web.StaticFileHandler):
    """OHIF's built files; a path that is no file is one of its client-side routes, answered with ``index.html``."""

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        """The file, or ``index.html`` for a route (``/viewer?StudyInstanceUIDs=...``, ``/``)."""
        if not Path(absolute_path).is_file():
            absolute_path = str(Path(root) / "index.html")
        return super().validate_absolute_path(root, absolute_path)


class PacsProxy(_Guarded):
    """``/dicom-web/<path>``: GET and HEAD relayed to the PACS's DICOMweb root, its answer streamed back."""

    SUPPORTED_METHODS = ("GET", "HEAD")

    async def get(self, path: str) -> None:
        """Relay a GET."""
        await self._relay()

    async def head(self, path: str) -> None:
        """Relay a HEAD."""
        await self._relay()

    async def _relay(self) -> None:
        options: ViewerOptions = self.settings["viewer"]
        resource = self.request.path[len(PROXY_PATH):].lstrip("/")  # as sent: still percent-encoded
        if not _SAFE_PATH.match(resource) or ".." in resource.split("/"):
            raise tornado.web.HTTPError(400, reason="not a DICOMweb resource")
        url = f"{options.pacs_url.rstrip('/')}/{resource}" + (f"?{self.request.query}" if self.request.query else "")
        headers = {name: self.request.headers[name] for name in REQUEST_HEADERS if name in self.request.headers}
        if options.pacs_auth:
            headers["Authorization"] = basic_header(options.pacs_auth)
        relay = _Relay(self)
        request = HTTPRequest(url, method=self.request.method or "GET", headers=headers, follow_redirects=False,
                              decompress_response=False, connect_timeout=10, request_timeout=PACS_TIMEOUT_S,
                              header_callback=relay.on_header_line, streaming_callback=relay.on_chunk)
        client: AsyncHTTPClient = self.settings["pacs_client"]
        try:
            await client.fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as exc:  # refused, unreachable, timed out (TimeoutError)
            if not relay.started:
                logger.warning("the PACS at %s did not answer: %s", options.pacs_url, exc)
                raise tornado.web.HTTPError(502, reason="the PACS does not answer") from exc
            raise  # cut off mid-answer: the client sees a truncated response
        if not relay.started:
            raise tornado.web.HTTPError(502, reason="no answer from the PACS")
        self.finish()


class _Relay:
    """Copies the PACS's status, chosen headers and body chunks onto the browser's response as they arrive."""

    def __init__(self, handler: PacsProxy) -> None:
        self.handler = handler
        self.start: ResponseStartLine | None = None
        self.headers = HTTPHeaders()
        self.started = False

    def on_header_line(self, line: str) -> None:
        """One header line of the PACS's answer; the empty one ends them and starts the browser's response."""
        if line.startswith("HTTP/"):
            self.start, self.headers = parse_response_start_line(line.strip()), HTTPHeaders()
        elif line.strip():
            self.headers.parse_line(line)
        elif self.start is not None and self.start.code >= 200:  # not an interim 100 Continue
            self._start(self.start.code)

    def _start(self, code: int) -> None:
        handler = self.handler
        if code in (401, 403, 407):
            # Never the PACS's own login prompt in the browser: the viewer's credentials are its own.
            logger.warning("the PACS refused HeartSeg's credentials (HTTP %d): check HEARTSEG_DICOMWEB_AUTH", code)
            handler.set_status(502, reason=f"the PACS refused HeartSeg's credentials (HTTP {code})")
            self.started = True
            return
        handler.set_status(code if code < 300 or code >= 400 else 502)
        for name in RESPONSE_HEADERS:
            if name in self.headers:
                handler.set_header(name, self.headers[name])
        self.started = True

    def on_chunk(self, chunk: bytes) -> None:
        """A piece of the body, written and flushed to the browser (an error page's body is dropped)."""
        if self.handler.get_status() == 502:
            return
        self.handler.write(chunk)
        self.handler.flush().add_done_callback(_ignore_closed)


def _ignore_closed(future: asyncio.Future[None]) -> None:
    """A browser that went away (a scrolled-past image) closes its stream; nothing to report."""
    if not future.cancelled():
        future.exception()


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log line without the query string: a search of the study list carries what the user
    typed, a patient's name among it, and no log line may hold one."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    access_log.log(level, "%d %s %s %.0f ms", status, handler.request.method, handler.request.path,
                   1000 * handler.request.request_time())


def make_app(options: ViewerOptions) -> tornado.web.Application:
    """The viewer's Tornado application (call it inside the event loop that will serve it)."""
    settings: dict[str, Any] = {
        "viewer": options,
        "app_config": app_config(),
        "pacs_client": AsyncHTTPClient(force_instance=True, max_clients=MAX_PACS_REQUESTS),
        "compress_response": True,
        "log_function": log_request,
    }
    return tornado.web.Application([
        (r"/healthcheck", HealthHandler),
        (r"/app-config\.js", ConfigHandler),
        (rf"{PROXY_PATH}/(.*)", PacsProxy),
        (r"/(.*)", OhifFiles, {"path": str(options.dist), "default_filename": "index.html"}),
    ], **settings)


def serve(options: ViewerOptions, address: str, port: int) -> None:
    """Serve the viewer on ``address:port`` until SIGINT or SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        server = make_app(options).listen(port, address=address)
        try:
            await stop.wait()
        finally:
            server.stop()
            await server.close_all_connections()

    asyncio.run(main())
