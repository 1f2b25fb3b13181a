package spec

import (
	"strconv"
)

// Type is an operator type.
type Type string

// Operator types.
const (
	// TypeSequence is a source of deterministic keyed records (see SequenceSpec).
	TypeSequence Type = "sequence"
	// TypeFile is a source of text lines without an input (see FileRecord), a sink
	// writing part-<subtask> files into a directory with one.
	TypeFile Type = "file"
	// TypeMap replaces each record with the map its expression evaluates to.
	TypeMap Type = "map"
	// TypeFilter keeps the records its expression evaluates to true for.
	TypeFilter Type = "filter"
	// TypeAggregate emits each record with the running aggregate of its key.
	TypeAggregate Type = "aggregate"
	// TypePrint is a sink writing one line per record.
	TypePrint Type = "print"
	// TypeBlackhole is a sink discarding its records.
	TypeBlackhole Type = "blackhole"
)

// Types lists the operator types in documentation order.
var Types = []Type{TypeSequence, TypeFile, TypeMap, TypeFilter, TypeAggregate, TypePrint, TypeBlackhole}

// Partition says how an operator's subtasks read an input's records.
type Partition string

// Partitions.
const (
	// PartitionForward sends subtask i's records to subtask i (equal parallelism).
	PartitionForward Partition = "forward"
	// PartitionRebalance distributes records round-robin over the subtasks.
	PartitionRebalance Partition = "rebalance"
	// PartitionBroadcast sends every record to every subtask.
	PartitionBroadcast Partition = "broadcast"
	// PartitionKeyGroup routes a record to the subtask owning the key group of
	// KeyString(record[KeyBy]). It is implied by keyBy and cannot be written in a
	// spec.
	PartitionKeyGroup Partition = "keygroup"
)

// Format is the record format of a file sink.
type Format string

// File sink formats.
const (
	// FormatJSON writes one AppendJSON object per line; when Fields is set, only
	// those fields.
	FormatJSON Format = "json"
	// FormatCSV writes the Fields columns, in order, one record per line.
	FormatCSV Format = "csv"
)

// Job is a validated spec.
type Job struct {
	Name string
	// Parallelism is the default operator parallelism (>= 1).
	Parallelism int
	// MaxParallelism is the number of key groups, 0 when the spec leaves it unset;
	// otherwise 1..32768 and >= every operator's parallelism.
	MaxParallelism int
	// Operators in topological order: every operator comes after its inputs; among
	// operators whose inputs are all placed, declaration order.
	Operators []*Operator
}

// Lookup returns the operator with the given uid, or nil.
func (j *Job) Lookup(uid string) *Operator {
	for _, op := range j.Operators {
		if op.UID == uid {
			return op
		}
	}
	return nil
}

// Operator is one validated operator of a Job. Exactly the settings pointer matching
// Type is non-nil (none for print and blackhole).
type Operator struct {
	// UID is unique in the job and matches [a-z0-9][a-z0-9._-]*.
	UID string
	// Name is the display name, UID when the spec gives none.
	Name string
	Type Type
	// Parallelism is the operator's own or else the job's (>= 1).
	Parallelism int
	// Inputs are the uids of the upstream operators in spec order (a union when more
	// than one); empty exactly for sources. None of them is a sink.
	Inputs []string
	// Partition is the partitioning the spec declares, "" when none.
	Partition Partition
	// InputPartitions[i] is how the operator reads Inputs[i]: PartitionKeyGroup with
	// KeyBy, else the declared Partition, else forward when the parallelisms are
	// equal and rebalance when not.
	InputPartitions []Partition
	// KeyBy is the key field of an aggregate, "" otherwise.
	KeyBy string
	// Line is the spec line where the operator starts.
	Line int

	Sequence  *SequenceSpec  // TypeSequence
	File      *FileSpec      // TypeFile
	Expr      *Expr          // TypeMap, TypeFilter: compiled; Clone it per subtask
	Aggregate *AggregateSpec // TypeAggregate
}

// IsSource reports whether the operator has no input (sequence, file source).
func (o *Operator) IsSource() bool { return len(o.Inputs) == 0 }

// IsSink reports whether the operator has no output (file with an input, print,
// blackhole).
func (o *Operator) IsSink() bool { return isSink(o.Type, len(o.Inputs) > 0) }

func isSink(t Type, hasInput bool) bool {
	return t == TypePrint || t == TypeBlackhole || (t == TypeFile && hasInput)
}

// SequenceSpec configures a sequence source. Its records are
// {key: "key-<k>", seq: <int64>} for keys k in [0, Keys); subtask i of p owns the
// keys with k % p == i and emits them round-robin in increasing k, seq running
// 1, 2, 3, ... per key, so a subtask's output is a pure function of its position
// (see At).
type SequenceSpec struct {
	Keys int64 // >= 1
	// PerKey is the number of records per key, 0 for unbounded.
	PerKey int64
	// Rate is the records per second over the whole source (divide by the
	// parallelism for a subtask), 0 for unlimited.
	Rate float64
}

// SubtaskKeys returns how many keys subtask i of p owns.
func (s *SequenceSpec) SubtaskKeys(i, p int) int64 {
	if i < 0 || p < 1 || i >= p || int64(i) >= s.Keys {
		return 0
	}
	return (s.Keys-int64(i)-1)/int64(p) + 1
}

// Count returns how many records subtask i of p emits in total, -1 when unbounded
// (PerKey 0 and the subtask owns a key).
func (s *SequenceSpec) Count(i, p int) int64 {
	m := s.SubtaskKeys(i, p)
	if m == 0 {
		return 0
	}
	if s.PerKey == 0 {
		return -1
	}
	return m * s.PerKey
}

// At returns record n (0-based) of subtask i of p, and false when the subtask emits
// fewer than n+1 records: the key i + (n mod m)·p and seq n/m + 1 for the subtask's
// m keys.
func (s *SequenceSpec) At(i, p int, n int64) (Row, bool) {
	m := s.SubtaskKeys(i, p)
	if m == 0 || n < 0 {
		return nil, false
	}
	if c := s.Count(i, p); c >= 0 && n >= c {
		return nil, false
	}
	k := int64(i) + (n%m)*int64(p)
	return Row{"key": SequenceKey(k), "seq": n/m + 1}, true
}

// SequenceKey returns the key value "key-<k>".
func SequenceKey(k int64) string { return "key-" + strconv.FormatInt(k, 10) }

// FileSpec configures a file source (no input: reads Path, a file or every file in a
// directory) or a file sink (writes part-<subtask> files into the directory Path).
type FileSpec struct {
	Path string
	// Format is the sink's record format (FormatJSON by default); "" for a source.
	Format Format
	// Fields are the columns of a csv sink, in order, or the fields a json sink
	// writes (all when empty). Nil for a source.
	Fields []string
}

// FileRecord returns the record a file source emits for one line (without its line
// terminator): {line, lineNumber (1-based), file (the base name)}.
func FileRecord(line string, lineNumber int64, file string) Row {
	return Row{"line": line, "lineNumber": lineNumber, "file": file}
}

// AggregateSpec configures an aggregate operator; its key is the operator's KeyBy.
type AggregateSpec struct {
	Function Function
	// Field is the aggregated field; "" only for count (count all records).
	Field string
	// As is the output field, the function name by default.
	As string
}

// NewAggregator returns the Aggregator the spec describes.
func (a *AggregateSpec) NewAggregator() *Aggregator {
	return &Aggregator{fn: a.Function, field: a.Field, as: a.As}
}
