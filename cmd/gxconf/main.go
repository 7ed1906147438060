// Command gxconf runs gxconf: the Matrix appservice, MatrixRTC focus and (later)
// the embedded SFU, as one process.
//
// Usage:
//
//	gxconf serve -c config.yaml -r registration.yaml
//	gxconf generate-registration -c config.yaml -r registration.yaml
//	gxconf audit verify [-c config.yaml] [-file audit.jsonl ...]
//	gxconf keys status|rotate -c config.yaml
//	gxconf catalog export -c config.yaml -o dir
//	gxconf cluster status|drain [-c config.yaml | -url http://127.0.0.1:9464]
//	gxconf drain [-c config.yaml | -url http://127.0.0.1:9464]
//	LIVEKIT_API_KEY=… LIVEKIT_API_SECRET=… gxconf loadtest -url ws://… [-rooms -publishers -subscribers …]
//	gxconf plan [-calibration FILE] [-json] [-sessions -participants …]
//	gxconf version
//
// This is the only package that exits or reads flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `gxconf — secure, federated video calls for Matrix

Usage:
  gxconf serve -c config.yaml -r registration.yaml
      Run the appservice, the MatrixRTC focus and the SFU until SIGINT/SIGTERM.
  gxconf generate-registration -c config.yaml -r registration.yaml [-force]
      Write the appservice registration for the homeserver, with fresh tokens.
  gxconf audit verify [-c config.yaml] [-file audit.jsonl ...]
      Check the hash chain of the audit log (access decisions, removals, admin actions)
      in the database and/or in shipped JSON-line files (every node's file of a
      cluster together); exits 1 if tampered, naming the row or file:line.
  gxconf keys status|rotate -c config.yaml
      status: count the encrypted rows by the at-rest key that sealed them; rotate:
      re-encrypt them with at_rest.primary (row by row; safe to interrupt and rerun).
  gxconf catalog export -c config.yaml -o dir
      Issue the service catalogue (Gaia-X offerings, tier credentials, SHACL shape,
      DID document) and write it as files for the XFSC catalogue's POST /assets.
  gxconf cluster status|drain [-c config.yaml | -url http://127.0.0.1:9464]
      status: print the cluster as a running node sees it (nodes by site with their
      load, rooms and where their participants are); drain: the node moves its
      participants to other nodes, then stops. Both ask the node's metrics listener.
  gxconf drain [-c config.yaml | -url http://127.0.0.1:9464]
      The same as gxconf cluster drain: the node leaves placement, answers /healthz
      with 503, moves its participants to other nodes in batches, then stops.
  LIVEKIT_API_KEY=K LIVEKIT_API_SECRET=S gxconf loadtest -url ws://127.0.0.1:7880 [-rooms N -publishers M -subscribers K ...]
      Load an SFU (gxconf's or any LiveKit server) with synthetic participants; prints
      join latency, tracks, bitrate, loss and, with -sfu-pid, the SFU's CPU and memory;
      -calibration-out FILE writes its figures for gxconf plan.
  gxconf plan [-calibration FILE] [-json] [-sessions N -participants M ...]
      Capacity and cost planner: nodes, cores, memory and bandwidth per site and on the
      IX, and the monthly cost, from measured figures (see gxconf plan -h).
  gxconf version
      Print the version.

Configuration: see config.example.yaml; every key can be overridden with
GXCONF_SECTION__KEY (and GXCONF_SECTION__KEY_FILE to read a secret from a file).
`

// run dispatches a subcommand and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(args[1:], stderr)
	case "generate-registration":
		err = cmdGenerateRegistration(args[1:], stdout)
	case "audit":
		err = cmdAudit(args[1:], stdout)
	case "keys":
		err = cmdKeys(args[1:], stdout)
	case "catalog":
		err = cmdCatalog(args[1:], stdout)
	case "cluster":
		err = cmdCluster(args[1:], stdout)
	case "drain":
		err = cmdDrain(args[1:], stdout)
	case "loadtest":
		err = cmdLoadtest(args[1:], stdout, stderr)
	case "plan":
		err = cmdPlan(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "gxconf", versionString())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "gxconf: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gxconf %s: %v\n", args[0], err)
		var usageErr *usageError
		if errors.As(err, &usageErr) {
			return 2
		}
		return 1
	}
	return 0
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// parseArgs parses a subcommand's flags and refuses positional arguments.
func parseArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}
