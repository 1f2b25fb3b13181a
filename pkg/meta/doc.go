// Package meta is Sluice's metadata store on etcd: leader election of the jobmanager,
// job records, the checkpoint ID counter, the completed-checkpoint store and the
// shared-file registry of incremental checkpoints.
//
// # Keys
//
// All keys live under one prefix per cluster, given to Connect, e.g. "/sluice/<cluster-id>/"
// (a missing trailing "/" is added). Below, <prefix> stands for it.
//
//	<prefix>leader                              the leader key: value = the leader's candidate ID,
//	                                            or {"id":"<candidate>","address":"<host:port>"}
//	                                            when it published an address (WithAddress);
//	                                            attached to the leader's lease
//	<prefix>jobs/<id>                           job record: opaque bytes of the caller (PutJob)
//	<prefix>jobs/<id>/checkpoint-counter        last checkpoint ID handed out, decimal ASCII
//	<prefix>jobs/<id>/checkpoints/<n>           completed checkpoint or savepoint n: JSON of
//	                                            CompletedCheckpoint; <n> is zero-padded to 20
//	                                            digits so lexical order = numeric order
//	<prefix>jobs/<id>/shared/<file>             shared-file registry entry: JSON of SharedFile
//	                                            {"createdBy": n, "lastUsed": m}
//
// Values, as written (JSON fields not listed are ignored when read, so fields can be
// added; times are RFC 3339 with nanoseconds; sharedFiles is sorted, without duplicates):
//
//	checkpoints/<n>: {"id":7,"kind":"checkpoint"|"savepoint",
//	                  "metadataPath":"chk-7/_metadata",
//	                  "metadataSize":1234,"metadataSHA256":"<hex>" (both optional),
//	                  "stateSize":1048576,"incrementalSize":4096,
//	                  "triggerTime":"2026-01-02T03:04:05Z","completionTime":"2026-01-02T03:04:06.5Z",
//	                  "sharedFiles":["shared/ab12.sst","shared/cd34.sst"] (omitted if none)}
//	shared/<file>:   {"createdBy":3,"lastUsed":7}
//	checkpoint-counter: "7"
//
// A job ID is non-empty and holds no "/". A shared file's name is any non-empty string
// without NUL (conventionally its path relative to the job's checkpoint directory, e.g.
// "shared/3f2a...sst"); it is used in the key as given.
//
// # Leadership and fencing
//
// Campaign makes the caller the leader: it grants a lease (TTL WithLeaseTTL), keeps it
// alive, and creates the leader key attached to it, in a transaction that succeeds only
// if the key does not exist; otherwise it waits for the key's deletion and tries again.
// The Leadership remembers the leader key's CreateRevision. That revision is the fencing
// token: every write of this package is one etcd transaction whose first comparison is
//
//	CreateRevision(<prefix>leader) == Leadership.Revision()
//
// The leader key is created anew, at a fresh and higher revision, by every leader, and
// disappears when its lease expires or is revoked, so the comparison holds exactly while
// this leadership's key exists. A jobmanager that was paused (GC, SIGSTOP, a slow disk)
// or partitioned away while its lease expired and another process took over therefore
// writes nothing, even if it has not yet noticed (ARCHITECTURE rule 6: a lock alone does
// not protect writes issued by a former holder). CreateRevision rather than ModRevision:
// it names the leadership, not the last update of the key's value, so the leader could
// update its value (e.g. a new address) without invalidating its own token, and it can
// never repeat for a later leader. A write whose comparison fails returns ErrNotLeader and
// changed nothing.
//
// Leadership.Done is closed when the leadership is lost (lease expired or revoked, the
// key deleted, Resign, Store.Close). It is advisory, for stepping down promptly; safety
// never depends on it, only on the fenced transactions.
//
// Followers find the leader with Leader, or follow it with ObserveLeader, which reports
// every change of the leader key (a task manager switches to the jobmanager whose
// address the new leader published). A follower needs no lease and writes nothing.
//
// # Unknown outcomes
//
// A write that fails with a timeout, a lost connection or an etcd leader change may or
// may not have been applied. Such errors wrap ErrOutcomeUnknown. The caller must then
// treat the write as possibly committed and possibly not: in particular it must not
// delete any blob the write points to (a checkpoint's _metadata, its files), nor delete
// files that the write would have made unreferenced (ARCHITECTURE rule 5). It may retry
// (the store is reconnected automatically), or re-read the truth (Checkpoints,
// SharedFiles), or step down; the next leader re-reads the truth. Errors that are not
// ErrOutcomeUnknown and not ErrNotLeader (bad arguments, ErrTxnTooLarge, conflicts
// detected before writing) mean nothing was written. Reads that etcd did not answer
// (also the read that starts a write) wrap ErrUnavailable; Unavailable(err) tells the
// errors that a retry after an outage may cure (ErrUnavailable, ErrOutcomeUnknown) from
// the final ones.
//
// # Completed checkpoints and the shared-file registry
//
// AddCheckpoint records a completed checkpoint in one fenced transaction: the record,
// the registry entries of every shared file it references (a file new to the registry
// gets createdBy = n; every referenced file gets lastUsed = n), the deletion of the
// records it subsumes (the oldest checkpoints beyond the retained number; savepoint
// records are never subsumed) and the deletion of the registry entries of files no
// retained record references any more. The registry therefore holds exactly the files
// referenced by the retained records. Only after AddCheckpoint returned without error
// may the caller delete the blobs of the removed checkpoints and the Unreferenced shared
// files (ARCHITECTURE rule 2). Registry is the same store without etcd: its Add and
// Remove plan their changes with the code of the transactions, for simulations of the
// incremental chain at memory speed (pkg/checkpoint's model test).
//
// The transaction must be atomic, so it is never split: it holds one operation per
// shared file referenced plus one per record or file removed, and etcd bounds the
// operations of a transaction with --max-txn-ops (default 128) and its size with
// --max-request-bytes (default 1.5 MiB). The embedded server (package embedded) raises
// both (10000 ops, 8 MiB). An external etcd must be started with limits that fit the
// largest checkpoint, e.g. --max-txn-ops=10000 --max-request-bytes=8388608; a transaction
// beyond the server's limits fails with ErrTxnTooLarge, naming the limit, and writes
// nothing (that checkpoint fails; earlier ones are unaffected).
package meta
