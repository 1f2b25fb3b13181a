// An event listener counting a database's background work, which RocksDB's C API
// cannot install. See events.cc.
#ifndef SLUICE_ROCKSDB_EVENTS_H
#define SLUICE_ROCKSDB_EVENTS_H

#include <stdint.h>

#include "rocksdb/c.h"

#ifdef __cplusplus
extern "C" {
#endif

// sluice_events counts the background work of the databases opened with the options it
// was added to: completed flushes and compactions, the bytes of the SST files they
// wrote, and the times writes started to be delayed or stopped. Destroying it drops
// this handle's reference only: databases opened with it keep theirs until they close.
typedef struct sluice_events sluice_events;

typedef struct {
  uint64_t flushes;
  uint64_t flush_bytes;
  uint64_t compactions;
  uint64_t compaction_bytes;
  uint64_t stalls;
} sluice_event_counts;

sluice_events* sluice_events_create(void);
void sluice_events_destroy(sluice_events* e);
// sluice_options_add_events makes databases opened with o (DB options) report to e.
void sluice_options_add_events(rocksdb_options_t* o, sluice_events* e);
sluice_event_counts sluice_events_counts(sluice_events* e);

#ifdef __cplusplus
}
#endif

#endif
