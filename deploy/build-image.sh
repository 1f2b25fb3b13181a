#!/usr/bin/env bash
# Builds the Sluice container image from the working tree:
#
#   1. compiles jobmanager, taskmanager and streamctl statically into deploy/dist/,
#      stamped with the same build ID as `make build` gives bin/streamctl (the task
#      managers only run registered Go jobs submitted by the same build). The RocksDB
#      state backend is C++ behind cgo: it links statically from Debian's archives
#      (librocksdb-dev and the compression libraries it uses, scripts/install-deps.sh),
#      with the pure-Go resolver and user lookup (netgo, osusergo) so that the binaries
#      need no shared library at all;
#   2. docker build -f deploy/Dockerfile deploy/dist, tagged sluice:<build ID> and
#      sluice:latest.
#
# Environment: BUILD_ID overrides the build ID (as for make); IMAGE (default sluice)
# names the image; GO (default go) the Go command.
#
# No image is pulled: the Dockerfile starts FROM scratch.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:${PATH}"
fi
GO="${GO:-go}"
IMAGE="${IMAGE:-sluice}"

# The Makefile's BUILD_ID: the commit, "-dirty" when the tree has changes.
if [[ -z "${BUILD_ID:-}" ]]; then
	BUILD_ID="$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev)"
	if ! git diff --quiet HEAD -- 2>/dev/null; then BUILD_ID+="-dirty"; fi
fi
if [[ ! "$BUILD_ID" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
	echo "build-image.sh: BUILD_ID '${BUILD_ID}' cannot be an image tag (letters, digits, _ . -)" >&2
	exit 1
fi

dist=deploy/dist
rm -rf "$dist"
mkdir -p "$dist/rootfs/tmp" "$dist/rootfs/data"
chmod 1777 "$dist/rootfs/tmp"
chmod 0755 "$dist/rootfs/data"

for a in librocksdb libsnappy liblz4 libzstd libz libbz2 libgflags; do
	if ! compgen -G "/usr/lib/*/${a}.a" >/dev/null; then
		echo "build-image.sh: ${a}.a is missing: RocksDB links statically from it (run scripts/install-deps.sh)" >&2
		exit 1
	fi
done

echo "build-image.sh: building binaries (build ID ${BUILD_ID}) into ${dist}/ (statically linking RocksDB takes minutes)"
# grocksdb_no_link: the link flags are ours (CGO_LDFLAGS), in the order a static link
# needs: RocksDB, then what it uses.
CGO_ENABLED=1 CGO_LDFLAGS="-lrocksdb -lstdc++ -lm -lzstd -llz4 -lz -lsnappy -lbz2 -lgflags -lpthread -ldl" \
	"$GO" build -trimpath -tags grocksdb_no_link,netgo,osusergo \
	-ldflags "-s -w -linkmode=external -extldflags=-static -X github.com/sluice-stream/sluice/pkg/version.buildID=${BUILD_ID}" \
	-o "$dist/" ./cmd/...
for b in jobmanager taskmanager streamctl; do
	if [[ ! -x "$dist/$b" ]]; then
		echo "build-image.sh: ${dist}/${b} was not built" >&2
		exit 1
	fi
done

echo "build-image.sh: docker build ${IMAGE}:${BUILD_ID}"
docker build -q -t "${IMAGE}:${BUILD_ID}" -t "${IMAGE}:latest" -f deploy/Dockerfile "$dist"
echo "build-image.sh: built ${IMAGE}:${BUILD_ID} and ${IMAGE}:latest"
