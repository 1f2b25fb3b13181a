package state

// RestoreStats is what a backend's latest Restore read, by where it read it from.
type RestoreStats struct {
	// LocalBytes were read from this machine's local recovery copy.
	LocalBytes int64
	// RemoteBytes were read from the checkpoint storage (inline data excluded).
	RemoteBytes int64
	// LocalCheckpointID is the checkpoint of the local copy used, 0 if none was.
	LocalCheckpointID int64
	// Fallback says why a local copy was not used, or not used in full (e.g. "no local
	// copy of checkpoint 12", "000042.sst: checksum mismatch"); empty when local
	// recovery is off or the copy served every file.
	Fallback string
}

// RestoreReporter is implemented by backends that report what their latest Restore
// read. It is called on the task goroutine after Restore returns.
type RestoreReporter interface {
	LastRestore() RestoreStats
}
