// Command jobmanager runs the Sluice jobmanager daemon.
package main

import (
	"os"

	_ "github.com/sluice-stream/sluice/examples/jobs" // the Go jobs this build can run
	"github.com/sluice-stream/sluice/pkg/cli"
)

func main() { cli.Main(cli.JobManagerCmd(os.Stderr)) }
