package jobmanager

// Where a job submitted with restore_path starts from: a retained checkpoint of another
// job (.../<job-id>/chk-<n>, its files relative to that job's directory) or a savepoint
// (any other directory, its files relative to it, so that a savepoint moved or copied
// anywhere restores). Both are read and checked against the job at submit, so that
// every problem is one line then, not a failing restore later.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/meta"
	"github.com/sluice-stream/sluice/pkg/rpc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// restoreSource is what a restore_path names.
type restoreSource struct {
	path string // as given
	// storage is the URL of the directory the state's paths are relative to: the other
	// job's directory, or the savepoint's.
	storage string
	// metadataKey is the _metadata's key relative to storage.
	metadataKey string
	// savepoint: a savepoint's directory; otherwise a retained checkpoint, of the job
	// jobID (the name of its job directory) with the ID id.
	savepoint bool
	jobID     string
	id        int64
}

// what names the source in messages.
func (s restoreSource) what() string {
	if s.savepoint {
		return "savepoint " + s.storage
	}
	return fmt.Sprintf("checkpoint %d of job %s (%s)", s.id, s.jobID, s.storage)
}

// splitURL splits a blob store URL at its query.
func splitURL(u string) (base, query string) {
	base, query, _ = strings.Cut(u, "?")
	return base, query
}

func withQuery(base, query string) string {
	if query == "" {
		return base
	}
	return base + "?" + query
}

// joinURL appends the path element elem to the directory URL dir, before its query.
func joinURL(dir, elem string) string {
	base, query := splitURL(dir)
	return withQuery(strings.TrimSuffix(base, "/")+"/"+strings.Trim(elem, "/"), query)
}

// sameLocation reports whether two URLs name the same directory (trailing slashes and
// queries aside).
func sameLocation(a, b string) bool {
	a, _ = splitURL(a)
	b, _ = splitURL(b)
	return strings.TrimSuffix(a, "/") == strings.TrimSuffix(b, "/")
}

// parseRestorePath splits a restore_path: the URL of a checkpoint's chk-<n> directory, of
// a savepoint's directory, or of either's _metadata.
func parseRestorePath(path string) (restoreSource, error) {
	base, query := splitURL(strings.TrimSpace(path))
	base = strings.TrimSuffix(base, "/")
	base = strings.TrimSuffix(base, "/"+blobstore.MetadataName)
	base = strings.TrimSuffix(base, "/")
	scheme, _, ok := strings.Cut(base, "://")
	i := strings.LastIndex(base, "/")
	if !ok || scheme == "" || i < len(scheme)+3 || i == len(base)-1 {
		return restoreSource{}, fmt.Errorf("%w: %q is not the URL of a savepoint or checkpoint directory (e.g. file:///savepoints/savepoint-3f2a1b-0123456789ab or file:///checkpoints/<job-id>/chk-42)", rpc.ErrInvalid, path)
	}
	if n, isChk := blobstore.ParseCheckpointDir(base[i+1:]); isChk {
		jobDir := base[:i]
		return restoreSource{path: path, storage: withQuery(jobDir, query), metadataKey: blobstore.CheckpointPath(n, blobstore.MetadataName),
			jobID: jobDir[strings.LastIndex(jobDir, "/")+1:], id: n}, nil
	}
	return restoreSource{path: path, storage: withQuery(base, query), metadataKey: blobstore.MetadataName, savepoint: true}, nil
}

// readOnlyURL keeps opening a file:// directory from creating it (the store creates its
// directory by default; an empty create_dir parameter turns that off): a mistyped path
// must not leave a directory behind.
func readOnlyURL(u string) string {
	if !strings.HasPrefix(strings.ToLower(u), blobstore.SchemeFile+":") {
		return u
	}
	base, query := splitURL(u)
	if strings.Contains("&"+query, "&create_dir=") {
		return u
	}
	if query != "" {
		query += "&"
	}
	return base + "?" + query + "create_dir="
}

