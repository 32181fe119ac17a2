# syntax=docker/dockerfile:1
# HeartSeg application image without torch: the `heartseg` CLI (scheduler: submit, status,
# report), the CPU metrics worker, Flower and the migration step. The core and the s3, pacs and
# monitoring extras (S3 and PACS sources and results, Flower); not the worker extra.
# Build from the repository root (the context is filtered by /.dockerignore):
#   docker build -f deploy/docker/app.Dockerfile -t heartseg/app:0.1.0 .

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
# No torch; the build fails if any of them drags it in.
RUN pip install "./[s3,pacs,monitoring]" \
    && pip check \
    && python -c "import importlib.util as u, sys; sys.exit('torch in app image' if u.find_spec('torch') else 0)" \
    && heartseg --help > /dev/null


FROM python:3.11.14-slim-bookworm

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/heartseg heartseg \
    && install -d -o 10001 -g 10001 /data/results /var/cache/heartseg /models

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/home/heartseg \
    HEARTSEG_MODEL_DIR=/models/Dataset027_ACDC/nnUNetTrainer__HeartSegPlans__2d \
    HEARTSEG_TRUSTED_MODEL_ROOTS='["/models"]' \
    HEARTSEG_RESULTS_URI=/data/results \
    HEARTSEG_CACHE_DIR=/var/cache/heartseg

WORKDIR /home/heartseg
USER 10001:10001
CMD ["heartseg", "--help"]
