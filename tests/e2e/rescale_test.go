package e2e

import (
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestRescaleAcrossBackendsExactlyOnce: one keyed count, exactly-once file sink, run as
// four jobs in a row, each stopped with a savepoint that the next starts from at another
// parallelism, 2 -> 4 -> 1 -> 3, moving between a cluster whose jobs keep state on the
// heap and one whose jobs keep it in RocksDB with incremental checkpoints, through
// canonical savepoints (and a native one between two RocksDB runs). The committed output
// of the four jobs together holds every (key, seq) once with count == seq. With max
// parallelism 128 (1-byte key-group prefix) and 1000 (2-byte prefix).
func TestRescaleAcrossBackendsExactlyOnce(t *testing.T) {
	spDir := t.TempDir()
	clusterFor := func(backend string) *cluster {
		args := checkpointArgs(t.TempDir(), "200ms", "--execution.checkpointing.savepoint-dir=file://"+spDir,
			"--state.backend.type="+backend)
		if backend == "rocksdb" {
			args = append(args, "--state.backend.incremental=true")
		}
		return startCluster(t, clusterOptions{taskManagers: 2, slots: 2, jobManagerArgs: args})
	}
	clusters := map[string]*cluster{"heap": clusterFor("heap"), "rocksdb": clusterFor("rocksdb")}

	type run struct {
		backend string
		p       int
		format  string // of the savepoint that stops it; "" for the last run
	}
	tests := []struct {
		maxP int
		runs []run
	}{
		{1000, []run{{"heap", 2, "canonical"}, {"rocksdb", 4, "canonical"}, {"heap", 1, "canonical"}, {"rocksdb", 3, ""}}},
		{128, []run{{"rocksdb", 2, "native"}, {"rocksdb", 4, "canonical"}, {"heap", 1, "canonical"}, {"rocksdb", 3, ""}}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("max-parallelism %d", tt.maxP), func(t *testing.T) {
			const keys, perKey = 20, 1500
			out := filepath.Join(t.TempDir(), "out")
			from := ""
			for i, r := range tt.runs {
				c := clusters[r.backend]
				args := []string{"-D", "pipeline.max-parallelism=" + strconv.Itoa(tt.maxP), "keyed-count", "-p", strconv.Itoa(r.p),
					"--arg", "keys=" + strconv.Itoa(keys), "--arg", "per-key=" + strconv.Itoa(perKey), "--arg", "rate=2000",
					"--arg", "out=" + out, "--arg", "guarantee=exactly-once"}
				if from != "" {
					args = append(args, "--from-savepoint", from)
				}
				id := c.submit(args...)
				if got := c.status(id).MaxParallelism; got != tt.maxP {
					t.Fatalf("run %d has max parallelism %d, want %d", i+1, got, tt.maxP)
				}
				if r.format == "" {
					st := c.waitState(id, "FINISHED", 90*time.Second)
					t.Logf("run %d (%s, p=%d) finished: %s", i+1, r.backend, r.p, st)
					break
				}
				// Stop once the job ran a little: every task running, records moved.
				var st jobStatus
				poll(t, 30*time.Second, fmt.Sprintf("run %d running", i+1), func() (bool, string) {
					st = c.status(id)
					if st.state() == "FINISHED" {
						t.Fatalf("run %d finished before it was stopped (give the job more records): %s", i+1, st)
					}
					running := st.state() == "RUNNING" && st.RecordsIn >= 1000
					for _, v := range st.Vertices {
						running = running && v.TaskStates["running"] == v.Parallelism
					}
					return running, st.String()
				})
				from = c.mustSavepoint("stop", id, "--format", r.format)
				final := c.status(id)
				if final.state() != "FINISHED" || final.SavepointPath != from {
					t.Fatalf("run %d after stop: %s (savepoint %q, want %q)", i+1, final, final.SavepointPath, from)
				}
				t.Logf("run %d (%s, p=%d): stopped with a %s savepoint after %d records in: %s", i+1, r.backend, r.p, r.format, final.RecordsIn, from)
			}
			rep := checkCommittedOutput(t, out, keys, perKey)
			// Keys move between sink subtasks at each rescale: splitKeys is expected.
			if !rep.wellFormed() || rep.lines != keys*perKey || rep.lost != 0 || rep.duplicated != 0 || rep.inconsistent != 0 || rep.outOfOrder != 0 {
				t.Fatalf("committed output of the four runs: %s", rep)
			}
			t.Logf("committed output of the four runs: %s", rep)
		})
	}
}
