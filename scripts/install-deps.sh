#!/usr/bin/env bash
# Installs the system packages Sluice's build and tests need, on Debian 12 (bookworm),
# checks the Go toolchain, and builds the test tool versitygw (an S3 gateway) into the
# per-user cache of scripts/versitygw.sh. Idempotent: when everything is present it
# changes nothing and does not touch the network.
#
#   scripts/install-deps.sh          install what is missing (as root)
#   scripts/install-deps.sh --check  only report; exit 1 when something is missing
#
# apt's and go's output goes to a log file and is printed only when a step fails.
# versitygw is cached per user (see scripts/versitygw.sh): run this as the user who
# runs the tests too, or the S3 tests build it on their first run.
set -euo pipefail

# The Debian packages. protobuf-compiler must provide exactly the protoc the generated
# code was made with (the Makefile's PROTOC_VERSION, Debian 12's 3.21.12).
PACKAGES=(
	protobuf-compiler # protoc, for make proto / make verify
	git               # make verify diffs; build IDs
	make
	gcc               # cgo: the race detector, RocksDB
	g++               # cgo: the RocksDB backend's C++ shim (pkg/state/rocksdb/shim.cc)
	ca-certificates   # go module downloads over HTTPS
	etcd-server       # pkg/meta's suite also runs against Debian's etcd (/usr/bin/etcd)
	# --- Packages that later work adds go here (one per line, with why): -----------
	librocksdb-dev    # RocksDB state backend (grocksdb v1.7.15 needs RocksDB 7.8); its .a and
	#                   those of libsnappy/liblz4/libzstd/zlib/libbz2/libgflags (pulled in as
	#                   dependencies) link the image's binaries statically
	# postgresql      # two-phase-commit sink tests (max_prepared_transactions > 0)
	# -------------------------------------------------------------------------------
)
PROTOC_WANT="libprotoc 3.21.12"
GO_MIN_MAJOR=1
GO_MIN_MINOR=26

scripts_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

check_only=false
case "${1:-}" in
--check) check_only=true ;;
"") ;;
-h | --help)
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "install-deps.sh: unknown argument ${1} (use --check or nothing)" >&2
	exit 2
	;;
esac

# Put the usual Go install location on PATH when go is not there already.
go_path_note=""
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:${PATH}"
	go_path_note=" (found in /usr/local/go/bin, which is not on your PATH: export PATH=/usr/local/go/bin:\$PATH)"
fi

