# syntax=docker/dockerfile:1
# A PACS for one host without one: Debian's Orthanc with its DICOMweb plugin (the packages the tests
# run, tests/orthanc_server.py), configured by deploy/docker/orthanc.json: DICOMweb at /dicom-web/,
# HTTP basic auth with the user and password of ORTHANC_USER and ORTHANC_PASSWORD (Orthanc reads
# ${VARIABLES} of its environment in its configuration), no DICOM port.
# Build from the repository root (the context is filtered by /.dockerignore):
#   docker build -f deploy/docker/orthanc.Dockerfile -t heartseg/orthanc:0.1.0 .

FROM debian:12.11-slim

# DL3008 (unpinned apt packages) is accepted: Debian drops superseded versions from its archive
# (orthanc has security updates), so a version pin breaks the build at the next one; the exactly
# tagged base image fixes the Debian release (12: Orthanc 1.10, DICOMweb plugin 1.7).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends orthanc orthanc-dicomweb \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/orthanc/db --no-create-home pacs \
    && install -d -o 10001 -g 10001 /var/lib/orthanc/db

COPY deploy/docker/orthanc.json /etc/heartseg-orthanc/orthanc.json

USER 10001:10001
EXPOSE 8042
CMD ["Orthanc", "/etc/heartseg-orthanc/orthanc.json"]
