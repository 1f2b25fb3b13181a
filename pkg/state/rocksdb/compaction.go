package rocksdb

import (
	"fmt"
	"strings"
)

// CompactionStyle is the compaction style of every column family
// (state.backend.rocksdb.compaction.style). It decides how many bytes an incremental
// checkpoint uploads besides the changes: every SST file a compaction writes is new,
// so the next checkpoint uploads it. See the package documentation's Compaction
// section for the measured trade-offs.
type CompactionStyle int

const (
	// CompactionAuto is CompactionUniversal for incremental snapshots when Predefined
	// chooses no style (DEFAULT, FLASH_SSD_OPTIMIZED), else CompactionLevel (RocksDB's
	// default, and the SPINNING_DISK_OPTIMIZED options' choice).
	CompactionAuto CompactionStyle = iota
	// CompactionLevel is RocksDB's level compaction (LEVEL): few sorted runs and
	// little space beyond the live data, but with keys spread over the whole key range
	// (key groups are hashed) every level-0 to level-1 compaction rewrites all of
	// level 1, so a checkpoint uploads a multiple of what changed.
	CompactionLevel
	// CompactionUniversal is RocksDB's universal compaction (UNIVERSAL), tuned for
	// incremental checkpoints: a compaction starts at Config.UniversalSortedRuns sorted
	// runs and merges newer runs of similar size, and everything is rewritten only when
	// the newer runs hold as many bytes as the oldest. It writes, and uploads, several
	// times less than level compaction, for more sorted runs to read and up to about
	// 2.3 times the live data on disk; column families get bloom filters so that a
	// point read skips most runs.
	CompactionUniversal
)

var compactionNames = [...]string{CompactionAuto: "", CompactionLevel: "LEVEL", CompactionUniversal: "UNIVERSAL"}

func (s CompactionStyle) String() string {
	if s == CompactionAuto {
		return "AUTO"
	}
	if s > 0 && int(s) < len(compactionNames) {
		return compactionNames[s]
	}
	return fmt.Sprintf("CompactionStyle(%d)", int(s))
}

// ParseCompactionStyle parses a value of state.backend.rocksdb.compaction.style (LEVEL
// or UNIVERSAL), case-insensitively.
func ParseCompactionStyle(s string) (CompactionStyle, error) {
	for i, n := range compactionNames {
		if i > 0 && strings.EqualFold(s, n) {
			return CompactionStyle(i), nil
		}
	}
	return 0, fmt.Errorf("unknown RocksDB compaction style %q (use LEVEL or UNIVERSAL)", s)
}

// Compaction returns the compaction style the backends use: c.CompactionStyle, or for
// CompactionAuto the one it stands for.
func (c Config) Compaction() CompactionStyle {
	if c.CompactionStyle != CompactionAuto {
		return c.CompactionStyle
	}
	if c.Incremental && (c.Predefined == Default || c.Predefined == FlashSSDOptimized) {
		return CompactionUniversal
	}
	return CompactionLevel
}
