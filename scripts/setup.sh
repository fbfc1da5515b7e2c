#!/usr/bin/env bash
# Sets up a virtual environment in .venv with the pinned packages (Debian and Ubuntu refuse a
# system-wide `pip install`, PEP 668) and Debian's DejaVu fonts for the reports when they are
# missing. With --browser it also installs what the tests drive for
# real: Debian's Chromium, Orthanc with its DICOMweb plugin, poppler-utils (pdftoppm, pdftotext)
# and dicom3tools (dciodvfy).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@"
}

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c "import ensurepip" >/dev/null 2>&1; then
    apt_install python3-venv
  fi
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt

# The dashboard's PDF and PNG reports are set in DejaVu Sans (core/report.py reads
# /usr/share/fonts/truetype/dejavu); the oblique face is in fonts-dejavu-extra, the rest in -core.
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans-Oblique.ttf ] || apt_install fonts-dejavu-core fonts-dejavu-extra

if [ "${1:-}" = "--browser" ]; then
  missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v Orthanc >/dev/null 2>&1 || missing+=(orthanc orthanc-dicomweb)
  [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
  command -v pdftoppm >/dev/null 2>&1 || missing+=(poppler-utils)
  command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
    # Debian starts Orthanc as a system service on install; the tests start their own on loopback.
    $SUDO service orthanc stop >/dev/null 2>&1 || true
  fi
fi
