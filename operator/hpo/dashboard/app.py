"""The dashboard's web app (Starlette): three pages, their JSON, artifact downloads.

Pages are HTML shells; ``static/dashboard.js`` fetches the JSON and draws the
tables and Plotly charts, then polls it with ``If-None-Match``: an unchanged
study answers 304 after one ``revision()``, so a refresh costs the same for 10
trainings or 5,000. Nothing here writes to a study's store; every GET.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from hpo.dashboard import views
from hpo.dashboard.source import Entry, Source, problem

HERE = Path(__file__).parent


def plotly_js() -> Path:
    """Plotly.js as bundled in the installed ``plotly`` package: no CDN at run time."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _json(data: Any, status: int = 200, etag: str | None = None) -> JSONResponse:
    headers = {"Cache-Control": "no-cache"}
    if etag:
        headers["ETag"] = f'"{etag}"'
    return JSONResponse(data, status_code=status, headers=headers)


def _not_modified(request: Request, etag: str) -> bool:
    return request.headers.get("if-none-match", "").strip('"') == etag


class _Endpoints:
    """The app's pages and JSON, over one ``Source``: each method answers one route."""

    def __init__(self, source: Source, refresh_s: float) -> None:
        self.source = source
        self.refresh_s = refresh_s
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"])
        )

    def page(self, name: str, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(
            where=self.source.where, refresh_ms=int(self.refresh_s * 1000), **context
        )
        return HTMLResponse(html)

    def find(self, request: Request) -> tuple[Entry | None, JSONResponse | None]:
        sid = request.query_params.get("id", "")
        entry = self.source.entry(sid) if sid else None
        if entry is None:
            message = f"no study {sid!r} under {self.source.where}" if sid else "give ?id=STUDY"
            return None, _json({"error": message}, 404)
        return entry, None

    async def studies_page(self, request: Request) -> Response:
        return self.page("studies.html")

    async def study_page(self, request: Request) -> Response:
        return self.page("study.html", sid=request.query_params.get("id", ""))

    async def config_page(self, request: Request) -> Response:
        q = request.query_params
        return self.page("config.html", sid=q.get("id", ""), trial=q.get("trial", ""))

    def api_studies(self, request: Request) -> Response:
        error = self.source.discover()
        tag = self.source.list_revision()
        if _not_modified(request, tag):
            return Response(status_code=304, headers={"ETag": f'"{tag}"'})
        rows = []
        for sid in self.source.ids():
            entry = self.source.read(self.source.entry(sid))  # type: ignore[arg-type]
            summary = dict(entry.detail["summary"]) if entry.detail else {"id": sid, "name": sid}
            summary["error"] = entry.error
            rows.append(summary)
        empty = None  # nothing wrong: shown as a note, not as an error
        if not rows and error is None:
            empty = f"no studies under {self.source.where} yet: this page updates when one starts"
        return _json(
            {
                "where": self.source.where,
                "error": error,
                "empty": empty,
                "studies": rows,
                "now": time.time(),
            },
            etag=tag,
        )

    def api_study(self, request: Request) -> Response:
        entry, missing = self.find(request)
        if missing:
            return missing
        assert entry is not None
        tag, body = self.source.read(entry).encoded()
        if _not_modified(request, tag):
            return Response(status_code=304, headers={"ETag": f'"{tag}"'})
        headers = {"ETag": f'"{tag}"', "Cache-Control": "no-cache"}
        return Response(body, media_type="application/json", headers=headers)

    def api_config(self, request: Request) -> Response:
        entry, missing = self.find(request)
        if missing:
            return missing
        assert entry is not None
        entry = self.source.read(entry)
        if entry.detail is None:
            return _json({"error": entry.error or "the study cannot be read"}, 503)
        trial = request.query_params.get("trial", "")
        tag = f"{entry.revision}:{entry.error}:{trial}"
        if _not_modified(request, tag):
            return Response(status_code=304, headers={"ETag": f'"{tag}"'})
        try:
            data = views.configuration(
                entry.handle,
                entry.detail,
                trial,
                endpoint=self.source.endpoint,
                tls=self.source.tls,
            )
        except Exception as exc:  # a message, not a trace
            return _json({"error": problem(exc)}, 503)
        if data is None:
            return _json({"error": f"study {entry.sid} has no training of trial {trial!r}"}, 404)
        return _json({"config": data, "error": entry.error}, etag=tag)

    def artifact(self, request: Request) -> Response:
        entry, missing = self.find(request)
        if missing:
            return missing
        assert entry is not None
        q = request.query_params
        trial, name = q.get("trial", ""), q.get("name", "")
        try:
            seed = int(q.get("seed", ""))
            self.source.revision(entry)  # opens the study if this is the first request
            if name not in entry.handle.artifacts(trial, seed):
                return _json({"error": f"{trial}/seed-{seed} has no artifact {name!r}"}, 404)
            data = entry.handle.read_artifact(trial, seed, name)
        except Exception as exc:
            return _json({"error": problem(exc)}, 404 if isinstance(exc, ValueError) else 503)
        filename = f"{entry.handle.name}-{trial}-seed{seed}-{name}"
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def plotly(self, request: Request) -> Response:
        return FileResponse(
            plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
        )


def create_app(source: Source, *, refresh_s: float = 2.0) -> Starlette:
    """The dashboard over ``source``; pages poll their JSON every ``refresh_s`` seconds."""
    e = _Endpoints(source, refresh_s)
    routes = [
        Route("/", e.studies_page),
        Route("/study", e.study_page),
        Route("/config", e.config_page),
        Route("/api/studies", e.api_studies),
        Route("/api/study", e.api_study),
        Route("/api/config", e.api_config),
        Route("/artifact", e.artifact),
        Route("/static/plotly.min.js", e.plotly),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes)


def serve(
    where: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    endpoint: str | None = None,
    tls: bool | None = None,
    refresh_s: float = 2.0,
) -> None:
    """Run the dashboard until interrupted (uvicorn, one process: the cache is in memory)."""
    import uvicorn

    app = create_app(Source(where, endpoint=endpoint, tls=tls), refresh_s=refresh_s)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
