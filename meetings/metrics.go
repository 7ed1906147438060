package meetings

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	ops       *prometheus.CounterVec
	files     *prometheus.CounterVec
	reminders *prometheus.CounterVec
	api       *prometheus.CounterVec
	purged    *prometheus.CounterVec
	feedsCut  prometheus.Counter
	// unreadable counts stored meetings left out of feeds and lists, once each.
	unreadable prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gxconf_meetings_operations_total",
			Help: "Meeting operations (create, update, cancel) by result."}, []string{"op", "result"}),
		files: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gxconf_meetings_calendar_files_total",
			Help: "iCalendar files posted in direct chats, by iTIP method and result."}, []string{"method", "result"}),
		reminders: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gxconf_meetings_reminders_total",
			Help: "Reminders posted in meeting rooms, by result (sent, late, error)."}, []string{"result"}),
		api: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gxconf_meetings_api_requests_total",
			Help: "Meetings HTTP API requests by endpoint and status class."}, []string{"endpoint", "status"}),
		purged: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gxconf_meetings_purged_total",
			Help: "Meetings deleted after their retention, by state (ended, cancelled)."}, []string{"state"}),
		feedsCut: prometheus.NewCounter(prometheus.CounterOpts{Name: "gxconf_meetings_feeds_cut_total",
			Help: "Feed requests whose calendar left meetings out to stay within its size limit."}),
		unreadable: prometheus.NewCounter(prometheus.CounterOpts{Name: "gxconf_meetings_unreadable_total",
			Help: "Stored meetings that cannot be read or rendered, left out of feeds and lists (each counted once)."}),
	}
	if reg != nil {
		reg.MustRegister(m.ops, m.files, m.reminders, m.api, m.purged, m.feedsCut, m.unreadable)
	}
	return m
}
