package meta

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Job is one job record.
type Job struct {
	ID     string
	Record []byte
}

// PutJob creates or replaces the record of job id (fenced by l).
func (s *Store) PutJob(ctx context.Context, l *Leadership, id string, rec []byte) error {
	if err := validJobID(id); err != nil {
		return err
	}
	if l == nil {
		return fmt.Errorf("meta: put job: nil leadership: %w", ErrNotLeader)
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(s.fence(l)).Then(clientv3.OpPut(s.jobKey(id), string(rec))).Commit()
	if err != nil {
		return writeErr("put job "+id, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("meta: put job %s: %w", id, ErrNotLeader)
	}
	return nil
}

// GetJob reads the record of job id; ErrNotFound if there is none.
func (s *Store) GetJob(ctx context.Context, id string) ([]byte, error) {
	if err := validJobID(id); err != nil {
		return nil, err
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.jobKey(id))
	if err != nil {
		return nil, readErr("get job "+id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("meta: job %s: %w", id, ErrNotFound)
	}
	return resp.Kvs[0].Value, nil
}

// ListJobs reads all job records, sorted by ID, as of one revision.
func (s *Store) ListJobs(ctx context.Context) ([]Job, error) {
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	// The job records share their prefix with the jobs' subkeys (checkpoints, registry):
	// list keys only, then read the records at the same revision.
	pfx := s.jobsPrefix()
	keys, err := s.cli.Get(rctx, pfx, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, readErr("list jobs", err)
	}
	rev := keys.Header.Revision
	var jobs []Job
	for _, kv := range keys.Kvs {
		id := strings.TrimPrefix(string(kv.Key), pfx)
		if strings.Contains(id, "/") {
			continue
		}
		resp, err := s.cli.Get(rctx, string(kv.Key), clientv3.WithRev(rev))
		if err != nil {
			return nil, readErr("list jobs", err)
		}
		if len(resp.Kvs) == 1 {
			jobs = append(jobs, Job{ID: id, Record: resp.Kvs[0].Value})
		}
	}
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].ID < jobs[j].ID })
	return jobs, nil
}

// DeleteJob deletes the record of job id and all its subkeys (checkpoint counter,
// checkpoint records, shared-file registry) in one fenced transaction. Deleting a job
// that does not exist is not an error. Only after it returned without error may the
// caller delete the job's checkpoint blobs (savepoints belong to the user and stay).
func (s *Store) DeleteJob(ctx context.Context, l *Leadership, id string) error {
	if err := validJobID(id); err != nil {
		return err
	}
	if l == nil {
		return fmt.Errorf("meta: delete job: nil leadership: %w", ErrNotLeader)
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(s.fence(l)).Then(
		clientv3.OpDelete(s.jobKey(id)),
		clientv3.OpDelete(s.jobSubPrefix(id), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return writeErr("delete job "+id, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("meta: delete job %s: %w", id, ErrNotLeader)
	}
	return nil
}

// isNotLeader reads the result of an "Else" branch that starts with a Get of the
// leader key and reports whether l no longer leads.
func isNotLeader(l *Leadership, resp *clientv3.TxnResponse) bool {
	r := resp.Responses[0].GetResponseRange()
	return r == nil || len(r.Kvs) == 0 || r.Kvs[0].CreateRevision != l.rev
}

// jobMissing reads the second Get of such an "Else" branch: the job key.
func jobMissing(resp *clientv3.TxnResponse) bool {
	r := resp.Responses[1].GetResponseRange()
	return r == nil || r.Count == 0
}

type mvccKV = mvccpb.KeyValue
