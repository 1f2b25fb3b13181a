//go:build cgo

// The RocksDB C API (7.8) has no way to give a database a WriteBufferManager, a cache
// with a high-priority pool, or a merge operator that does not call back into Go, and
// writing an SST file through it from Go costs a cgo call per key. The functions here
// do it in C++ on the objects behind the C API's handles.

#include "shim.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/iterator.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/merge_operator.h"
#include "rocksdb/options.h"
#include "rocksdb/sst_file_writer.h"
#include "rocksdb/table.h"
#include "rocksdb/write_buffer_manager.h"

using ROCKSDB_NAMESPACE::BlockBasedTableOptions;
using ROCKSDB_NAMESPACE::Cache;
using ROCKSDB_NAMESPACE::ColumnFamilyHandle;
using ROCKSDB_NAMESPACE::DB;
using ROCKSDB_NAMESPACE::IngestExternalFileOptions;
using ROCKSDB_NAMESPACE::EnvOptions;
using ROCKSDB_NAMESPACE::Logger;
using ROCKSDB_NAMESPACE::LRUCacheOptions;
using ROCKSDB_NAMESPACE::MergeOperator;
using ROCKSDB_NAMESPACE::Options;
using ROCKSDB_NAMESPACE::Slice;
using ROCKSDB_NAMESPACE::SstFileWriter;
using ROCKSDB_NAMESPACE::Status;
using ROCKSDB_NAMESPACE::WriteBufferManager;

// These are the C API's own definitions of its handle types (db/c.cc, unchanged since
// RocksDB 5): each handle wraps the C++ object as its only member `rep`. The package
// links exactly the RocksDB it was written for (Debian's librocksdb-dev 7.8.3).
struct rocksdb_options_t {
  Options rep;
};
struct rocksdb_block_based_table_options_t {
  BlockBasedTableOptions rep;
};
struct rocksdb_t {
  DB* rep;
};
struct rocksdb_column_family_handle_t {
  ColumnFamilyHandle* rep;
};

struct sluice_memory {
  std::shared_ptr<Cache> cache;
  std::shared_ptr<WriteBufferManager> wbm;
};

namespace {

// ListAppend concatenates: a list value is its elements' encodings one after the other
// (state.AppendListElem), so appending an element is a merge of its encoding.
class ListAppend : public MergeOperator {
 public:
  bool FullMergeV2(const MergeOperationInput& in, MergeOperationOutput* out) const override {
    size_t n = in.existing_value != nullptr ? in.existing_value->size() : 0;
    for (const Slice& op : in.operand_list) n += op.size();
    out->new_value.clear();
    out->new_value.reserve(n);
    if (in.existing_value != nullptr) {
      out->new_value.append(in.existing_value->data(), in.existing_value->size());
    }
    for (const Slice& op : in.operand_list) out->new_value.append(op.data(), op.size());
    return true;
  }

  bool PartialMergeMulti(const Slice& /*key*/, const std::deque<Slice>& operands,
                         std::string* new_value, Logger* /*logger*/) const override {
    size_t n = 0;
    for (const Slice& op : operands) n += op.size();
    new_value->clear();
    new_value->reserve(n);
    for (const Slice& op : operands) new_value->append(op.data(), op.size());
    return true;
  }

  const char* Name() const override { return "sluice.ListAppend"; }
};

// NoSyncFile and NoSyncDir skip every sync: the database is a disposable working copy
// (no write-ahead log; a checkpoint is the only durable state), so making its files
// durable against a machine crash buys nothing, and each sync of an ingestion, flush or
// native checkpoint costs milliseconds.
class NoSyncFile : public ROCKSDB_NAMESPACE::FSWritableFileOwnerWrapper {
 public:
  using FSWritableFileOwnerWrapper::FSWritableFileOwnerWrapper;
  ROCKSDB_NAMESPACE::IOStatus Sync(const ROCKSDB_NAMESPACE::IOOptions&,
                                   ROCKSDB_NAMESPACE::IODebugContext*) override {
    return ROCKSDB_NAMESPACE::IOStatus::OK();
  }
  ROCKSDB_NAMESPACE::IOStatus Fsync(const ROCKSDB_NAMESPACE::IOOptions&,
                                    ROCKSDB_NAMESPACE::IODebugContext*) override {
    return ROCKSDB_NAMESPACE::IOStatus::OK();
  }
  ROCKSDB_NAMESPACE::IOStatus RangeSync(uint64_t, uint64_t, const ROCKSDB_NAMESPACE::IOOptions&,
                                        ROCKSDB_NAMESPACE::IODebugContext*) override {
    return ROCKSDB_NAMESPACE::IOStatus::OK();
  }
};

class NoSyncDir : public ROCKSDB_NAMESPACE::FSDirectoryWrapper {
 public:
  using FSDirectoryWrapper::FSDirectoryWrapper;
  ROCKSDB_NAMESPACE::IOStatus Fsync(const ROCKSDB_NAMESPACE::IOOptions&,
                                    ROCKSDB_NAMESPACE::IODebugContext*) override {
    return ROCKSDB_NAMESPACE::IOStatus::OK();
  }
  ROCKSDB_NAMESPACE::IOStatus FsyncWithDirOptions(const ROCKSDB_NAMESPACE::IOOptions&,
                                                  ROCKSDB_NAMESPACE::IODebugContext*,
                                                  const ROCKSDB_NAMESPACE::DirFsyncOptions&) override {
    return ROCKSDB_NAMESPACE::IOStatus::OK();
  }
};

class NoSyncFS : public ROCKSDB_NAMESPACE::FileSystemWrapper {
  // wrap replaces the file *r the target opened (when s is OK) by one that never syncs.
  static ROCKSDB_NAMESPACE::IOStatus wrap(ROCKSDB_NAMESPACE::IOStatus s,
                                          std::unique_ptr<ROCKSDB_NAMESPACE::FSWritableFile>* r) {
    if (s.ok()) r->reset(new NoSyncFile(std::move(*r)));
    return s;
  }

