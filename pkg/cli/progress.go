package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"golang.org/x/term"
)

// followJob shows a live progress line until the job ends or ctx is canceled. On a
// terminal the line is redrawn in place; otherwise a line is printed every few seconds.
// It returns an error when the job failed (or was canceled, if failOnCancel).
func followJob(ctx context.Context, js sluicev1.JobServiceClient, id string, w io.Writer, failOnCancel bool) error {
	tty := isTerminal(w)
	every := 500 * time.Millisecond
	printEvery := 5 * time.Second
	if !tty {
		every = time.Second
	}
	var lastIn, lastOut int64
	lastAt := time.Now()
	lastPrint := time.Time{}
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := js.GetJob(rctx, &sluicev1.GetJobRequest{JobId: id})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		now := time.Now()
		dt := now.Sub(lastAt).Seconds()
		inRate, outRate := 0.0, 0.0
		if dt > 0 && st.GetRecordsIn() >= lastIn {
			inRate = float64(st.GetRecordsIn()-lastIn) / dt
			outRate = float64(st.GetRecordsOut()-lastOut) / dt
		}
		lastIn, lastOut, lastAt = st.GetRecordsIn(), st.GetRecordsOut(), now
		line := fmt.Sprintf("%-10s attempt %d  in %s (%s/s)  out %s (%s/s)  %s",
			stateName(st.GetState()), st.GetAttempt(), human(st.GetRecordsIn()), human(int64(inRate)),
			human(st.GetRecordsOut()), human(int64(outRate)), duration(st))
		if id := st.GetLatestCheckpointId(); id > 0 {
			line += fmt.Sprintf("  checkpoint %d", id)
			if r := st.GetRestores(); r > 0 {
				line += fmt.Sprintf(" (restored %d)", r)
			}
		}
		ended := false
		switch st.GetState() {
		case sluicev1.JobState_JOB_STATE_FINISHED, sluicev1.JobState_JOB_STATE_FAILED, sluicev1.JobState_JOB_STATE_CANCELED:
			ended = true
		}
		if tty {
			fmt.Fprintf(w, "\r\033[K%s", line)
			if ended {
				fmt.Fprintln(w)
			}
		} else if ended || now.Sub(lastPrint) >= printEvery {
			fmt.Fprintln(w, line)
			lastPrint = now
		}
		if ended {
			switch st.GetState() {
			case sluicev1.JobState_JOB_STATE_FAILED:
				return fmt.Errorf("job %s failed: %s", id, st.GetFailure())
			case sluicev1.JobState_JOB_STATE_CANCELED:
				if failOnCancel {
					return fmt.Errorf("job %s was canceled", id)
				}
			}
			return nil
		}
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(w)
			}
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// human renders a count with a k/M/G suffix.
func human(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fG", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", float64(n)/1e6)
	case n >= 1e4:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
