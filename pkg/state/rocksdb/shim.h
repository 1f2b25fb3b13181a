// The C++ parts of the RocksDB backend that RocksDB's C API does not offer: a block
// cache with a high-priority pool, a WriteBufferManager charging memtables to that
// cache (one pair per task manager bounds the memory of every RocksDB instance in it),
// a built-in merge operator for list state, and a range export into an SST file that
// runs without returning to Go per key. See shim.cc.
#ifndef SLUICE_ROCKSDB_SHIM_H
#define SLUICE_ROCKSDB_SHIM_H

#include <stddef.h>
#include <stdint.h>

#include "rocksdb/c.h"

#ifdef __cplusplus
extern "C" {
#endif

// sluice_memory holds a shared block cache and, when write_buffer_limit > 0, a
// WriteBufferManager charging its memtables to the cache. Destroying it drops this
// handle's references only: databases opened with it keep theirs until they close.
typedef struct sluice_memory sluice_memory;

sluice_memory* sluice_memory_create(size_t cache_capacity, double high_pri_pool_ratio,
                                    size_t write_buffer_limit);
void sluice_memory_destroy(sluice_memory* m);
size_t sluice_memory_cache_capacity(sluice_memory* m);
size_t sluice_memory_cache_usage(sluice_memory* m);
size_t sluice_memory_cache_pinned_usage(sluice_memory* m);
size_t sluice_memory_write_buffer_limit(sluice_memory* m);
size_t sluice_memory_write_buffer_usage(sluice_memory* m);

// sluice_table_set_cache makes t use m's block cache.
void sluice_table_set_cache(rocksdb_block_based_table_options_t* t, sluice_memory* m);
// sluice_options_set_write_buffer_manager makes o (DB options) use m's
// WriteBufferManager, if it has one.
void sluice_options_set_write_buffer_manager(rocksdb_options_t* o, sluice_memory* m);
// sluice_options_set_list_merge sets the list-append merge operator ("sluice.ListAppend":
// operands and values are concatenated) on o (column family options).
void sluice_options_set_list_merge(rocksdb_options_t* o);

// sluice_export_range writes every entry of column family cf of db with a key in
// [lower, upper) (the merged value of each key, as a Put, in key order) into a new SST
// file at path, written by an SstFileWriter with the options o (those of the column
// family the file is for). It reads without filling the block cache. It returns the
// number of entries written: 0 leaves no file at path. On error it returns -1, sets
// *err (free it with rocksdb_free) and removes what it wrote.
int64_t sluice_export_range(rocksdb_t* db, rocksdb_column_family_handle_t* cf,
                            const char* lower, size_t lowerlen, const char* upper,
                            size_t upperlen, const rocksdb_options_t* o, const char* path,
                            char** err);

// sluice_options_set_no_sync makes o (DB options) use an Env that never syncs files or
// directories: the database is a disposable working copy.
void sluice_options_set_no_sync(rocksdb_options_t* o);

// sluice_export_chunk writes the entries of column family cf of db from key lower on
// (the merged value of each key, as a Put, in key order) into a new SST file at path,
// through an SstFileWriter with the options o, until their keys and values reach limit
// bytes. *next is then the key to resume at (malloc'd, *nextlen bytes: free it with
// rocksdb_free), or NULL when the column family has no more keys. It returns the number
// of entries written: 0 leaves no file. On error it returns -1, sets *err and removes
// what it wrote.
int64_t sluice_export_chunk(rocksdb_t* db, rocksdb_column_family_handle_t* cf, const char* lower,
                            size_t lowerlen, uint64_t limit, const rocksdb_options_t* o,
                            const char* path, char** next, size_t* nextlen, char** err);

// sluice_ingest_files ingests n SST files into column family cf of db in one ingestion:
// moved (hard-linked, then unlinked from their paths) rather than copied, newer than
// everything in the column family and, when they overlap, each newer than the ones
// before it, without writing sequence numbers into the files: a file that is also a
// hard link of a local recovery copy is never modified. Sets *err on error.
void sluice_ingest_files(rocksdb_t* db, rocksdb_column_family_handle_t* cf, const char* const* paths,
                         size_t n, char** err);

#ifdef __cplusplus
}
#endif

#endif
