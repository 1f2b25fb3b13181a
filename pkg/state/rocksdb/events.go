//go:build cgo

package rocksdb

// #cgo CXXFLAGS: -std=c++17 -O2
// #include "events.h"
import "C"

import "github.com/linxGnu/grocksdb"

// cEvents wraps a sluice_events (events.cc): counters of a database's background work.
type cEvents = *C.sluice_events

func newCEvents() cEvents { return C.sluice_events_create() }

func destroyCEvents(e cEvents) { C.sluice_events_destroy(e) }

// addEvents makes databases opened with DB options o report to e.
func addEvents(o *grocksdb.Options, e cEvents) {
	C.sluice_options_add_events((*C.rocksdb_options_t)(cptr(o)), e)
}

func cEventCounts(e cEvents) (flushes, flushBytes, compactions, compactionBytes, stalls uint64) {
	c := C.sluice_events_counts(e)
	return uint64(c.flushes), uint64(c.flush_bytes), uint64(c.compactions), uint64(c.compaction_bytes), uint64(c.stalls)
}
