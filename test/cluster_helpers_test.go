package test

import (
	"bufio"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
	"github.com/twitchtv/twirp"
)

// scrapeMetric sums the samples of name on a node's /metrics whose labels
// include every label (`k="v"`).
func scrapeMetric(t *testing.T, metricsURL, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(metricsURL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			sum += v
		}
	}
	require.NoError(t, sc.Err())
	return sum
}

// httpOf turns a ws:// signalling URL into the http:// base of its Twirp API.
func httpOf(ws string) string { return "http" + strings.TrimPrefix(ws, "ws") }

// identitiesOf lists participants' identities, duplicates kept.
func identitiesOf(ps []*livekit.ParticipantInfo) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.GetIdentity())
	}
	return out
}

// requireTwirpNotFound checks a Twirp not_found answer.
func requireTwirpNotFound(t *testing.T, err error) {
	t.Helper()
	var te twirp.Error
	require.True(t, errors.As(err, &te), "not a twirp error: %v", err)
	require.Equal(t, twirp.NotFound, te.Code(), "%v", err)
}
