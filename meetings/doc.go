// Package meetings is gxconf's scheduler of calls: a meeting (one call or a
// recurring series) is a Matrix room the bot creates for an organiser, with the
// call's power levels, the access policy state event (de.gxconf.access) at
// the meeting's confidentiality level, invites whose reason tells the
// schedule, and the schedule itself in a net.nordeck.meetings.metadata state
// event. Each invitee gets an iCalendar file (RFC 5545/5546) in their direct
// chat with the bot, updates and cancellations send new ones, every user has a
// private read-only webcal feed, and the bot posts a reminder before each
// occurrence (persisted, so a restart loses none and doubles none). A feed
// or list shows at most meetings.max_feed_meetings meetings (a feed also
// at most 50 attendees an event, 20 time zones and 4 MiB), and a meeting
// leaves them, and the database, once over for longer than its retention
// (meetings.retention).
//
// Organisers use it through the bot ("!conf meeting …", see [Bot]) or the
// HTTP API ([Service.Handler]); both call the same operations of [Service].
//
// Concurrency: Service methods may be called from any goroutine; one mutex
// serialises changes to meetings (they are rare and involve the homeserver;
// a request's schedule is checked before it is taken, since expanding a
// rule can take long),
// and a lock per meeting orders its changes and its reminders (lock.go).
// Run owns the reminder loop (which also purges old meetings) and returns
// after it stopped.
//
// It must not import appservice, focus, catalog or cmd: the Matrix client,
// the authenticators and the booking check are interfaces it declares
// (interfaces.go), which cmd wires.
package meetings
