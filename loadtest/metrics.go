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

// relayCounters are a gxconf node's bridge relay counters, summed over its
// peer nodes (gxconf_bridge_relay_{packets,bytes}_total{peer,direction}).
type relayCounters struct {
	packetsOut, packetsIn, bytesOut, bytesIn float64
}

func (c relayCounters) sub(earlier relayCounters) relayCounters {
	return relayCounters{c.packetsOut - earlier.packetsOut, c.packetsIn - earlier.packetsIn,
		c.bytesOut - earlier.bytesOut, c.bytesIn - earlier.bytesIn}
}

// scrapeRelay reads the relay counters from a node's metrics listener
// (base URL, /metrics is appended).
func scrapeRelay(ctx context.Context, base string) (relayCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/metrics", nil)
	if err != nil {
		return relayCounters{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return relayCounters{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return relayCounters{}, fmt.Errorf("%s/metrics: status %d", base, resp.StatusCode)
	}
	return parseRelay(resp.Body)
}

// parseRelay sums the relay counters of a Prometheus text exposition.
func parseRelay(r io.Reader) (relayCounters, error) {
	var c relayCounters
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
