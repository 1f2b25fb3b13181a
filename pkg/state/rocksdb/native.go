//go:build cgo

package rocksdb

// The hot path (Get, Put, Delete, Merge of one key) and iteration call RocksDB's C API
// directly rather than through grocksdb: one cgo call per operation, no Go allocation
// (grocksdb allocates a Go object per returned slice and per error), values copied into
// a buffer the backend reuses. `#cgo noescape` lets the compiler keep the arguments on
// the stack; `#cgo nocallback` lets the runtime skip the callback bookkeeping.
//
// Iterators are also our own: grocksdb's iterate bounds hand RocksDB pointers into Go
// memory that it keeps; ours live in C memory owned by the iterator.

/*
#cgo CXXFLAGS: -std=c++17 -O2
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "rocksdb/c.h"
#include "shim.h"

#cgo noescape sluice_get
#cgo nocallback sluice_get
#cgo noescape sluice_put
#cgo nocallback sluice_put
#cgo noescape sluice_delete
#cgo nocallback sluice_delete
#cgo noescape sluice_merge
#cgo nocallback sluice_merge
#cgo noescape sluice_first_in_range
#cgo nocallback sluice_first_in_range

// sluice_get looks key up and copies its value into buf when it fits. It returns the
// value's length (which may exceed cap: call again with a larger buffer), -1 when the
// key is absent and -2 on error (*err set).
static int64_t sluice_get(rocksdb_t* db, const rocksdb_readoptions_t* ro,
		rocksdb_column_family_handle_t* cf, const char* key, size_t klen,
		char* buf, size_t cap, char** err) {
	rocksdb_pinnableslice_t* p = rocksdb_get_pinned_cf(db, ro, cf, key, klen, err);
	if (*err != NULL) {
		return -2;
	}
	if (p == NULL) {
		return -1;
	}
	size_t n = 0;
	const char* v = rocksdb_pinnableslice_value(p, &n);
	if (n > 0 && n <= cap) {
		memcpy(buf, v, n);
	}
	rocksdb_pinnableslice_destroy(p);
	return (int64_t)n;
}

static void sluice_put(rocksdb_t* db, const rocksdb_writeoptions_t* wo,
		rocksdb_column_family_handle_t* cf, const char* key, size_t klen,
		const char* val, size_t vlen, char** err) {
	rocksdb_put_cf(db, wo, cf, key, klen, val, vlen, err);
}

static void sluice_delete(rocksdb_t* db, const rocksdb_writeoptions_t* wo,
		rocksdb_column_family_handle_t* cf, const char* key, size_t klen, char** err) {
	rocksdb_delete_cf(db, wo, cf, key, klen, err);
}

static void sluice_merge(rocksdb_t* db, const rocksdb_writeoptions_t* wo,
		rocksdb_column_family_handle_t* cf, const char* key, size_t klen,
		const char* val, size_t vlen, char** err) {
	rocksdb_merge_cf(db, wo, cf, key, klen, val, vlen, err);
}

// sluice_first_in_range finds the first key >= seek and < upper, copies it into buf
// when it fits and returns its length, -1 when there is none, -2 on error (*err set).
static int64_t sluice_first_in_range(rocksdb_t* db, rocksdb_column_family_handle_t* cf,
		const char* seek, size_t seeklen, const char* upper, size_t upperlen,
		char* buf, size_t cap, char** err) {
	rocksdb_readoptions_t* ro = rocksdb_readoptions_create();
	rocksdb_readoptions_set_iterate_upper_bound(ro, upper, upperlen);
	rocksdb_iterator_t* it = rocksdb_create_iterator_cf(db, ro, cf);
	rocksdb_iter_seek(it, seek, seeklen);
	int64_t r = -1;
	if (rocksdb_iter_valid(it)) {
		size_t n = 0;
		const char* k = rocksdb_iter_key(it, &n);
		if (n <= cap) {
			memcpy(buf, k, n);
		}
		r = (int64_t)n;
	} else {
		rocksdb_iter_get_error(it, err);
		if (*err != NULL) {
			r = -2;
		}
	}
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	return r;
}

typedef struct {
	rocksdb_readoptions_t* ro;
	rocksdb_iterator_t* it;
	char* lower;
	char* upper;
} sluice_iter;

// sluice_iter_create: scan != 0 configures a sequential read (no block cache fill,
// read-ahead, total order).
static sluice_iter* sluice_iter_create(rocksdb_t* db, rocksdb_column_family_handle_t* cf,
		const char* lower, size_t lowerlen, const char* upper, size_t upperlen, int scan) {
	sluice_iter* s = (sluice_iter*)calloc(1, sizeof(sluice_iter));
	s->ro = rocksdb_readoptions_create();
	if (scan) {
		rocksdb_readoptions_set_fill_cache(s->ro, 0);
		rocksdb_readoptions_set_readahead_size(s->ro, 2 << 20);
		rocksdb_readoptions_set_total_order_seek(s->ro, 1);
	}
	if (lower != NULL) {
		s->lower = (char*)malloc(lowerlen > 0 ? lowerlen : 1);
		memcpy(s->lower, lower, lowerlen);
		rocksdb_readoptions_set_iterate_lower_bound(s->ro, s->lower, lowerlen);
	}
	if (upper != NULL) {
		s->upper = (char*)malloc(upperlen > 0 ? upperlen : 1);
		memcpy(s->upper, upper, upperlen);
		rocksdb_readoptions_set_iterate_upper_bound(s->ro, s->upper, upperlen);
	}
	s->it = rocksdb_create_iterator_cf(db, s->ro, cf);
	return s;
}

static void sluice_iter_destroy(sluice_iter* s) {
	rocksdb_iter_destroy(s->it);
	rocksdb_readoptions_destroy(s->ro);
	free(s->lower);
	free(s->upper);
	free(s);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"reflect"
	"unsafe"

	"github.com/linxGnu/grocksdb"
)

// cptr returns the C handle inside a grocksdb object: the unexported pointer field c
// that every grocksdb wrapper type holds. grocksdb exports no accessor; the version is
// pinned exactly (go.mod), and TestNativeHandles checks this still works.
func cptr(obj any) unsafe.Pointer {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		panic(fmt.Sprintf("rocksdb: cptr(%T): not a non-nil pointer", obj))
	}
	f := v.Elem().FieldByName("c")
	if !f.IsValid() || f.Kind() != reflect.Pointer {
		panic(fmt.Sprintf("rocksdb: %T has no C handle field c (grocksdb changed?)", obj))
	}
	return f.UnsafePointer()
}

// bytesPtr is the address of b's first byte for C (nil for an empty slice). C never
// keeps it: every function taking one is noescape or copies.
func bytesPtr(b []byte) *C.char {
	if len(b) == 0 {
		return nil
	}
	return (*C.char)(unsafe.Pointer(unsafe.SliceData(b)))
}

// bufPtr is the address of b's backing array, for C to fill up to cap(b).
func bufPtr(b []byte) *C.char {
	if cap(b) == 0 {
		return nil
	}
	return (*C.char)(unsafe.Pointer(unsafe.SliceData(b[:cap(b)])))
}

// cError turns a RocksDB error string into an error and frees it.
func cError(e *C.char) error {
	if e == nil {
		return nil
	}
	err := errors.New(C.GoString(e))
	C.rocksdb_free(unsafe.Pointer(e))
	return err
}

// native holds the C handles of an open database and the options the hot path uses.
// It is valid until the backend closes the database.
type native struct {
	db *C.rocksdb_t
	ro *C.rocksdb_readoptions_t
	wo *C.rocksdb_writeoptions_t
}

func newNative(db *grocksdb.DB, ro *grocksdb.ReadOptions, wo *grocksdb.WriteOptions) native {
	return native{
		db: (*C.rocksdb_t)(cptr(db)),
		ro: (*C.rocksdb_readoptions_t)(cptr(ro)),
		wo: (*C.rocksdb_writeoptions_t)(cptr(wo)),
	}
}

// cfHandle is the C handle of a column family.
type cfHandle = *C.rocksdb_column_family_handle_t

func cfPtr(h *grocksdb.ColumnFamilyHandle) cfHandle { return (cfHandle)(cptr(h)) }

// get reads key into buf (reallocated when too small) and returns the value; ok is false
// when the key is absent.
func (n native) get(cf cfHandle, key, buf []byte) (v []byte, ok bool, err error) {
	for {
		var e *C.char
		r := C.sluice_get(n.db, n.ro, cf, bytesPtr(key), C.size_t(len(key)), bufPtr(buf), C.size_t(cap(buf)), &e)
		switch {
		case r == -2:
			return buf[:0], false, cError(e)
		case r == -1:
			return buf[:0], false, nil
		case int(r) <= cap(buf):
			return buf[:r], true, nil
		}
		buf = make([]byte, 0, int(r)+int(r)/4)
	}
}

func (n native) put(cf cfHandle, key, val []byte) error {
	var e *C.char
	C.sluice_put(n.db, n.wo, cf, bytesPtr(key), C.size_t(len(key)), bytesPtr(val), C.size_t(len(val)), &e)
	return cError(e)
}

func (n native) delete(cf cfHandle, key []byte) error {
	var e *C.char
	C.sluice_delete(n.db, n.wo, cf, bytesPtr(key), C.size_t(len(key)), &e)
	return cError(e)
}

func (n native) merge(cf cfHandle, key, val []byte) error {
	var e *C.char
	C.sluice_merge(n.db, n.wo, cf, bytesPtr(key), C.size_t(len(key)), bytesPtr(val), C.size_t(len(val)), &e)
	return cError(e)
}

// firstInRange returns the first key k with seek <= k < upper, read into buf.
func (n native) firstInRange(cf cfHandle, seek, upper, buf []byte) (k []byte, ok bool, err error) {
	for {
		var e *C.char
		r := C.sluice_first_in_range(n.db, cf, bytesPtr(seek), C.size_t(len(seek)), bytesPtr(upper), C.size_t(len(upper)),
			bufPtr(buf), C.size_t(cap(buf)), &e)
		switch {
		case r == -2:
			return buf[:0], false, cError(e)
		case r == -1:
			return buf[:0], false, nil
		case int(r) <= cap(buf):
			return buf[:r], true, nil
		}
		buf = make([]byte, 0, int(r)+16)
	}
}

// intProperty reads an integer property of a column family.
func (n native) intProperty(cf cfHandle, name string) (uint64, bool) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var v C.uint64_t
	if C.rocksdb_property_int_cf(n.db, cf, cname, &v) != 0 {
		return 0, false
	}
	return uint64(v), true
}

// property reads a string property of a column family.
func (n native) property(cf cfHandle, name string) (string, bool) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	v := C.rocksdb_property_value_cf(n.db, cf, cname)
	if v == nil {
		return "", false
	}
	defer C.rocksdb_free(unsafe.Pointer(v))
	return C.GoString(v), true
}

// iter is a forward iterator over [lower, upper) of one column family (nil bounds: the
// whole column family) of the database as of its creation. Key and Value alias C memory
// valid until the next move or Close. Close it exactly once.
type iter struct {
	s *C.sluice_iter
}

func (n native) iter(cf cfHandle, lower, upper []byte) *iter {
	return &iter{s: C.sluice_iter_create(n.db, cf, boundPtr(lower), C.size_t(len(lower)), boundPtr(upper), C.size_t(len(upper)), 0)}
}

// scan is iter for a sequential read of much of the column family: it does not fill
// the block cache, reads ahead and ignores any prefix extractor.
func (n native) scan(cf cfHandle, lower, upper []byte) *iter {
	return &iter{s: C.sluice_iter_create(n.db, cf, boundPtr(lower), C.size_t(len(lower)), boundPtr(upper), C.size_t(len(upper)), 1)}
}

// boundPtr is the address of an iteration bound for C: nil for no bound (nil), an
// address for an empty one (C reads none of it).
func boundPtr(b []byte) *C.char {
	if b == nil {
		return nil
	}
	if p := bytesPtr(b); p != nil {
		return p
	}
	return (*C.char)(unsafe.Pointer(&zeroByte))
}

// zeroByte gives empty, non-nil bounds an address.
var zeroByte byte

func (it *iter) SeekToFirst()    { C.rocksdb_iter_seek_to_first(it.s.it) }
func (it *iter) Seek(key []byte) { C.rocksdb_iter_seek(it.s.it, bytesPtr(key), C.size_t(len(key))) }
func (it *iter) Valid() bool     { return C.rocksdb_iter_valid(it.s.it) != 0 }
func (it *iter) Next()           { C.rocksdb_iter_next(it.s.it) }

func (it *iter) Key() []byte {
	var n C.size_t
	return cSlice(C.rocksdb_iter_key(it.s.it, &n), n)
}

func (it *iter) Value() []byte {
	var n C.size_t
	return cSlice(C.rocksdb_iter_value(it.s.it, &n), n)
}

func cSlice(p *C.char, n C.size_t) []byte {
	if n == 0 {
		return []byte{}
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n))
}

// Err is the iteration error, if any (check it when Valid turns false).
func (it *iter) Err() error {
	var e *C.char
	C.rocksdb_iter_get_error(it.s.it, &e)
	return cError(e)
}

func (it *iter) Close() {
	if it.s != nil {
		C.sluice_iter_destroy(it.s)
		it.s = nil
	}
}

// memory wraps a sluice_memory (shim.cc).
type cMemory = *C.sluice_memory

func newCMemory(cacheCapacity int64, highPriRatio float64, writeBufferLimit int64) cMemory {
	return C.sluice_memory_create(C.size_t(cacheCapacity), C.double(highPriRatio), C.size_t(max(writeBufferLimit, 0)))
}

func destroyCMemory(m cMemory) { C.sluice_memory_destroy(m) }

func cMemoryUsage(m cMemory) MemoryUsage {
	return MemoryUsage{
		BlockCacheCapacity:    uint64(C.sluice_memory_cache_capacity(m)),
		BlockCacheUsage:       uint64(C.sluice_memory_cache_usage(m)),
		BlockCachePinnedUsage: uint64(C.sluice_memory_cache_pinned_usage(m)),
		WriteBufferLimit:      uint64(C.sluice_memory_write_buffer_limit(m)),
		WriteBufferUsage:      uint64(C.sluice_memory_write_buffer_usage(m)),
	}
}

// useMemory makes table options t use m's cache and, for DB options db (nil: skip),
// m's write-buffer manager.
func useMemory(m cMemory, t *grocksdb.BlockBasedTableOptions, db *grocksdb.Options) {
	C.sluice_table_set_cache((*C.rocksdb_block_based_table_options_t)(cptr(t)), m)
	if db != nil {
		C.sluice_options_set_write_buffer_manager((*C.rocksdb_options_t)(cptr(db)), m)
	}
}

// setNoSync makes o (DB options, or column family options an SstFileWriter uses) use an
// Env that never syncs a file or directory (sluice_options_set_no_sync): the database
// is a working copy, rebuilt from a checkpoint after any crash, and each sync of a
// flush, ingestion or native checkpoint costs milliseconds. A local recovery copy that
// a machine crash damages fails its CRC-32C check and is read from the checkpoint
// storage instead.
func setNoSync(o *grocksdb.Options) {
	C.sluice_options_set_no_sync((*C.rocksdb_options_t)(cptr(o)))
}

// setListMerge sets the list-append merge operator on column family options o.
func setListMerge(o *grocksdb.Options) {
	C.sluice_options_set_list_merge((*C.rocksdb_options_t)(cptr(o)))
}

// exportRange writes the entries of column family cf with keys in [lower, upper) into a
// new SST file at path with the column family options o (sluice_export_range: one cgo
// call, the loop runs in C++) and returns how many it wrote; 0 leaves no file.
func (n native) exportRange(cf cfHandle, lower, upper []byte, o *grocksdb.Options, path string) (int64, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var e *C.char
	r := C.sluice_export_range(n.db, cf, boundPtr(lower), C.size_t(len(lower)), boundPtr(upper), C.size_t(len(upper)),
		(*C.rocksdb_options_t)(cptr(o)), cpath, &e)
	if r < 0 {
		return 0, cError(e)
	}
	return int64(r), nil
}

// exportChunk writes the entries of column family cf from key lower on into a new SST
// file at path until their keys and values reach limit bytes (sluice_export_chunk). It
// returns the entries written (0: no file) and the key to resume at, nil when the
// column family has no more.
func (n native) exportChunk(cf cfHandle, lower []byte, limit int64, o *grocksdb.Options, path string) (int64, []byte, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var (
		e    *C.char
		next *C.char
		nlen C.size_t
	)
	r := C.sluice_export_chunk(n.db, cf, boundPtr(lower), C.size_t(len(lower)), C.uint64_t(limit), (*C.rocksdb_options_t)(cptr(o)), cpath, &next, &nlen, &e)
	if r < 0 {
		return 0, nil, cError(e)
	}
	var resume []byte
	if next != nil {
		resume = C.GoBytes(unsafe.Pointer(next), C.int(nlen))
		C.rocksdb_free(unsafe.Pointer(next))
	}
	return int64(r), resume, nil
}

// ingestFiles ingests SST files into column family cf in one ingestion, in order (when
// they overlap, a later file's entries win), moving them and leaving their bytes
// unmodified (sluice_ingest_files).
func (n native) ingestFiles(cf cfHandle, paths []string) error {
	cs := make([]*C.char, len(paths))
	for i, p := range paths {
		cs[i] = C.CString(p)
	}
	defer func() {
		for _, c := range cs {
			C.free(unsafe.Pointer(c))
		}
	}()
	var e *C.char
	C.sluice_ingest_files(n.db, cf, (**C.char)(unsafe.Pointer(&cs[0])), C.size_t(len(cs)), &e)
	return cError(e)
}
