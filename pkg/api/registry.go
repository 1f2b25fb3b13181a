package api

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/pkg/version"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// BuildFunc builds a job's pipeline on env from its arguments. It must be deterministic:
// given the same arguments and parallelism it builds the same operators, because every
// process that runs the job calls it again.
type BuildFunc func(env *Env, args *Args) error

// JobInfo describes a registered job.
type JobInfo struct {
	Name        string
	Description string
	build       BuildFunc
}

var registry = struct {
	sync.Mutex
	jobs map[string]JobInfo
}{jobs: map[string]JobInfo{}}

// Register makes a job available by name. Call it from an init function of a package the
// binaries import; registering a name twice panics.
func Register(name, description string, build BuildFunc) {
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.jobs[name]; dup {
		panic(fmt.Sprintf("api: job %q registered twice", name))
	}
	registry.jobs[name] = JobInfo{Name: name, Description: description, build: build}
}

// Registered lists the registered jobs by name.
func Registered() []JobInfo {
	registry.Lock()
	defer registry.Unlock()
	var out []JobInfo
	for _, j := range registry.jobs {
		out = append(out, j)
	}
	slices.SortFunc(out, func(a, b JobInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// IsRegistered reports whether a job of that name is compiled into this binary.
func IsRegistered(name string) bool {
	registry.Lock()
	defer registry.Unlock()
	_, ok := registry.jobs[name]
	return ok
}

// Defaults are what the submitter decides for a program that does not: its default
// parallelism and its max parallelism (0: keep the program's own, or derive it).
type Defaults struct {
	Parallelism    int
	MaxParallelism int
}

// Apply sets the defaults on env before the program builds on it.
func (d Defaults) Apply(env *Env) {
	if d.Parallelism > 0 {
		env.SetParallelism(d.Parallelism)
	}
	if d.MaxParallelism > 0 {
		env.SetMaxParallelism(d.MaxParallelism)
	}
}

// BuildRegistered runs the registered job's build function and compiles the result. The
// returned program's graph carries the program descriptor and this binary's build ID.
func BuildRegistered(name string, args map[string]string, d Defaults, log *slog.Logger) (*Program, error) {
	registry.Lock()
	job, ok := registry.jobs[name]
	registry.Unlock()
	if !ok {
		var names []string
		for _, j := range Registered() {
			names = append(names, j.Name)
		}
		return nil, fmt.Errorf("no job named %q in this build (registered: %s)", name, strings.Join(names, ", "))
	}
	env := NewEnv(name, log)
	d.Apply(env)
	a := &Args{values: args, used: map[string]bool{}}
	if err := job.build(env, a); err != nil {
		return nil, fmt.Errorf("job %s: %w", name, err)
	}
	if err := a.checkUnused(); err != nil {
		return nil, fmt.Errorf("job %s: %w", name, err)
	}
	prog, err := env.Compile()
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", name, err)
	}
	prog.Graph.BuildId = version.BuildID()
	prog.Graph.Program = &sluicev1.Program{
		Kind:           &sluicev1.Program_Registered{Registered: &sluicev1.RegisteredJob{Name: name, Args: args}},
		Parallelism:    int32(d.Parallelism),
		MaxParallelism: int32(d.MaxParallelism),
	}
	return prog, nil
}

// Args are a registered job's arguments (streamctl submit JOB --arg k=v).
type Args struct {
	values map[string]string
	used   map[string]bool
	errs   []string
}

// String returns the argument or def.
func (a *Args) String(name, def string) string {
	a.used[name] = true
	if v, ok := a.values[name]; ok {
		return v
	}
	return def
}

// Int returns the argument as an int or def; a malformed value is reported by the build.
func (a *Args) Int(name string, def int) int {
	s := a.String(name, "")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		a.errs = append(a.errs, fmt.Sprintf("argument %s=%q is not an integer", name, s))
		return def
	}
	return n
}

// Duration returns the argument as a duration (Go syntax, e.g. 500ms) or def.
func (a *Args) Duration(name string, def time.Duration) time.Duration {
	s := a.String(name, "")
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		a.errs = append(a.errs, fmt.Sprintf("argument %s=%q is not a duration (e.g. 500ms)", name, s))
		return def
	}
	return d
}

func (a *Args) checkUnused() error {
	var unknown []string
	for k := range a.values {
		if !a.used[k] {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	var known []string
	for k := range a.used {
		known = append(known, k)
	}
	slices.Sort(known)
	if len(unknown) > 0 {
		a.errs = append(a.errs, fmt.Sprintf("unknown argument %s (known: %s)", strings.Join(unknown, ", "), strings.Join(known, ", ")))
	}
	if len(a.errs) > 0 {
		return fmt.Errorf("%s", strings.Join(a.errs, "; "))
	}
	return nil
}
