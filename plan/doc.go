// Package plan is gxconf's capacity and cost planner: from a load (sessions,
// participants, publishers and their simulcast layers, the share of
// participants from a peered federation, sites, confidentiality level,
// redundancy, headroom) and a calibration of measured per-packet, per-join
// and per-participant costs it computes nodes, cores, memory and bandwidth
// per site and on the IX, and the monthly cost at given prices.
//
// The calibration is a versioned JSON file (kind "gxconf.calibration",
// version 1) that `gxconf loadtest -calibration-out` writes on the
// operator's own hardware; DefaultCalibration is the one embedded from the
// figures measured in this repository (README.md, each figure with its
// source). The model is a fluid approximation, documented on Compute.
//
// It imports no other gxconf package: cmd/gxconf turns a loadtest report
// into RunFigures.
package plan
