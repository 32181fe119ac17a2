#!/usr/bin/env bash
# Install the Debian packages the tests use when missing: a real PACS (Orthanc with its DICOMweb plugin),
# dicom3tools (dciodvfy, the DICOM object validator the SEG tests run), a headless browser
# (Chromium and its WebDriver, which the report page and viewer tests drive through selenium), and npm
# (`make viewer` fetches OHIF's viewer with it; any npm will do, Debian's or the one Node.js brought).
set -euo pipefail

packages=(orthanc orthanc-dicomweb dicom3tools chromium chromium-driver)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
echo "installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The package starts a system-wide Orthanc on port 8042; the tests start their own, so stop that one.
$SUDO service orthanc stop >/dev/null 2>&1 || true
