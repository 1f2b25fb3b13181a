//go:build cgo

// The counters behind sluice_events (events.h): an EventListener, which RocksDB calls on
// its background threads without the DB mutex held.

#include "events.h"

#include <atomic>
#include <memory>

#include "rocksdb/listener.h"
#include "rocksdb/options.h"

using ROCKSDB_NAMESPACE::CompactionJobInfo;
using ROCKSDB_NAMESPACE::DB;
using ROCKSDB_NAMESPACE::EventListener;
using ROCKSDB_NAMESPACE::FlushJobInfo;
using ROCKSDB_NAMESPACE::Options;
using ROCKSDB_NAMESPACE::TableFileCreationInfo;
using ROCKSDB_NAMESPACE::TableFileCreationReason;
using ROCKSDB_NAMESPACE::WriteStallCondition;
using ROCKSDB_NAMESPACE::WriteStallInfo;

// The C API's own definition of its options handle (db/c.cc), as in shim.cc.
struct rocksdb_options_t {
  Options rep;
};

namespace {

class Counters : public EventListener {
 public:
  void OnFlushCompleted(DB* /*db*/, const FlushJobInfo& /*info*/) override { flushes++; }

  void OnCompactionCompleted(DB* /*db*/, const CompactionJobInfo& ci) override {
    if (ci.status.ok()) compactions++;
  }

  void OnTableFileCreated(const TableFileCreationInfo& info) override {
    if (!info.status.ok()) return;
    if (info.reason == TableFileCreationReason::kFlush) {
      flush_bytes += info.file_size;
    } else if (info.reason == TableFileCreationReason::kCompaction) {
      compaction_bytes += info.file_size;
    }
  }

  void OnStallConditionsChanged(const WriteStallInfo& info) override {
    if (info.condition.prev == WriteStallCondition::kNormal &&
        info.condition.cur != WriteStallCondition::kNormal) {
      stalls++;
    }
  }

  const char* Name() const override { return "sluice.Counters"; }

  std::atomic<uint64_t> flushes{0}, flush_bytes{0}, compactions{0}, compaction_bytes{0},
      stalls{0};
};

}  // namespace

struct sluice_events {
  std::shared_ptr<Counters> counters;
};

extern "C" {

sluice_events* sluice_events_create(void) {
  auto* e = new sluice_events;
  e->counters = std::make_shared<Counters>();
  return e;
}

void sluice_events_destroy(sluice_events* e) { delete e; }

void sluice_options_add_events(rocksdb_options_t* o, sluice_events* e) {
  o->rep.listeners.push_back(e->counters);
}

sluice_event_counts sluice_events_counts(sluice_events* e) {
  sluice_event_counts c;
  c.flushes = e->counters->flushes.load();
  c.flush_bytes = e->counters->flush_bytes.load();
  c.compactions = e->counters->compactions.load();
  c.compaction_bytes = e->counters->compaction_bytes.load();
  c.stalls = e->counters->stalls.load();
  return c;
}

}  // extern "C"
