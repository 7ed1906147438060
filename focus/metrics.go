package focus

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests      *prometheus.CounterVec
	openIDLatency *prometheus.HistogramVec
	openIDCached  prometheus.Counter
	tokens        *prometheus.CounterVec
	removed       *prometheus.CounterVec
	// delegations counts the running delayed-leave jobs.
	delegations prometheus.Gauge
	// delegationsLimit is delayed_events.max_jobs.
	delegationsLimit prometheus.Gauge
	delayedActions   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gxconf", Subsystem: "focus", Name: "requests_total",
			Help: "Focus API requests by endpoint and outcome (ok or the Matrix errcode).",
		}, []string{"endpoint", "outcome"}),
		openIDLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "gxconf", Subsystem: "focus", Name: "openid_lookup_seconds",
			Help:    "Duration of OpenID userinfo lookups with the user's homeserver, including discovery.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"result"}),
		openIDCached: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gxconf", Subsystem: "focus", Name: "openid_cache_hits_total",
			Help: "OpenID tokens answered from the cache without asking the homeserver.",
		}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gxconf", Subsystem: "focus", Name: "tokens_issued_total",
			Help: "LiveKit tokens handed out, by whether they allow publishing.",
		}, []string{"can_publish"}),
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gxconf", Subsystem: "focus", Name: "participants_removed_total",
			Help: "SFU participants removed because their Matrix user left, was banned or lost access.",
		}, []string{"result"}),
		delegations: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "gxconf", Subsystem: "focus", Name: "delayed_leave_jobs",
			Help: "Delegated delayed leave events (MSC4140) this node keeps alive or is sending.",
		}),
		delegationsLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "gxconf", Subsystem: "focus", Name: "delayed_leave_jobs_limit",
			Help: "The most delayed leave jobs this node runs at once (focus.delayed_events.max_jobs).",
		}),
		delayedActions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gxconf", Subsystem: "focus", Name: "delayed_event_requests_total",
			Help: "Restart and send requests to users' homeservers (MSC4140), by result (ok, gone, error, unresolved).",
		}, []string{"action", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.openIDLatency, m.openIDCached, m.tokens, m.removed, m.delegations, m.delegationsLimit, m.delayedActions)
	}
	return m
}