// openSource opens src's directory for reading; missing is true when it does not exist
// (file://).
func openSource(ctx context.Context, src restoreSource) (store *blobstore.Store, missing bool, err error) {
	store, err = blobstore.Open(ctx, readOnlyURL(src.storage))
	if err != nil {
		return nil, errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "no such file or directory"), err
	}
	return store, false, nil
}

// readSource reads and checks the _metadata of src. problem says, in a sentence that
// names src, why it cannot be restored (missing, not a savepoint, corrupt); err that it
// cannot be read now.
func readSource(ctx context.Context, src restoreSource) (md *sluicev1.CheckpointMetadata, problem string, err error) {
	kind, where := "savepoint", src.storage
	if !src.savepoint {
		kind, where = "checkpoint", src.storage+"/"+strings.TrimSuffix(src.metadataKey, "/"+blobstore.MetadataName)
	}
	store, missing, err := openSource(ctx, src)
	if missing {
		return nil, fmt.Sprintf("no %s at %s: the directory does not exist (no %s)", kind, where, blobstore.MetadataName), nil
	}
	if err != nil {
		return nil, "", err
	}
	defer store.Close()
	md, problem, err = readRecorded(ctx, store, meta.CompletedCheckpoint{ID: src.id, MetadataPath: src.metadataKey})
	switch {
	case err != nil:
		return nil, "", err
	case problem == "":
		return md, "", nil
	case problem != src.metadataKey+": not found":
		return nil, fmt.Sprintf("%s at %s cannot be restored: %s", kind, where, problem), nil
	}
	// No _metadata: say whether there is anything at all.
	dir := ""
	if !src.savepoint {
		dir = strings.TrimSuffix(src.metadataKey, blobstore.MetadataName)
	}
	empty := true
	if err := store.List(ctx, dir, func(string, int64) error { empty = false; return errStopList }); err != nil && !errors.Is(err, errStopList) {
		return nil, "", err
	}
	if empty {
		return nil, fmt.Sprintf("no %s at %s: the directory does not exist or is empty (no %s)", kind, where, blobstore.MetadataName), nil
	}
	return nil, fmt.Sprintf("%s is not a %s directory: it has no %s (a %s still being written, or another directory)", where, kind, blobstore.MetadataName, kind), nil
}

var errStopList = errors.New("stop listing")

// loadRestore reads the checkpoint or savepoint at path and checks that it fits job g
// (see checkFit): the state a job submitted with restore_path starts from, and the URL
// its files are relative to.
func loadRestore(ctx context.Context, path string, g *sluicev1.JobGraph, allowNonRestored bool, backend string) (*sluicev1.CheckpointMetadata, string, error) {
	src, err := parseRestorePath(path)
	if err != nil {
		return nil, "", err
	}
	md, problem, err := readSource(ctx, src)
	if err != nil {
		return nil, "", fmt.Errorf("%w: cannot read %s: %v", rpc.ErrFailedPrecondition, src.storage, err)
	}
	if problem != "" {
		return nil, "", fmt.Errorf("%w: %s", rpc.ErrInvalid, problem)
	}
	if err := checkFit(md, src, g, allowNonRestored, backend); err != nil {
		return nil, "", err
	}
	return md, src.storage, nil
}

