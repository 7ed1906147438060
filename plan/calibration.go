package plan

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"time"
	"unicode"

	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// CalibrationKind and CalibrationVersion identify a calibration file.
// A reader refuses other kinds and versions rather than guess what their
// fields mean.
const (
	CalibrationKind    = "gxconf.calibration"
	CalibrationVersion = 1
)

// MaxCalibrationSize caps a calibration file; real ones are about 2 KB.
const MaxCalibrationSize = 64 << 10

// maxText caps the descriptive strings (machine, command, sources).
const maxText = 2048

// Calibration holds the measured costs the planner multiplies. Every
// figure is per node process of gxconf's embedded SFU.
type Calibration struct {
	Kind    string `json:"kind"`
	Version int    `json:"version"`
	// Date is when the figures were measured (RFC 3339), Machine what on,
	// Command the command that measured them (secrets removed).
	Date    string `json:"date"`
	Machine string `json:"machine"`
	Command string `json:"command"`

	// ForwardMicros is SFU CPU per forwarded packet (receiving the
	// publisher's share included), in µs.
	ForwardMicros float64 `json:"forward_us_per_packet"`
	// RelaySendMicros and RelayReceiveMicros are CPU per packet relayed
	// between nodes (bridge), at the sending and at the receiving node.
	RelaySendMicros    float64 `json:"relay_send_us_per_packet"`
	RelayReceiveMicros float64 `json:"relay_receive_us_per_packet"`
	// NodeBaseMiB is a node's RSS before anyone joins.
	NodeBaseMiB float64 `json:"node_base_memory_mib"`
	// ParticipantKiB is the memory of a connected participant, and
	// SubscribedTrackKiB what each track it subscribes to adds.
	ParticipantKiB     float64 `json:"participant_memory_kib"`
	SubscribedTrackKiB float64 `json:"subscribed_track_memory_kib"`
	// JoinCPUMillis is SFU CPU per join (signalling, ICE, DTLS, initial
	// subscriptions), in ms.
	JoinCPUMillis float64 `json:"join_cpu_ms"`

	// Sources says, per figure (by its JSON name), where it comes from.
	Sources map[string]string `json:"sources,omitempty"`
}

//go:embed default_calibration.json
var defaultCalibrationJSON []byte

// DefaultCalibration returns the calibration embedded from the figures
// measured in this repository (README.md; see its sources).
func DefaultCalibration() Calibration {
	c, err := ParseCalibration(defaultCalibrationJSON)
	if err != nil {
		panic("plan: embedded calibration is invalid: " + err.Error())
	}
	return c
}

