package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// nodeCounters are the counters read from a gxconf node's metrics
// listener: its bridge relay counters, summed over its peer nodes
// (gxconf_bridge_relay_{packets,bytes}_total{peer,direction}), and what its
// direct send path handed the kernel (gxconf_sfu_rtp_packets_direct_out_total,
// gxconf_sfu_direct_send_{messages,calls}_total).
type nodeCounters struct {
	packetsOut, packetsIn, bytesOut, bytesIn float64
	directOut, messages, calls               float64
}

func (c nodeCounters) sub(earlier nodeCounters) nodeCounters {
	return nodeCounters{c.packetsOut - earlier.packetsOut, c.packetsIn - earlier.packetsIn,
		c.bytesOut - earlier.bytesOut, c.bytesIn - earlier.bytesIn,
		c.directOut - earlier.directOut, c.messages - earlier.messages, c.calls - earlier.calls}
}

// scrapeNode reads the counters from a node's metrics listener (base URL,
// /metrics is appended).
func scrapeNode(ctx context.Context, base string) (nodeCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/metrics", nil)
	if err != nil {
		return nodeCounters{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nodeCounters{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nodeCounters{}, fmt.Errorf("%s/metrics: status %d", base, resp.StatusCode)
	}
	return parseNode(resp.Body)
}

// parseNode sums the counters of a Prometheus text exposition.
func parseNode(r io.Reader) (nodeCounters, error) {
	var c nodeCounters
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var dst *float64
		switch {
		case strings.HasPrefix(line, "gxconf_bridge_relay_packets_total{") && strings.Contains(line, `direction="out"`):
			dst = &c.packetsOut
		case strings.HasPrefix(line, "gxconf_bridge_relay_packets_total{") && strings.Contains(line, `direction="in"`):
			dst = &c.packetsIn
		case strings.HasPrefix(line, "gxconf_bridge_relay_bytes_total{") && strings.Contains(line, `direction="out"`):
			dst = &c.bytesOut
		case strings.HasPrefix(line, "gxconf_bridge_relay_bytes_total{") && strings.Contains(line, `direction="in"`):
			dst = &c.bytesIn
		case strings.HasPrefix(line, "gxconf_sfu_rtp_packets_direct_out_total "):
			dst = &c.directOut
		case strings.HasPrefix(line, "gxconf_sfu_direct_send_messages_total "):
			dst = &c.messages
		case strings.HasPrefix(line, "gxconf_sfu_direct_send_calls_total "):
			dst = &c.calls
		default:
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return c, fmt.Errorf("bad sample %q: %w", line, err)
		}
		*dst += v
	}
	return c, sc.Err()
}
