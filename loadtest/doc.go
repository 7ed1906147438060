// Package loadtest is gxconf's load generator for LiveKit-compatible SFUs
// (the embedded one or a stock livekit-server). It joins rooms with
// github.com/livekit/server-sdk-go/v2, publishes synthetic audio and
// simulcast VP8 (real VP8 key/inter frame headers, a send time stamp and a
// checkable payload), subscribes (subscribers with subscribe-only tokens, so
// their clients set up no publisher peer connection), and reports join latency, subscribed
// tracks, bitrate, packet loss, freezes (gaps over 500 ms between a
// stream's intact frames, as the benchmark protocol counts them; a stream
// that stops is frozen until it resumes, so a forwarder that goes silent
// without sequence gaps still shows), frame delivery latency and, given the
// server's pid, its CPU time per forwarded packet and its RSS from /proc.
//
// Cluster load: with several URLs (Options.URLs, `gxconf loadtest -url
// ws://a,ws://b`) every room spans the nodes: subscribers join them
// round-robin, publishers the first one (or round-robin with
// SpreadPublishers). With one PID and one metrics listener per URL the
// report has each node's CPU, RSS and bridge relay packets and bytes over
// the window, and what its direct send path handed the kernel (packets per
// UDP message, messages per sendmmsg call; with one URL too). Delivery
// latency (publisher's stamp to the first packet of the frame at the
// subscriber's track reader; publisher and subscriber share
// this process's clock) is reported for subscribers on their publisher's
// node and on another node: the difference is what the bridge hop adds. A
// saturated generator inflates both, so take the hop figure from a light
// run (the generator's CPU is in the report). test/cluster_load_bench_test.go
// (BenchmarkClusterLoad) starts Redis, PostgreSQL and two nodes and runs it.
//
// The report also has the SFU's CPU time during the join phase and the
// packets forwarded meanwhile, from which `gxconf loadtest -calibration-out`
// derives the cost of a join for `gxconf plan` (cmd/gxconf maps the report
// into the planner's calibration).
//
// It imports no other gxconf package.
package loadtest
