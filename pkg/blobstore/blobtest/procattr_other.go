//go:build !linux

package blobtest

import "os/exec"

// setParentDeathSignal: only Linux can tie the server's life to the test process's;
// elsewhere the test's cleanup stops it.
func setParentDeathSignal(*exec.Cmd) {}
