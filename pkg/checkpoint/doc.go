// Package checkpoint is the jobmanager's checkpoint coordinator and the _metadata file
// format of checkpoints and savepoints.
//
// The Coordinator is a pure state machine in the style of etcd's raft: it has no
// goroutines, does no I/O and never reads the clock. The jobmanager's event loop (the
// driver) calls its methods with the current time and performs the Actions they return,
// in order; the results of that I/O come back as further method calls. Tests drive it
// with a fake clock and a scripted driver.
//
// # Driving it
//
//	c, err := checkpoint.New(checkpoint.Job{ID: id, Name: name, MaxParallelism: maxP,
//		LastCheckpointID: latestInEtcd}, cfg)
//
//	// job RUNNING (all tasks deployed and running):
//	err = c.Start(now, tasks)
//	// every loop tick:
//	perform(c.Tick(now))
//	// streamctl checkpoint JOB / streamctl savepoint JOB:
//	req, acts, err := c.TriggerManual(now, checkpoint.KindCheckpoint) // err: report at once
//	perform(acts) // remember req: its outcome arrives as actions naming it
//	// messages from the tasks:
//	perform(c.Ack(now, id, task, ack))
//	perform(c.Decline(now, id, task, reason))
//	// job leaves RUNNING (failover, cancel, finish):
//	perform(c.Stop(now, cause))
//
//	func perform(acts []checkpoint.Action) {
//		for _, a := range acts {
//			switch a := a.(type) {
//			case checkpoint.AllocateID:
//				// off the loop: increment jobs/<id>/checkpoint-counter in etcd (fenced),
//				// then on the loop: c.IDAllocated(now, a.Request, id) (perform its
//				// actions; log its error: the counter went backwards) or
//				// c.IDFailed(now, a.Request, err).
//			case checkpoint.Trigger:
//				// send trigger(a.ID, a.Timestamp, a.Kind, a.Mode, a.Unaligned,
//				// a.AlignedTimeout) to every source task of the current attempt.
//			case checkpoint.Finalize:
//				// off the loop: b, err := checkpoint.EncodeMetadata(a.Metadata); write b
//				// atomically to chk-<a.ID>/_metadata (or the savepoint directory); then
//				// one etcd transaction, conditioned on leadership, records the completed
//				// checkpoint and its shared files. Then on the loop: c.Finalized(now, a.ID),
//				// or c.FinalizeFailed(now, a.ID, err, unknown) where unknown is true when
//				// the transaction may have committed (timeout, lost connection).
//			case checkpoint.NotifyComplete:
//				// notify every task: checkpoint a.ID completed; answer a waiting request.
//			case checkpoint.NotifyAborted:
//				// notify every task: a.ID aborted; its private files may be deleted.
//			case checkpoint.OutcomeUnknown:
//				// delete nothing, notify no task; re-read the completed-checkpoint store
//				// before the next restore (a new leader does anyway).
//			case checkpoint.RequestAborted:
//				// answer a waiting manual request with a.Reason.
//			case checkpoint.FailJob:
//				// fail the job over (the restart strategy decides); the coordinator has
//				// already stopped itself, Start it again for the next attempt.
//			}
//		}
//	}
//
// Every AllocateID and every Finalize must be answered exactly once, also after Stop; at
// most one of each is unanswered at any time, so answers never cross. The coordinator
// ignores answers and task messages that do not match what it waits for (late, repeated,
// of an earlier attempt), so the driver need not filter them.
//
// # Files
//
// The coordinator only says when a checkpoint's files may be released: after
// NotifyComplete (for what only older checkpoints used) and after NotifyAborted (its
// private files). It never says so for a checkpoint whose commit outcome is unknown.
// Which files exactly is the Chain's business (chain.go): another pure state machine,
// driven by the same loop with the trigger, the acknowledged shared files, the commit's
// answer from the completed-checkpoint store in etcd (records removed, shared files
// left unreferenced), aborts, unknown outcomes and listings of the job directory; it
// answers with the Deletions that are safe now and says when a checkpoint must be
// full.
//
// # The _metadata file
//
// EncodeMetadata and DecodeMetadata write and read the framed, checksummed _metadata
// file; see metadata.go for the layout and the errors DecodeMetadata distinguishes.
package checkpoint
