#!/usr/bin/env bash
# Installs the pinned versitygw (a real S3 gateway, github.com/versity/versitygw) into a
# per-user cache and prints the path of the binary on stdout (and nothing else there).
#
# The S3 tests of pkg/blobstore run this; CI should run it once in its dependency step
# so that the first test run does not pay for the build. versitygw is deliberately not a
# dependency in go.mod: it is a test tool, built by `go install pkg@version` into its own
# directory.
#
# Idempotent and safe to run concurrently: a finished binary is reused; a new one is
# built into a scratch directory and renamed into place.
#
# Environment:
#   GO                 the go command (default: go)
#   SLUICE_TOOLS_DIR   the cache directory (default: $(go env GOCACHE)/../sluice-tools,
#                      falling back to ~/.cache/sluice-tools)
set -euo pipefail

# Pinned. `go list -m -versions github.com/versity/versitygw` lists what the module
# proxy serves; bump deliberately and rerun the pkg/blobstore S3 tests.
VERSITYGW_VERSION=v1.8.0

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:${PATH}"
fi
GO="${GO:-go}"

dir="${SLUICE_TOOLS_DIR:-}"
if [[ -z "$dir" ]]; then
	gocache="$("$GO" env GOCACHE 2>/dev/null || true)"
	if [[ -n "$gocache" && "$gocache" != off ]]; then
		dir="$(dirname "$gocache")/sluice-tools"
	else
		dir="${HOME:?HOME is not set; set SLUICE_TOOLS_DIR}/.cache/sluice-tools"
	fi
fi
dest="${dir}/versitygw-${VERSITYGW_VERSION}"
bin="${dest}/versitygw"

if [[ -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi

mkdir -p "$dest"
scratch="$(mktemp -d "${dest}/.install.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

echo "versitygw.sh: installing github.com/versity/versitygw ${VERSITYGW_VERSION} into ${dest} (once)" >&2
# Outside any module and workspace, with no inherited -mod or -tags, so that only the
# pinned version's own go.mod decides what is built.
(
	cd "$scratch"
	GOBIN="$scratch" GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
		"$GO" install "github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION}"
) >&2
mv -f "${scratch}/versitygw" "$bin"
echo "$bin"