// ReadCalibrationFile reads and validates a calibration file.
func ReadCalibrationFile(path string) (Calibration, error) {
	f, err := os.Open(path)
	if err != nil {
		return Calibration{}, fmt.Errorf("failed to open calibration: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxCalibrationSize+1))
	if err != nil {
		return Calibration{}, fmt.Errorf("failed to read calibration: %w", err)
	}
	c, err := ParseCalibration(b)
	if err != nil {
		return Calibration{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseCalibration decodes a calibration strictly (unknown fields,
// trailing data, duplicate or missing fields are errors) and validates it.
func ParseCalibration(b []byte) (Calibration, error) {
	if len(b) > MaxCalibrationSize {
		return Calibration{}, fmt.Errorf("%w: larger than %d bytes", ErrCalibration, MaxCalibrationSize)
	}
	// One JSON object, no member twice, nothing after it; kind and version
	// first, so a file of another version is named as such instead of
	// failing on a field this version does not know.
	present, err := strictjson.DecodeObject(b)
	if err != nil {
		return Calibration{}, fmt.Errorf("%w: not one JSON object: %v", ErrCalibration, err)
	}
	var errs fieldErrors
	errs.kind = ErrCalibration
	switch kind, ok := present["kind"]; {
	case !ok:
		errs.add("kind", fmt.Sprintf("missing (want %q)", CalibrationKind))
	case kind != CalibrationKind:
		errs.add("kind", fmt.Sprintf("unknown kind %s (want %q)", clip(jsonText(kind)), CalibrationKind))
	}
	switch v, ok := present["version"]; {
	case !ok:
		errs.add("version", fmt.Sprintf("missing (want %d)", CalibrationVersion))
	case v != float64(CalibrationVersion):
		errs.add("version", fmt.Sprintf("unknown calibration version %s (this gxconf reads version %d)", clip(jsonText(v)), CalibrationVersion))
	}
	if err := errs.err(); err != nil {
		return Calibration{}, err
	}
	// Every member is one this version defines, spelled exactly so.
	var c Calibration
	if err := strictjson.UnmarshalKnown(b, &c); err != nil {
		return Calibration{}, fmt.Errorf("%w: %v", ErrCalibration, err)
	}
	if len(c.Sources) == 0 {
		c.Sources = nil // "sources": {} is the same as none
	}
	for _, f := range requiredFields {
		if _, ok := present[f]; !ok {
			errs.add(f, "missing")
		}
	}
	if err := errs.err(); err != nil {
		return Calibration{}, err
	}
	if err := c.Validate(); err != nil {
		return Calibration{}, err
	}
	return c, nil
}

// requiredFields must be present in a file (a zero would silently plan
// for free resources).
var requiredFields = []string{"date", "machine", "command", "forward_us_per_packet", "relay_send_us_per_packet",
	"relay_receive_us_per_packet", "node_base_memory_mib", "participant_memory_kib", "subscribed_track_memory_kib", "join_cpu_ms"}

// Validate checks every figure and string; all problems are reported.
func (c Calibration) Validate() error {
	var errs fieldErrors
	errs.kind = ErrCalibration
	if c.Kind != CalibrationKind {
		errs.add("kind", fmt.Sprintf("unknown kind %q (want %q)", clip(c.Kind), CalibrationKind))
	}
	if c.Version != CalibrationVersion {
		errs.add("version", fmt.Sprintf("unknown calibration version %d (this gxconf reads version %d)", c.Version, CalibrationVersion))
	}
	if _, err := time.Parse(time.RFC3339, c.Date); err != nil {
		errs.add("date", fmt.Sprintf("not an RFC 3339 time: %q", clip(c.Date)))
	}
	for _, s := range []struct {
		name, v string
	}{{"machine", c.Machine}, {"command", c.Command}} {
		if msg := checkText(s.v); msg != "" {
			errs.add(s.name, msg)
		}
	}
	if len(c.Sources) > 32 {
		errs.add("sources", "more than 32 entries")
	}
	for k, v := range c.Sources {
		if msg := checkText(k); msg != "" {
			errs.add("sources", "a key "+msg)
		} else if msg := checkText(v); msg != "" {
			errs.add("sources."+k, msg)
		}
	}
	// Upper bounds catch unit mistakes (ms for µs, bytes for KiB) and keep
	// the arithmetic finite.
	for _, f := range []struct {
		name     string
		v, upper float64
	}{
		{"forward_us_per_packet", c.ForwardMicros, 10_000},
		{"relay_send_us_per_packet", c.RelaySendMicros, 10_000},
		{"relay_receive_us_per_packet", c.RelayReceiveMicros, 10_000},
		{"node_base_memory_mib", c.NodeBaseMiB, 1 << 20},
		{"participant_memory_kib", c.ParticipantKiB, 1 << 20},
		{"subscribed_track_memory_kib", c.SubscribedTrackKiB, 1 << 20},
		{"join_cpu_ms", c.JoinCPUMillis, 60_000},
	} {
		switch {
		case math.IsNaN(f.v) || math.IsInf(f.v, 0):
			errs.add(f.name, "not a number")
		case f.v <= 0:
			errs.add(f.name, fmt.Sprintf("must be positive, got %g", f.v))
		case f.v > f.upper:
			errs.add(f.name, fmt.Sprintf("implausibly large (%g > %g): check the unit", f.v, f.upper))
		}
	}
	return errs.err()
}

// checkText refuses over-long strings and control characters: the text
// output prints machine and command, and a file from elsewhere must not
// smuggle terminal escape sequences into it.
func checkText(s string) string {
	if len(s) > maxText {
		return fmt.Sprintf("longer than %d bytes", maxText)
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return "contains control characters or invalid UTF-8"
		}
	}
	return ""
}

// clip shortens a value quoted in an error message.
func clip(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}

// jsonText is a decoded JSON value as JSON, for an error message.
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// Marshal encodes the calibration as an indented JSON file.
func (c Calibration) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