 public:
  using FileSystemWrapper::FileSystemWrapper;
  const char* Name() const override { return "SluiceNoSync"; }
  ROCKSDB_NAMESPACE::IOStatus NewWritableFile(const std::string& f,
                                              const ROCKSDB_NAMESPACE::FileOptions& o,
                                              std::unique_ptr<ROCKSDB_NAMESPACE::FSWritableFile>* r,
                                              ROCKSDB_NAMESPACE::IODebugContext* dbg) override {
    return wrap(target()->NewWritableFile(f, o, r, dbg), r);
  }
  ROCKSDB_NAMESPACE::IOStatus ReopenWritableFile(const std::string& f,
                                                 const ROCKSDB_NAMESPACE::FileOptions& o,
                                                 std::unique_ptr<ROCKSDB_NAMESPACE::FSWritableFile>* r,
                                                 ROCKSDB_NAMESPACE::IODebugContext* dbg) override {
    return wrap(target()->ReopenWritableFile(f, o, r, dbg), r);
  }
  ROCKSDB_NAMESPACE::IOStatus ReuseWritableFile(const std::string& f, const std::string& old,
                                                const ROCKSDB_NAMESPACE::FileOptions& o,
                                                std::unique_ptr<ROCKSDB_NAMESPACE::FSWritableFile>* r,
                                                ROCKSDB_NAMESPACE::IODebugContext* dbg) override {
    return wrap(target()->ReuseWritableFile(f, old, o, r, dbg), r);
  }
  ROCKSDB_NAMESPACE::IOStatus NewDirectory(const std::string& name,
                                           const ROCKSDB_NAMESPACE::IOOptions& o,
                                           std::unique_ptr<ROCKSDB_NAMESPACE::FSDirectory>* r,
                                           ROCKSDB_NAMESPACE::IODebugContext* dbg) override {
    std::unique_ptr<ROCKSDB_NAMESPACE::FSDirectory> d;
    ROCKSDB_NAMESPACE::IOStatus s = target()->NewDirectory(name, o, &d, dbg);
    if (s.ok()) r->reset(new NoSyncDir(std::move(d)));
    return s;
  }
};

}  // namespace

