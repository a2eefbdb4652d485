#!/bin/bash
# inside the container: time pip and uv installing the same hash-locked set into fresh venvs, no cache
set -euo pipefail
export PIP_CERT=/ca.pem SSL_CERT_FILE=/ca.pem REQUESTS_CA_BUNDLE=/ca.pem
which=$1
case $which in
pip)
  python3 -m venv /opt/vpip
  start=$(date +%s.%N)
  /opt/vpip/bin/pip install -q --no-cache-dir --disable-pip-version-check --require-hashes --only-binary=:all: -r /b/requirements.lock
  end=$(date +%s.%N)
  echo "pip install: $(echo "$end - $start" | bc) s"; du -sh /opt/vpip ;;
uv)
  python3 -m venv /opt/uvtool && /opt/uvtool/bin/pip install -q --disable-pip-version-check uv && /opt/uvtool/bin/uv --version
  python3 -m venv --without-pip /opt/vuv
  start=$(date +%s.%N)
  /opt/uvtool/bin/uv pip install -q --python /opt/vuv/bin/python --require-hashes --no-build --compile-bytecode --no-cache -r /b/requirements.lock
  end=$(date +%s.%N)
  echo "uv install: $(echo "$end - $start" | bc) s"; du -sh /opt/vuv ;;
esac
