package catalog

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	bookings   *prometheus.CounterVec
	admissions *prometheus.CounterVec
	sessions   prometheus.Gauge
	admin      *prometheus.CounterVec
	anonymous  prometheus.Counter
	unaudited  prometheus.Counter
	// overBudget: refusals of an identified subject beyond its audit budget.
	overBudget prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		bookings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gxconf_catalog_booking_transitions_total", Help: "Bookings entering a state.",
		}, []string{"state"}),
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gxconf_catalog_admissions_total", Help: "Token requests in bound rooms, by outcome (admitted or the refusal's kind).",
		}, []string{"outcome"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gxconf_catalog_open_sessions", Help: "Open sessions of bookings in the database (all nodes), as of this node's last usage sample.",
		}),
		admin: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gxconf_catalog_admin_requests_total", Help: "Admin API requests by action and outcome.",
		}, []string{"action", "outcome"}),
		anonymous: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gxconf_catalog_admin_anonymous_refusals_total", Help: "Admin API requests refused for carrying no credentials at all (not audited).",
		}),
		unaudited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gxconf_catalog_admin_unaudited_refusals_total", Help: "Refusals of credentials or logins that established no identity, beyond the audit budget (60 at once, then 1 per second): logged, not audited.",
		}),
		overBudget: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gxconf_catalog_admin_unaudited_subject_refusals_total", Help: "Refusals of an identified admin subject beyond its audit budget (60 at once, then 1 per 10 seconds per subject): logged, not audited.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.bookings, m.admissions, m.sessions, m.admin, m.anonymous, m.unaudited, m.overBudget)
	}
	return m
}
