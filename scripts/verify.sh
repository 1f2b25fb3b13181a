#!/usr/bin/env bash
# Checks that the tree is clean in the ways review would otherwise catch by hand:
#
#   1. the generated protobuf code matches proto/*.proto (regenerated with the pinned
#      protoc in a scratch copy, so the work tree is never touched)
#   2. gofmt has nothing to change
#   3. go vet ./... is quiet
#   4. go.mod and go.sum are tidy
#
# Runs every check, then exits non-zero if any failed, saying how to fix each.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:${PATH}"
fi
GO="${GO:-go}"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/sluice-verify.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

failed=()
fail() { # check-name, then lines of explanation on stdin (not piped: fail must run in this shell)
	failed+=("$1")
	echo "verify: FAIL: $1" >&2
	sed 's/^/  /' >&2
}

# 1. Generated protobuf code. The Makefile's proto target is the one definition of how
# the code is generated; it runs here in a copy of the files it reads.
want_protoc="$(sed -n 's/^PROTOC_VERSION *:= *//p' Makefile)"
want_protoc="${want_protoc:-libprotoc 3.21.12}"
have_protoc="$(protoc --version 2>/dev/null || true)"
if [[ "$have_protoc" != "$want_protoc" ]]; then
	fail "protoc" <<-EOF
		protoc is '${have_protoc:-not installed}' but the generated code is pinned to '${want_protoc}'.
		Install Debian 12's protobuf-compiler: sudo scripts/install-deps.sh
	EOF
else
	copy="${scratch}/tree"
	mkdir -p "$copy"
	cp -R Makefile go.mod go.sum proto "$copy"/
	find "$copy/proto" -name '*.pb.go' -delete # so code of deleted .proto files shows up
	if ! (cd "$copy" && GO="$GO" make -s proto) >"${scratch}/proto.log" 2>&1; then
		fail "make proto" <"${scratch}/proto.log"
	elif ! diff -r -u proto "$copy/proto" >"${scratch}/proto.diff"; then
		lines="$(wc -l <"${scratch}/proto.diff")"
		fail "generated protobuf code is stale" < <(
			echo "The generated code in proto/ differs from what 'make proto' generates."
			echo "Run 'make proto' and commit the result. The difference (- tree, + generated):"
			head -n 60 "${scratch}/proto.diff"
			if ((lines > 60)); then echo "... (${lines} lines in all)"; fi
		)
	fi
fi

# 2. gofmt. Generated code is gofmt-clean, so it is not excluded.
if ! unformatted="$(gofmt -l . 2>&1)"; then
	fail "gofmt" < <(
		echo "gofmt -l . failed (syntax errors?):"
		printf '%s\n' "$unformatted"
	)
elif [[ -n "$unformatted" ]]; then
	fail "gofmt" < <(
		echo "These files are not gofmt-formatted; run 'gofmt -w' on them:"
		printf '%s\n' "$unformatted"
	)
fi

# 3. go vet.
if ! "$GO" vet ./... >"${scratch}/vet.log" 2>&1; then
	fail "go vet" < <(
		echo "go vet ./... reports problems; fix them:"
		cat "${scratch}/vet.log"
	)
fi

# 4. go.mod / go.sum tidiness (go mod tidy -diff changes nothing, exits 1 on a diff).
if ! "$GO" mod tidy -diff >"${scratch}/tidy.diff" 2>&1; then
	fail "go mod tidy" < <(
		echo "go.mod/go.sum are not tidy; run 'go mod tidy' and commit the result:"
		head -n 60 "${scratch}/tidy.diff"
	)
fi

if ((${#failed[@]})); then
	joined="$(printf '%s, ' "${failed[@]}")"
	echo "verify: ${#failed[@]} check(s) failed: ${joined%, }" >&2
	exit 1
fi
echo "verify: ok (generated code, gofmt, go vet, go mod tidy)"
