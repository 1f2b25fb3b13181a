#!/usr/bin/env bash
# The full test suite: what `make test` and CI run.
#
#   1. the system dependencies (scripts/install-deps.sh installs what is missing when
#      run as root; otherwise this says what is missing and stops)
#   2. scripts/verify.sh: generated code, gofmt, go vet, go mod tidy
#   3. go test: the concurrent packages under the race detector, the rest without, each
#      package once
#
# Arguments are passed to both go test runs, e.g. scripts/test.sh -run TestCheckpoint.
# Every step runs even when an earlier one failed (a gofmt slip should not hide a test
# failure); the exit status is non-zero when any failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:${PATH}"
fi
GO="${GO:-go}"

# Packages whose tests run with -race: those with goroutines, locks and channels at
# their core. Each entry includes its subpackages. Keep the list short: the race
# detector slows tests down 2-10x.
RACE_PACKAGES=(
	./pkg/exchange
	./pkg/runtime
	./pkg/jobmanager
	./pkg/taskmanager
	./pkg/cluster
	./pkg/scheduler
	./pkg/api
	./pkg/state
	./pkg/checkpoint
	./pkg/blobstore
	./pkg/meta
)
GO_TEST_FLAGS=(-count=1 -timeout 20m -p 2)

start=$SECONDS
failed=()
step() { echo "=== test.sh: $*"; }

# 1. Dependencies.
step "dependencies"
if ! missing="$(scripts/install-deps.sh --check 2>&1)"; then
	if ((EUID == 0)); then
		scripts/install-deps.sh
	else
		echo "$missing" >&2
		echo "test.sh: dependencies are missing; install them with: sudo scripts/install-deps.sh" >&2
		exit 1
	fi
fi

# 2. Static checks.
step "scripts/verify.sh"
scripts/verify.sh || failed+=("verify")

# 3. Tests. list -e also lists the packages that do not build, so go test reports them.
# shellcheck disable=SC2034 # into is a nameref: the caller's array is used
list() { # array-name patterns...: sets the array to the packages; exits on failure
	local -n into="$1"
	local out
	shift
	if ! out="$("$GO" list -e "$@")"; then
		echo "test.sh: go list $* failed" >&2
		exit 1
	fi
	into=()
	if [[ -n "$out" ]]; then mapfile -t into <<<"$out"; fi
}
all=() race=() plain=() patterns=()
list all ./...
if ((${#all[@]} == 0)); then
	echo "test.sh: go list ./... found no packages" >&2
	exit 1
fi
for p in "${RACE_PACKAGES[@]}"; do
	if [[ -d "$p" ]]; then patterns+=("${p}/..."); fi
done
if ((${#patterns[@]})); then list race "${patterns[@]}"; fi
declare -A is_race=()
for p in "${race[@]}"; do is_race[$p]=1; done
for p in "${all[@]}"; do
	if [[ -z "${is_race[$p]:-}" ]]; then plain+=("$p"); fi
done

if ((${#race[@]})); then
	step "go test -race (${#race[@]} packages)"
	"$GO" test "${GO_TEST_FLAGS[@]}" -race "${race[@]}" "$@" || failed+=("go test -race")
fi
if ((${#plain[@]})); then
	step "go test (${#plain[@]} packages)"
	"$GO" test "${GO_TEST_FLAGS[@]}" "${plain[@]}" "$@" || failed+=("go test")
fi

elapsed=$((SECONDS - start))
took="$((elapsed / 60))m$((elapsed % 60))s"
if ((${#failed[@]})); then
	joined="$(printf '%s, ' "${failed[@]}")"
	echo "test.sh: FAIL (${joined%, }) in ${took}" >&2
	exit 1
fi
echo "test.sh: PASS in ${took}"