// checkFit refuses to restore md into job g when it cannot be: state of an operator the
// job lacks (unless allowNonRestored: it is then left out), another max parallelism
// (keyed state is split into that many key groups), keyed state for an operator that is
// not keyed in the job, state in a backend's native format the job's backend cannot
// read, in-flight data at another parallelism.
func checkFit(md *sluicev1.CheckpointMetadata, src restoreSource, g *sluicev1.JobGraph, allowNonRestored bool, backend string) error {
	what := src.what()
	if !src.savepoint {
		what = fmt.Sprintf("checkpoint %d", md.GetCheckpointId())
	}
	ops := map[string]*sluicev1.Operator{}
	for _, op := range g.GetOperators() {
		ops[op.GetUid()] = op
	}
	if err := checkInFlight(md, g); err != nil {
		return err
	}
	for _, op := range md.GetOperators() {
		if !hasState(op) {
			continue
		}
		jop := ops[op.GetUid()]
		if jop == nil {
			if allowNonRestored {
				continue
			}
			return fmt.Errorf("%w: %s has state of operator %q, which the job does not have (submit with --allow-non-restored-state to skip it)",
				rpc.ErrFailedPrecondition, what, op.GetUid())
		}
		if op.GetMaxParallelism() != 0 && op.GetMaxParallelism() != g.GetMaxParallelism() {
			return fmt.Errorf("%w: %s was taken with max parallelism %d, the job has %d: keyed state is split into that many key groups, which cannot change (submit with pipeline.max-parallelism %d)",
				rpc.ErrFailedPrecondition, what, op.GetMaxParallelism(), g.GetMaxParallelism(), op.GetMaxParallelism())
		}
		for _, st := range op.GetSubtasks() {
			for _, h := range st.GetKeyed() {
				if jop.GetKind() != "keyed-process" {
					return fmt.Errorf("%w: %s has keyed state of operator %q, which is not keyed in the job (a %s): give the keyed operator that UID, or the new one another",
						rpc.ErrFailedPrecondition, what, op.GetUid(), jop.GetKind())
				}
				if native := len(h.GetPrivateFiles()) > 0 || len(h.GetSharedFiles()) > 0; native && h.GetBackend() != "" && backend != "" && h.GetBackend() != backend {
					return fmt.Errorf("%w: %s holds the keyed state of operator %q in the %s backend's native format, which the job's backend (%s) cannot read: take a canonical savepoint (streamctl savepoint --format canonical) to change backends",
						rpc.ErrFailedPrecondition, what, op.GetUid(), h.GetBackend(), backend)
				}
			}
		}
	}
	return nil
}

// The timeouts of what a restore reads are proportional to the bytes read, so that no
// fixed timeout cuts off a large restore (a rescale of a large state, say): a step that
// reads or verifies n bytes of state may take restoreBase plus one second per
// restoreRate bytes.
const (
	restoreBase = 2 * time.Minute
	restoreRate = 16 << 20 // bytes per second
)

// timeoutFor is the time allowed to read or verify n bytes of state.
func timeoutFor(base time.Duration, n int64) time.Duration {
	return base + time.Duration(n/restoreRate)*time.Second
}

// stateBytes is the size of every file md references (inline data aside).
func stateBytes(md *sluicev1.CheckpointMetadata) int64 {
	fs := checkpoint.FilesOf(md)
	var n int64
	for _, f := range fs.PrivateFiles {
		n += f.GetSize()
	}
	for _, f := range fs.Shared {
		n += f.GetSize()
	}
	return n
}

// verifyTimeout bounds the check of md's files before a restore: a listing (quick),
// or reading every byte (deep).
func verifyTimeout(md *sluicev1.CheckpointMetadata, deep bool) time.Duration {
	if !deep {
		return restoreBase
	}
	return timeoutFor(restoreBase, stateBytes(md))
}

// restoreBytes is the size of the state one task's deployment restores: its keyed
// handles' files and its in-flight data.
func restoreBytes(rs []*sluicev1.OperatorRestore) int64 {
	var n int64
	size := func(f *sluicev1.StateFile) {
		n += f.GetSize()
	}
	for _, r := range rs {
		for _, h := range r.GetKeyed() {
			size(h.GetFile())
			for _, f := range h.GetPrivateFiles() {
				size(f)
			}
			for _, f := range h.GetSharedFiles() {
				size(f)
			}
		}
		seen := map[string]bool{}
		for _, c := range r.GetChannelState() {
			if p := c.GetFile().GetPath(); !seen[p] {
				seen[p] = true
				size(c.GetFile())
			}
		}
	}
	return n
}