extern "C" {

void sluice_options_set_no_sync(rocksdb_options_t* o) {
  // One Env for the process, never destroyed: databases may outlive any owner.
  static ROCKSDB_NAMESPACE::Env* env =
      ROCKSDB_NAMESPACE::NewCompositeEnv(
          std::make_shared<NoSyncFS>(ROCKSDB_NAMESPACE::FileSystem::Default()))
          .release();
  o->rep.env = env;
}

sluice_memory* sluice_memory_create(size_t cache_capacity, double high_pri_pool_ratio,
                                    size_t write_buffer_limit) {
  LRUCacheOptions co;
  co.capacity = cache_capacity;
  co.num_shard_bits = -1;
  co.strict_capacity_limit = false;
  co.high_pri_pool_ratio = high_pri_pool_ratio;
  auto* m = new sluice_memory;
  m->cache = ROCKSDB_NAMESPACE::NewLRUCache(co);
  if (write_buffer_limit > 0) {
    m->wbm = std::make_shared<WriteBufferManager>(write_buffer_limit, m->cache, false);
  }
  return m;
}

void sluice_memory_destroy(sluice_memory* m) { delete m; }

size_t sluice_memory_cache_capacity(sluice_memory* m) { return m->cache->GetCapacity(); }
size_t sluice_memory_cache_usage(sluice_memory* m) { return m->cache->GetUsage(); }
size_t sluice_memory_cache_pinned_usage(sluice_memory* m) { return m->cache->GetPinnedUsage(); }

size_t sluice_memory_write_buffer_limit(sluice_memory* m) {
  return m->wbm ? m->wbm->buffer_size() : 0;
}

size_t sluice_memory_write_buffer_usage(sluice_memory* m) {
  return m->wbm ? m->wbm->memory_usage() : 0;
}

void sluice_table_set_cache(rocksdb_block_based_table_options_t* t, sluice_memory* m) {
  t->rep.block_cache = m->cache;
  t->rep.no_block_cache = false;
}

void sluice_options_set_write_buffer_manager(rocksdb_options_t* o, sluice_memory* m) {
  o->rep.write_buffer_manager = m->wbm;
}

void sluice_options_set_list_merge(rocksdb_options_t* o) {
  o->rep.merge_operator = std::make_shared<ListAppend>();
}

int64_t sluice_export_range(rocksdb_t* db, rocksdb_column_family_handle_t* cf,
                            const char* lower, size_t lowerlen, const char* upper,
                            size_t upperlen, const rocksdb_options_t* o, const char* path,
                            char** err) {
  // The source is read through the C API (its handles need nothing of their layout);
  // a sequential scan: no block cache pollution, read-ahead, no prefix seek.
  rocksdb_readoptions_t* ro = rocksdb_readoptions_create();
  rocksdb_readoptions_set_iterate_lower_bound(ro, lower, lowerlen);
  rocksdb_readoptions_set_iterate_upper_bound(ro, upper, upperlen);
  rocksdb_readoptions_set_fill_cache(ro, 0);
  rocksdb_readoptions_set_total_order_seek(ro, 1);
  rocksdb_readoptions_set_readahead_size(ro, 2 << 20);
  rocksdb_iterator_t* it = rocksdb_create_iterator_cf(db, ro, cf);
  // The file is read right after (ingested), so its pages stay cached.
  std::unique_ptr<SstFileWriter> w;
  Status s;
  int64_t n = 0;
  for (rocksdb_iter_seek(it, lower, lowerlen); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
    if (!w) {
      w.reset(new SstFileWriter(EnvOptions(), o->rep, nullptr, false));
      s = w->Open(path);
      if (!s.ok()) break;
    }
    size_t kl = 0, vl = 0;
    const char* k = rocksdb_iter_key(it, &kl);
    const char* v = rocksdb_iter_value(it, &vl);
    s = w->Put(Slice(k, kl), Slice(v, vl));
    if (!s.ok()) break;
    n++;
  }
  if (s.ok()) {
    rocksdb_iter_get_error(it, err);
    if (*err == nullptr && w) s = w->Finish();
  }
  rocksdb_iter_destroy(it);
  rocksdb_readoptions_destroy(ro);
  if (!s.ok() && *err == nullptr) *err = strdup(s.ToString().c_str());
  if (*err != nullptr) {
    w.reset();  // abandons an unfinished file
    std::remove(path);
    return -1;
  }
  return n;
}

int64_t sluice_export_chunk(rocksdb_t* db, rocksdb_column_family_handle_t* cf, const char* lower,
                            size_t lowerlen, uint64_t limit, const rocksdb_options_t* o,
                            const char* path, char** next, size_t* nextlen, char** err) {
  *next = nullptr;
  *nextlen = 0;
  ROCKSDB_NAMESPACE::ReadOptions ro;
  ro.fill_cache = false;
  ro.total_order_seek = true;
  ro.readahead_size = 2 << 20;
  std::unique_ptr<ROCKSDB_NAMESPACE::Iterator> it(db->rep->NewIterator(ro, cf->rep));
  std::unique_ptr<SstFileWriter> w;
  Status s;
  int64_t n = 0;
  uint64_t bytes = 0;
  for (it->Seek(Slice(lower, lowerlen)); it->Valid(); it->Next()) {
    if (bytes >= limit) {
      Slice k = it->key();
      *next = static_cast<char*>(malloc(k.size() > 0 ? k.size() : 1));
      memcpy(*next, k.data(), k.size());
      *nextlen = k.size();
      break;
    }
    if (!w) {
      w.reset(new SstFileWriter(EnvOptions(), o->rep, nullptr, false));
      s = w->Open(path);
      if (!s.ok()) break;
    }
    s = w->Put(it->key(), it->value());
    if (!s.ok()) break;
    bytes += it->key().size() + it->value().size();
    n++;
  }
  if (s.ok()) s = it->status();
  if (s.ok() && w) s = w->Finish();
  if (!s.ok()) {
    free(*next);
    *next = nullptr;
    *err = strdup(s.ToString().c_str());
    w.reset();
    std::remove(path);
    return -1;
  }
  return n;
}

static void ingest(rocksdb_t* db, rocksdb_column_family_handle_t* cf,
                   const std::vector<std::string>& paths, char** err) {
  IngestExternalFileOptions io;
  io.move_files = true;
  io.write_global_seqno = false;
  io.allow_global_seqno = true;
  io.allow_blocking_flush = true;
  Status s = db->rep->IngestExternalFile(cf->rep, paths, io);
  if (!s.ok()) *err = strdup(s.ToString().c_str());
}

void sluice_ingest_files(rocksdb_t* db, rocksdb_column_family_handle_t* cf, const char* const* paths,
                         size_t n, char** err) {
  std::vector<std::string> v(paths, paths + n);
  ingest(db, cf, v, err);
}

}  // extern "C"
