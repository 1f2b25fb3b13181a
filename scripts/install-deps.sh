#!/usr/bin/env bash
# Installs the system packages Sluice's build and tests need, on Debian 12 (bookworm),
# and checks the Go toolchain. Idempotent: when everything is present it changes
# nothing and does not touch the network.
#
#   scripts/install-deps.sh          install what is missing (as root)
#   scripts/install-deps.sh --check  only report; exit 1 when something is missing
#
# apt's output goes to a log file and is printed only when a step fails.
set -euo pipefail

# The Debian packages. protobuf-compiler must provide exactly the protoc the generated
# code was made with (the Makefile's PROTOC_VERSION, Debian 12's 3.21.12).
PACKAGES=(
	protobuf-compiler # protoc, for make proto / make verify
	git               # make verify diffs; build IDs
	make
	gcc               # cgo: the race detector now, RocksDB later
	ca-certificates   # go module downloads over HTTPS
	# --- Packages that later work adds go here (one per line, with why): -----------
	# librocksdb-dev  # RocksDB state backend (grocksdb, linked statically)
	# etcd-server     # tests against a real external etcd
	# postgresql      # two-phase-commit sink tests (max_prepared_transactions > 0)
	# -------------------------------------------------------------------------------
)
PROTOC_WANT="libprotoc 3.21.12"
GO_MIN_MAJOR=1
GO_MIN_MINOR=26

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
		status=1
	fi
	exit "$status"
fi

if ((${#missing[@]})); then
	if ((EUID != 0)); then
		echo "install-deps.sh: missing Debian packages: ${missing[*]}" >&2
		echo "install-deps.sh: run as root (sudo $0) to install them" >&2
		exit 1
	fi
	logdir="$(mktemp -d "${TMPDIR:-/tmp}/sluice-deps.XXXXXX")"
	log="${logdir}/apt.log"
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
if p="$(go_problem)" && [[ -n "$p" ]]; then
	echo "install-deps.sh: $p" >&2
	status=1
fi
if ((status == 0)); then
	echo "install-deps.sh: all build and test dependencies are present ($(go env GOVERSION)${go_path_note}, $(protoc --version))"
fi
exit "$status"
