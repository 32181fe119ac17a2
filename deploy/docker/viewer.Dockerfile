# syntax=docker/dockerfile:1
# HeartSeg viewer: `heartseg viewer` (the core and the viewer extra: Tornado; no torch) serving OHIF's
# released viewer, the npm package @ohif/app at the version and integrity pinned in
# scheduler/viewer/dist.py (tests/test_viewer.py checks the two ARGs below agree with it).
# Build from the repository root (the context is filtered by /.dockerignore):
#   docker build -f deploy/docker/viewer.Dockerfile -t heartseg/viewer:0.1.0 .

# OHIF's built viewer, fetched as `make viewer` fetches it: npm pack checks the tarball against the
# registry's integrity, and the build fails unless that is the pinned one.
FROM node:20.20.2-bookworm-slim AS ohif
ARG OHIF_VERSION=3.13.2
ARG OHIF_INTEGRITY=sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
WORKDIR /ohif
RUN npm pack --json "@ohif/app@${OHIF_VERSION}" > pack.json \
    && grep -qF "\"integrity\": \"${OHIF_INTEGRITY}\"" pack.json \
    && tar -xzf "ohif-app-${OHIF_VERSION}.tgz" --strip-components=1 package/dist package/package.json package/LICENSE \
    && rm "ohif-app-${OHIF_VERSION}.tgz" pack.json


FROM python:3.11.14-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY heartseg/ heartseg/
COPY workers/ workers/
COPY scheduler/ scheduler/
COPY db/ db/
# No torch; the build fails if anything drags it in.
RUN pip install "./[viewer]" \
    && pip check \
    && python -c "import importlib.util as u, sys; sys.exit('torch in viewer image' if u.find_spec('torch') else 0)" \
    && heartseg viewer --help > /dev/null


FROM python:3.11.14-slim-bookworm

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/heartseg heartseg

COPY --from=build /opt/venv /opt/venv
COPY --from=ohif /ohif /opt/ohif

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/home/heartseg \
    HEARTSEG_VIEWER_DIST=/opt/ohif/dist

WORKDIR /home/heartseg
USER 10001:10001
EXPOSE 3000
# Off loopback it refuses to start without HEARTSEG_VIEWER_AUTH; the PACS is HEARTSEG_DICOMWEB_URL.
CMD ["heartseg", "viewer", "--address", "0.0.0.0", "--port", "3000"]
