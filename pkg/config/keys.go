package config

import (
	"fmt"
	"math"
	"time"

	"github.com/sluice-stream/sluice/pkg/keygroup"
)

// The registered keys. Each variable holds its key's canonical name, for use with the
// getters: c.Duration(config.HeartbeatTimeout). To add a key, add one line here.
var (
	JobManagerRPCAddress = define(Key{Name: "jobmanager.rpc.address", Default: "127.0.0.1", Kind: String, check: nonEmpty, Description: "Host name or IP address of the JobManager: the address its RPC server binds to and other processes connect to."})
	JobManagerBindHost   = define(Key{Name: "jobmanager.bind-host", Default: "", Kind: String, Description: "Address the JobManager's RPC server binds to (e.g. 0.0.0.0 in a container); empty binds jobmanager.rpc.address."})
	JobManagerRPCPort    = define(Key{Name: "jobmanager.rpc.port", Default: "6123", Kind: Int, check: intBetween(0, 65535), Description: "Port of the JobManager's RPC server."})

	TaskManagerHost          = define(Key{Name: "taskmanager.host", Default: "127.0.0.1", Kind: String, check: nonEmpty, Description: "Host name or IP address the TaskManager binds to and advertises to the JobManager and other TaskManagers."})
	TaskManagerBindHost      = define(Key{Name: "taskmanager.bind-host", Default: "", Kind: String, Description: "Address the TaskManager's RPC server binds to (e.g. 0.0.0.0 in a container); empty binds taskmanager.host, which stays the address it advertises."})
	TaskManagerRPCPort       = define(Key{Name: "taskmanager.rpc.port", Default: "0", Kind: Int, check: intBetween(0, 65535), Description: "Port of the TaskManager's RPC server; 0 picks any free port."})
	NumberOfTaskSlots        = define(Key{Name: "taskmanager.numberOfTaskSlots", Default: "1", Kind: Int, check: atLeast(1), Description: "Number of task slots a TaskManager offers; each slot runs one parallel pipeline of a job."})
	TaskManagerLocalStateDir = define(Key{Name: "taskmanager.state.local.root-dirs", Default: "", Kind: String, Description: "Root directory of the TaskManager's local recovery copies (state.backend.local-recovery). Set it to a directory that survives a restart: the TaskManager locks it, keeps its resource ID in it (when taskmanager.resource-id is empty), and after a restart restores its subtasks from the copies it finds there. It should be on the file system of state.backend.rocksdb.localdir, so that copies are hard links. Empty uses a temporary directory removed at shutdown."})
	TaskManagerResourceID    = define(Key{Name: "taskmanager.resource-id", Default: "", Kind: String, Description: "Identity of the TaskManager in the cluster; empty generates a unique one at startup."})

	HeartbeatInterval = define(Key{Name: "heartbeat.interval", Default: "1 s", Kind: Duration, check: positive, Description: "Time between the heartbeats a TaskManager sends the JobManager; the JobManager's value is the one its task managers use."})
	HeartbeatTimeout  = define(Key{Name: "heartbeat.timeout", Default: "10 s", Kind: Duration, check: positive, Description: "Time without a heartbeat after which the JobManager considers a TaskManager lost, and a TaskManager its JobManager."})

	DefaultParallelism    = define(Key{Name: "parallelism.default", Default: "1", Kind: Int, check: atLeast(1), Description: "Parallelism of the operators that do not set their own, when streamctl submits a job without -p."})
	MaxParallelism        = define(Key{Name: "pipeline.max-parallelism", Default: "-1", Kind: Int, check: maxParallelism, Description: "Number of key groups of jobs that do not set their own (streamctl submit): the highest parallelism keyed state can be rescaled to; -1 derives it from the parallelism."})
	AutoWatermarkInterval = define(Key{Name: "pipeline.auto-watermark-interval", Default: "200 ms", Kind: Duration, Description: "Interval at which the watermark strategies of sources and timestamp assigners emit periodic watermarks, for jobs that set none (Env.SetAutoWatermarkInterval); 0 turns periodic watermarks off. The JobManager's value applies to the tasks it deploys."})
	BufferTimeout         = define(Key{Name: "execution.buffer-timeout.interval", Default: "100 ms", Kind: Duration, Aliases: []string{"execution.buffer-timeout"}, Description: "Longest time records may wait in a partly filled output buffer before it is sent; 0 sends every buffer after each source batch or input buffer. The JobManager's value applies to the tasks it deploys."})

	SegmentSize          = define(Key{Name: "taskmanager.memory.segment-size", Default: "32 kb", Kind: MemorySize, check: positive, Description: "Size of the network buffers in which tasks exchange records."})
	BuffersPerChannel    = define(Key{Name: "taskmanager.network.memory.buffers-per-channel", Default: "8", Kind: Int, check: atLeast(1), Description: "Buffers (credits) each input channel grants its upstream subpartition."})
	MaxBuffersPerChannel = define(Key{Name: "taskmanager.network.memory.max-buffers-per-channel", Default: "8", Kind: Int, check: atLeast(1), Description: "Most buffers an output subpartition may hold queued before its producer blocks."})

	SlotRequestTimeout = define(Key{Name: "slot.request.timeout", Default: "5 min", Kind: Duration, check: positive, Description: "How long the JobManager waits for the task slots a job needs before its scheduling fails."})

	CheckpointingInterval              = define(Key{Name: "execution.checkpointing.interval", Default: "0 ms", Kind: Duration, Description: "Time between periodic checkpoints; 0 takes none periodically (streamctl checkpoint still can). Needs execution.checkpointing.dir."})
	CheckpointingMode                  = define(Key{Name: "execution.checkpointing.mode", Default: "EXACTLY_ONCE", Kind: Enum, Enum: []string{"EXACTLY_ONCE", "AT_LEAST_ONCE"}, Description: "EXACTLY_ONCE aligns checkpoint barriers; AT_LEAST_ONCE does not block inputs, so records may be replayed after a restore."})
	CheckpointingTimeout               = define(Key{Name: "execution.checkpointing.timeout", Default: "10 min", Kind: Duration, check: positive, Description: "A checkpoint not complete after this long is aborted."})
	CheckpointingMinPause              = define(Key{Name: "execution.checkpointing.min-pause", Default: "0 ms", Kind: Duration, Description: "Least time between the end of one checkpoint and the start of the next."})
	CheckpointingMaxConcurrent         = define(Key{Name: "execution.checkpointing.max-concurrent-checkpoints", Default: "1", Kind: Int, check: atLeast(1), Description: "Most checkpoints in progress at once."})
	CheckpointingTolerableFailures     = define(Key{Name: "execution.checkpointing.tolerable-failed-checkpoints", Default: "0", Kind: Int, check: atLeast(0), Description: "Consecutive failed checkpoints tolerated; one more fails the job over."})
	CheckpointingNumRetained           = define(Key{Name: "execution.checkpointing.num-retained", Default: "1", Kind: Int, check: atLeast(1), Aliases: []string{"state.checkpoints.num-retained"}, Description: "Completed checkpoints kept; older ones are deleted once a newer one is recorded."})
	CheckpointingIncrementalFullEvery  = define(Key{Name: "execution.checkpointing.incremental.full-every", Default: "0", Kind: Int, check: atLeast(0), Description: "With an incremental state backend: make every N-th checkpoint full (it reuses no file of an earlier one), so a restore never depends on more than N checkpoints' files; 0 takes full checkpoints only when needed (the first after starting from another job's checkpoint, after a fallback from a broken checkpoint, after a task reused a deleted file)."})
	CheckpointingUnaligned             = define(Key{Name: "execution.checkpointing.unaligned.enabled", Default: "false", Kind: Bool, Aliases: []string{"execution.checkpointing.unaligned"}, Description: "Unaligned checkpoints: barriers overtake buffered records, which are stored with the checkpoint as in-flight data, so checkpoints stay fast under backpressure. Needs EXACTLY_ONCE. A checkpoint with in-flight data restores only at the same parallelism."})
	CheckpointingAlignedTimeout        = define(Key{Name: "execution.checkpointing.aligned-checkpoint-timeout", Default: "0 ms", Kind: Duration, Aliases: []string{"execution.checkpointing.alignment-timeout"}, Description: "With unaligned checkpoints enabled: 0 starts every checkpoint unaligned; a positive value starts it aligned and switches a task to unaligned once the barrier is this old (counted from the trigger)."})
	CheckpointingDir                   = define(Key{Name: "execution.checkpointing.dir", Default: "", Kind: String, Aliases: []string{"state.checkpoints.dir"}, Description: "Blob store URL of checkpoint files (file:///path, s3://bucket/prefix, gs://, azblob://, mem://); empty turns checkpointing off."})
	SavepointDir                       = define(Key{Name: "execution.checkpointing.savepoint-dir", Default: "", Kind: String, Aliases: []string{"state.savepoints.dir"}, Description: "Default blob store URL under which savepoints are written (file:///path, s3://bucket/prefix, ...), each in a directory savepoint-<job>-<random> of its own; streamctl savepoint, stop and cancel --with-savepoint take a directory that overrides it. Empty: those commands need one."})
	HighAvailabilityEtcdEndpoints      = define(Key{Name: "high-availability.etcd.endpoints", Default: "", Kind: String, Flag: "etcd-endpoints", Description: "Comma-separated endpoints of an external etcd cluster for leader election, job and checkpoint metadata; empty runs an embedded etcd in the jobmanager. A TaskManager given the endpoints finds the leading JobManager through etcd instead of at jobmanager.rpc.address."})
	HighAvailabilityEtcdEmbeddedDir    = define(Key{Name: "high-availability.etcd.embedded-dir", Default: "", Kind: String, Description: "Data directory of the embedded etcd; empty uses a temporary directory removed at shutdown, so jobs and checkpoint records do not survive a jobmanager restart."})
	HighAvailabilityClusterID          = define(Key{Name: "high-availability.cluster-id", Default: "default", Kind: String, check: nonEmpty, Description: "Name of the cluster: the etcd key prefix /sluice/<cluster-id>/ separates clusters sharing one etcd."})
	HighAvailabilityEtcdLeaseTTL       = define(Key{Name: "high-availability.etcd.lease-ttl", Default: "15 s", Kind: Duration, check: atLeastDuration(2 * time.Second), Description: "Time to live of the leading JobManager's lease in etcd: a leader that cannot renew it for this long (crashed, paused, cut off from etcd) loses its leadership and a standby takes over. An etcd outage shorter than this only delays checkpoints."})
	HighAvailabilityEtcdRequestTimeout = define(Key{Name: "high-availability.etcd.request-timeout", Default: "10 s", Kind: Duration, check: positive, Description: "Longest wait for one etcd request; a checkpoint record that times out is retried while the leadership lasts."})

	StateBackendType          = define(Key{Name: "state.backend.type", Default: "hashmap", Kind: Enum, Enum: []string{"hashmap", "rocksdb"}, EnumAliases: map[string]string{"heap": "hashmap"}, Description: "Where keyed state lives: hashmap (alias heap) keeps it in Go maps on the heap and snapshots it in full; rocksdb keeps it in an embedded RocksDB per operator and subtask on local disk (state larger than memory, incremental checkpoints). The JobManager's value applies to the tasks it deploys."})
	StateBackendIncremental   = define(Key{Name: "state.backend.incremental", Default: "false", Kind: Bool, Description: "With state.backend.type rocksdb: checkpoints upload only the SST files that no confirmed earlier checkpoint uploaded, and reference the others from the job's shared/ directory. The JobManager's value applies to the tasks it deploys."})
	StateBackendLocalRecovery = define(Key{Name: "state.backend.local-recovery", Default: "false", Kind: Bool, Description: "With state.backend.type rocksdb: each TaskManager keeps the native checkpoint of the latest confirmed checkpoint of its subtasks (hard links, no copy) under taskmanager.state.local.root-dirs, and a restore on the same TaskManager reads it instead of the checkpoint storage when its checkpoint and checksums match; the scheduler puts subtasks back on their previous TaskManager. A full or broken local disk falls back to the checkpoint storage. The JobManager's value applies to the tasks it deploys."})
	RocksDBLocalDir           = define(Key{Name: "state.backend.rocksdb.localdir", Default: "", Kind: String, Description: "Directory of the TaskManager's RocksDB instances (one subdirectory each, removed when the task ends); empty uses the system's temporary directory."})
	RocksDBPredefined         = define(Key{Name: "state.backend.rocksdb.predefined-options", Default: "DEFAULT", Kind: Enum, Enum: []string{"DEFAULT", "SPINNING_DISK_OPTIMIZED", "SPINNING_DISK_OPTIMIZED_HIGH_MEM", "FLASH_SSD_OPTIMIZED"}, Description: "A set of RocksDB options tuned for a kind of disk, as Flink's PredefinedOptions (see the RocksDB section above); the rocksdb keys set explicitly override it. The JobManager's value applies to the tasks it deploys."})
	RocksDBBlockCacheSize     = define(Key{Name: "state.backend.rocksdb.block.cache-size", Default: "8 mb", Kind: MemorySize, check: positive, Description: "Block cache of each RocksDB instance when state.backend.rocksdb.memory.managed is false (managed memory shares one cache per TaskManager instead). Applied only when set; else the predefined options' or RocksDB's default (8 mb). The JobManager's value applies to the tasks it deploys."})
	RocksDBWriteBufferSize    = define(Key{Name: "state.backend.rocksdb.writebuffer.size", Default: "64 mb", Kind: MemorySize, check: positive, Description: "Size of a RocksDB memtable (write_buffer_size), per column family (one per registered state). Applied only when set; else the predefined options' or RocksDB's default (64 mb). The JobManager's value applies to the tasks it deploys."})
	RocksDBWriteBufferCount   = define(Key{Name: "state.backend.rocksdb.writebuffer.count", Default: "2", Kind: Int, check: atLeast(2), Description: "Most memtables per column family (max_write_buffer_number). Applied only when set; else the predefined options' or RocksDB's default (2). The JobManager's value applies to the tasks it deploys."})
	RocksDBThreads            = define(Key{Name: "state.backend.rocksdb.thread.num", Default: "2", Kind: Int, check: atLeast(1), Description: "Background flush and compaction jobs per RocksDB instance (max_background_jobs). Applied only when set; else the predefined options' or RocksDB's default (2). The JobManager's value applies to the tasks it deploys."})
	RocksDBTransferThreads    = define(Key{Name: "state.backend.rocksdb.checkpoint.transfer.thread.num", Default: "4", Kind: Int, check: atLeast(1), Description: "Files each RocksDB instance uploads (snapshot) or downloads (restore) in parallel. The JobManager's value applies to the tasks it deploys."})
	RocksDBMemoryManaged      = define(Key{Name: "state.backend.rocksdb.memory.managed", Default: "true", Kind: Bool, Description: "Bound the memory of all RocksDB instances of a TaskManager, whatever the number of slots and states: they share one block cache and one write-buffer manager charging memtables to it, sized by state.backend.rocksdb.memory.fixed-per-tm. False gives each instance its own cache (block.cache-size) and memtables bounded only per column family."})
	RocksDBMemoryFixedPerTM   = define(Key{Name: "state.backend.rocksdb.memory.fixed-per-tm", Default: "256 mb", Kind: MemorySize, check: positive, Description: "With managed memory: the memory shared by every RocksDB instance of the TaskManager (block cache, index and filter blocks, memtables)."})
	RocksDBWriteBufferRatio   = define(Key{Name: "state.backend.rocksdb.memory.write-buffer-ratio", Default: "0.5", Kind: Float, check: floatBetween(0.01, 0.99), Description: "With managed memory: the share of fixed-per-tm that memtables may use before RocksDB flushes them (Flink's formula: write buffers 2/3 of ratio × memory, cache (3 - ratio)/3 × memory)."})
	RocksDBHighPrioRatio      = define(Key{Name: "state.backend.rocksdb.memory.high-prio-pool-ratio", Default: "0.1", Kind: Float, check: floatBetween(0, 1), Description: "With managed memory: the share of the block cache reserved for index and filter blocks, which are cached with high priority."})

	RestartStrategyType                 = define(Key{Name: "restart-strategy.type", Default: "fixed-delay", Kind: Enum, Enum: []string{"none", "fixed-delay", "exponential-delay"}, EnumAliases: map[string]string{"off": "none", "disable": "none", "fixeddelay": "fixed-delay", "exponentialdelay": "exponential-delay"}, Aliases: []string{"restart-strategy"}, Description: "How a failed job is restarted: not at all, after a fixed delay, or after an exponentially growing delay."})
	FixedDelayAttempts                  = define(Key{Name: "restart-strategy.fixed-delay.attempts", Default: "3", Kind: Int, check: atLeast(0), Description: "Restarts allowed before the job fails for good (fixed-delay)."})
	FixedDelayDelay                     = define(Key{Name: "restart-strategy.fixed-delay.delay", Default: "1 s", Kind: Duration, Description: "Delay between a failure and the restart (fixed-delay)."})
	ExponentialDelayInitialBackoff      = define(Key{Name: "restart-strategy.exponential-delay.initial-backoff", Default: "1 s", Kind: Duration, check: positive, Description: "Delay before the first restart, and the first after a reset (exponential-delay)."})
	ExponentialDelayMaxBackoff          = define(Key{Name: "restart-strategy.exponential-delay.max-backoff", Default: "1 min", Kind: Duration, check: positive, Description: "Longest delay between a failure and the restart (exponential-delay)."})
	ExponentialDelayBackoffMultiplier   = define(Key{Name: "restart-strategy.exponential-delay.backoff-multiplier", Default: "2.0", Kind: Float, check: floatBetween(1, inf), Description: "Factor by which the delay grows with each failure (exponential-delay)."})
	ExponentialDelayResetThreshold      = define(Key{Name: "restart-strategy.exponential-delay.reset-backoff-threshold", Default: "1 h", Kind: Duration, check: positive, Description: "Time a job must run without failure for the delay and the attempt count to reset (exponential-delay)."})
	ExponentialDelayJitterFactor        = define(Key{Name: "restart-strategy.exponential-delay.jitter-factor", Default: "0.1", Kind: Float, check: floatBetween(0, 1), Description: "Fraction of the delay randomly added or subtracted, so that jobs do not restart in lockstep (exponential-delay)."})
	ExponentialDelayAttemptsBeforeReset = define(Key{Name: "restart-strategy.exponential-delay.attempts-before-reset-backoff", Default: "2147483647", Kind: Int, check: atLeast(1), Description: "Restarts allowed between resets before the job fails for good (exponential-delay)."})
)

var inf = math.Inf(1)

func maxParallelism(v any) error {
	if n := v.(int); n != -1 && (n < 1 || n > keygroup.UpperBound) {
		return fmt.Errorf("must be -1 or between 1 and %d", keygroup.UpperBound)
	}
	return nil
}

func atLeastDuration(lo time.Duration) func(any) error {
	return func(v any) error {
		if v.(time.Duration) < lo {
			return fmt.Errorf("must be at least %v", lo)
		}
		return nil
	}
}
