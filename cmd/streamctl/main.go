// Command streamctl controls a Sluice cluster and runs a local one.
package main

import (
	"os"

	_ "github.com/sluice-stream/sluice/examples/jobs" // the Go jobs this build can submit
	"github.com/sluice-stream/sluice/pkg/cli"
)

func main() { cli.Main(cli.Streamctl(os.Stdout, os.Stderr)) }
