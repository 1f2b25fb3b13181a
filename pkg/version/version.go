// Package version identifies the build. Task managers compare build IDs with the job's
// graph so that a job compiled by one build never runs on another.
package version

import "runtime/debug"

// buildID is set by the Makefile with -ldflags -X.
var buildID string

// BuildID returns the identity of this build: the value linked in by the Makefile, else
// the VCS revision recorded by the Go toolchain, else "dev".
func BuildID() string {
	if buildID != "" {
		return buildID
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" && dirty {
			rev += "-dirty"
		}
		if rev != "" {
			return rev
		}
	}
	return "dev"
}
