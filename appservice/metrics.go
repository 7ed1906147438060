package appservice

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	transactions  *prometheus.CounterVec
	events        *prometheus.CounterVec
	eventsIgnored *prometheus.CounterVec
	jobs          *prometheus.CounterVec
	policyChanges *prometheus.CounterVec
	unauthorized  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gxconf", Subsystem: "appservice", Name: "transactions_total",
			Help: "Transactions pushed by the homeserver, by result.",
		}, []string{"result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gxconf", Subsystem: "appservice", Name: "events_total",
			Help: "Events received from the homeserver, by type.",
		}, []string{"type"}),
		eventsIgnored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gxconf", Subsystem: "appservice", Name: "events_ignored_total",
			Help: "Events skipped without failing their transaction: malformed (control characters in IDs, unknown membership, unparseable call membership) or unstorable (the database refused the content).",
		}, []string{"reason"}),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gxconf", Subsystem: "appservice", Name: "jobs_total",
			Help: "Side effects run by the appservice worker (bot replies, joins, participant removal), by result.",
		}, []string{"job", "result"}),
		policyChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gxconf", Subsystem: "appservice", Name: "policy_changes_total",
			Help: "Changes of rooms' access policy (de.gxconf.access), accepted or refused.",
		}, []string{"result"}),
		unauthorized: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gxconf", Subsystem: "appservice", Name: "unauthorized_requests_total",
			Help: "Requests to the appservice API (transactions, user and alias queries, ping) refused for their hs_token, by reason (missing, invalid).",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.transactions, m.events, m.eventsIgnored, m.jobs, m.policyChanges, m.unauthorized)
	}
	return m
}