installed() { # package
	[[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing_packages() {
	local p
	for p in "${PACKAGES[@]}"; do
		installed "$p" || echo "$p"
	done
}

# go_problem prints what is wrong with the Go toolchain, or nothing.
go_problem() {
	if ! command -v go >/dev/null 2>&1; then
		echo "Go is not installed (looked on PATH and in /usr/local/go/bin): install Go ${GO_MIN_MAJOR}.${GO_MIN_MINOR} or newer from https://go.dev/dl/ into /usr/local/go"
		return
	fi
	local v
	v="$(go env GOVERSION 2>/dev/null || true)" # e.g. go1.26.8, go1.27rc1
	if [[ ! "$v" =~ ^go([0-9]+)\.([0-9]+) ]]; then
		echo "cannot tell the version of $(command -v go) (go env GOVERSION: '${v}'): need Go ${GO_MIN_MAJOR}.${GO_MIN_MINOR} or newer"
		return
	fi
	local major="${BASH_REMATCH[1]}" minor="${BASH_REMATCH[2]}"
	if ((major < GO_MIN_MAJOR || (major == GO_MIN_MAJOR && minor < GO_MIN_MINOR))); then
		echo "$(command -v go) is ${v}: need Go ${GO_MIN_MAJOR}.${GO_MIN_MINOR} or newer (https://go.dev/dl/)"
	fi
}

protoc_problem() {
	local v
	v="$(protoc --version 2>/dev/null || true)"
	if [[ "$v" != "$PROTOC_WANT" ]]; then
		echo "protoc is '${v:-not installed}', need '${PROTOC_WANT}' (Debian 12's protobuf-compiler; remove other protoc installs from PATH)"
	fi
}

# versitygw_version prints the version scripts/versitygw.sh pins.
versitygw_version() {
	sed -n 's/^VERSITYGW_VERSION=//p' "${scripts_dir}/versitygw.sh"
}

# versitygw_bin prints where scripts/versitygw.sh keeps that version, computed as that
# script does (SLUICE_TOOLS_DIR, else sluice-tools next to GOCACHE, else
# ~/.cache/sluice-tools), without building anything. It needs Go.
versitygw_bin() {
	local dir gocache
	dir="${SLUICE_TOOLS_DIR:-}"
	if [[ -z "$dir" ]]; then
		gocache="$("${GO:-go}" env GOCACHE 2>/dev/null || true)"
		if [[ -n "$gocache" && "$gocache" != off ]]; then
			dir="$(dirname "$gocache")/sluice-tools"
		else
			dir="${HOME:?HOME is not set; set SLUICE_TOOLS_DIR}/.cache/sluice-tools"
		fi
	fi
	echo "${dir}/versitygw-$(versitygw_version)/versitygw"
}

mapfile -t missing < <(missing_packages)

if $check_only; then
	status=0
	if ((${#missing[@]})); then
		echo "missing Debian packages: ${missing[*]}"
		status=1
	elif p="$(protoc_problem)" && [[ -n "$p" ]]; then
		echo "$p"
		status=1
	fi
	if p="$(go_problem)" && [[ -n "$p" ]]; then
		echo "$p"
		echo "versitygw $(versitygw_version): cannot tell whether it is built without Go"
		status=1
	elif gw="$(versitygw_bin)" && [[ -x "$gw" ]]; then
		echo "versitygw $(versitygw_version): cached at ${gw}"
	else
		echo "versitygw $(versitygw_version): not built yet (scripts/install-deps.sh or scripts/versitygw.sh builds it into ${gw%/versitygw})"
		status=1
	fi
	exit "$status"
fi

logdir="$(mktemp -d "${TMPDIR:-/tmp}/sluice-deps.XXXXXX")"
log="${logdir}/install.log"
trap 'rm -rf "$logdir"' EXIT
run() { # command...: runs quietly; on failure prints the log and exits
	if ! "$@" >>"$log" 2>&1; then
		trap - EXIT # keep the log
		echo "install-deps.sh: failed: $*" >&2
		echo "----- ${log} -----" >&2
		cat "$log" >&2
		echo "----- end of ${log} -----" >&2
		exit 1
	fi
}

if ((${#missing[@]})); then
	if ((EUID != 0)); then
		echo "install-deps.sh: missing Debian packages: ${missing[*]}" >&2
		echo "install-deps.sh: run as root (sudo $0) to install them" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	echo "install-deps.sh: installing ${missing[*]}"
	run apt-get update -q
	run apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

status=0
if p="$(protoc_problem)" && [[ -n "$p" ]]; then
	echo "install-deps.sh: $p" >&2
	status=1
fi
gw=""
if p="$(go_problem)" && [[ -n "$p" ]]; then
	echo "install-deps.sh: $p" >&2
	echo "install-deps.sh: versitygw not built (it needs Go)" >&2
	status=1
else
	gw="$(versitygw_bin)"
	if [[ ! -x "$gw" ]]; then
		echo "install-deps.sh: building versitygw $(versitygw_version) (once; a few minutes)"
		run "${scripts_dir}/versitygw.sh"
		if [[ ! -x "$gw" ]]; then
			echo "install-deps.sh: scripts/versitygw.sh finished but ${gw} is missing" >&2
			status=1
		fi
	fi
fi
if ((status == 0)); then
	echo "install-deps.sh: all build and test dependencies are present ($(go env GOVERSION)${go_path_note}, $(protoc --version), versitygw $(versitygw_version))"
fi
exit "$status"
