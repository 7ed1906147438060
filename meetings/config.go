package meetings

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "time/tzdata" // time zones work on a bare container

	"github.com/gxfs-conf/gxconf/credentials"
)

// Config is the `meetings:` section.
type Config struct {
	// Enabled turns on the bot's meeting commands, the HTTP API, the feeds
	// and the reminders.
	Enabled bool `yaml:"enabled"`
	// DefaultTimezone is the organiser's zone until they set their own
	// (`!conf meeting tz …`) or a request names one.
	DefaultTimezone string `yaml:"default_timezone"`
	// ReminderBefore is how long before each occurrence the bot posts its
	// reminder in the meeting room.
	ReminderBefore time.Duration `yaml:"reminder_before"`
	// CallLink is the link to a meeting's call; {room_id} and {server} are
	// replaced. It goes into reminders, invites and LOCATION/URL of .ics files.
	CallLink string `yaml:"call_link"`
	// PublicURL is where the HTTP API and the webcal feeds are reached
	// (…/meetings/v1, …/meetings/cal/<token>.ics); empty uses the focus's
	// public URL.
	PublicURL string `yaml:"public_url"`
	// OrganiserHomeservers are the homeservers whose users may schedule
	// meetings (the bot invites and messages people on their behalf); empty
	// means the local homeserver only, "*" everyone.
	OrganiserHomeservers []string `yaml:"organiser_homeservers"`
	// MaxInvitees caps the invitees of one meeting.
	MaxInvitees int `yaml:"max_invitees"`
	// MaxOccurrences caps a series.
	MaxOccurrences int `yaml:"max_occurrences"`
	// MaxSeriesSpan ends an open-ended series this long after its start.
	MaxSeriesSpan time.Duration `yaml:"max_series_span"`
	// MaxDuration caps one occurrence.
	MaxDuration time.Duration `yaml:"max_duration"`
	// MaxMeetingsPerOrganiser caps the active meetings of one organiser.
	MaxMeetingsPerOrganiser int `yaml:"max_meetings_per_organiser"`
	// MaxFeedMeetings caps the meetings one user's feed and list show: the
	// running and next ones first, then the recently ended, then the
	// recently cancelled. Other people's invitations fill a feed, and
	// organisers can be many, so the organiser cap cannot protect it.
	MaxFeedMeetings int `yaml:"max_feed_meetings"`
	// CreateRate limits how often one organiser creates meetings.
	CreateRate CreateRate `yaml:"create_rate"`
	// Retention is how long ended and cancelled meetings are kept.
	Retention Retention `yaml:"retention"`
	// Levels are the access policy defaults per confidentiality level that a
	// meeting's policy starts from (kritis and vs-nfd need credentials and
	// allowed homeservers, which an organiser rarely types).
	Levels map[credentials.Level]LevelDefaults `yaml:"levels"`
}

// Retention is how long meetings are kept once they are over: until then
// they stay in the feeds and lists, after it a periodic purge deletes them
// with their participants and reminder records.
type Retention struct {
	// Ended counts from the end of the last occurrence.
	Ended time.Duration `yaml:"ended"`
	// Cancelled counts from the cancellation; meanwhile subscribed calendars
	// see STATUS:CANCELLED rather than the meeting just vanishing.
	Cancelled time.Duration `yaml:"cancelled"`
}

// CreateRate is a token bucket per organiser: Burst creates at once, then
// one more every Every. Cancelled and ended meetings do not count toward
// MaxMeetingsPerOrganiser, so this bounds creating and cancelling in a
// loop.
type CreateRate struct {
	Burst int           `yaml:"burst"`
	Every time.Duration `yaml:"every"`
}

// LevelDefaults pre-fills a meeting's access policy at one level.
type LevelDefaults struct {
	RequiredCredentials []credentials.CredentialRequirement `yaml:"required_credentials"`
	// AllowedHomeservers; empty means the local homeserver only (at kritis and above).
	AllowedHomeservers []string `yaml:"allowed_homeservers"`
	MaxParticipants    int      `yaml:"max_participants"`
}

// DefaultConfig returns the defaults of the meetings section.
func DefaultConfig() Config {
	return Config{
		Enabled:                 true,
		DefaultTimezone:         "Europe/Berlin",
		ReminderBefore:          10 * time.Minute,
		CallLink:                "https://matrix.to/#/{room_id}?via={server}",
		MaxInvitees:             1000,
		MaxOccurrences:          1000,
		MaxSeriesSpan:           2 * 365 * 24 * time.Hour,
		MaxDuration:             24 * time.Hour,
		MaxMeetingsPerOrganiser: 200,
		MaxFeedMeetings:         500,
		CreateRate:              CreateRate{Burst: 20, Every: 5 * time.Minute},
		Retention:               Retention{Ended: 30 * 24 * time.Hour, Cancelled: 7 * 24 * time.Hour},
	}
}

// Validate reports every problem, each named by its key within the section.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf(key+": "+format, args...))
	}
	if _, err := loadZone(c.DefaultTimezone); err != nil {
		bad("default_timezone", "unknown time zone %q", c.DefaultTimezone)
	}
	if c.ReminderBefore < 0 || c.ReminderBefore > 7*24*time.Hour {
		bad("reminder_before", "must be between 0s and 168h, got %s", c.ReminderBefore)
	}
	if !strings.Contains(c.CallLink, "{room_id}") {
		bad("call_link", "must contain {room_id}, got %q", c.CallLink)
	} else if u, err := url.Parse(strings.NewReplacer("{room_id}", "x", "{server}", "x").Replace(c.CallLink)); err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		bad("call_link", "must be an http(s) URL, got %q", c.CallLink)
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("public_url", "must be an http(s) URL, got %q", c.PublicURL)
		}
	}
	if c.MaxInvitees < 1 || c.MaxInvitees > 5000 {
		bad("max_invitees", "must be between 1 and 5000, got %d", c.MaxInvitees)
	}
	if c.MaxOccurrences < 1 || c.MaxOccurrences > 10000 {
		bad("max_occurrences", "must be between 1 and 10000, got %d", c.MaxOccurrences)
	}
	if c.MaxSeriesSpan < 24*time.Hour || c.MaxSeriesSpan > 10*365*24*time.Hour {
		bad("max_series_span", "must be between 24h and 87600h, got %s", c.MaxSeriesSpan)
	}
	if c.MaxDuration < time.Minute || c.MaxDuration > 7*24*time.Hour {
		bad("max_duration", "must be between 1m and 168h, got %s", c.MaxDuration)
	}
	if c.MaxMeetingsPerOrganiser < 1 {
		bad("max_meetings_per_organiser", "must be at least 1, got %d", c.MaxMeetingsPerOrganiser)
	}
	if c.MaxFeedMeetings < 1 || c.MaxFeedMeetings > 5000 {
		bad("max_feed_meetings", "must be between 1 and 5000, got %d", c.MaxFeedMeetings)
	}
	if c.CreateRate.Burst < 1 || c.CreateRate.Burst > 10000 {
		bad("create_rate.burst", "must be between 1 and 10000, got %d", c.CreateRate.Burst)
	}
	if c.CreateRate.Every < time.Second || c.CreateRate.Every > 24*time.Hour {
		bad("create_rate.every", "must be between 1s and 24h, got %s", c.CreateRate.Every)
	}
	if c.Retention.Ended < 0 || c.Retention.Ended > maxRetention {
		bad("retention.ended", "must be between 0s and 87600h, got %s", c.Retention.Ended)
	}
	if c.Retention.Cancelled < 0 || c.Retention.Cancelled > maxRetention {
		bad("retention.cancelled", "must be between 0s and 87600h, got %s", c.Retention.Cancelled)
	}
	for lvl, d := range c.Levels {
		if lvl.Rank() < 0 {
			bad("levels", "unknown level %q (public, kritis, vs-nfd)", lvl)
		}
		if d.MaxParticipants < 0 {
			bad(fmt.Sprintf("levels.%s.max_participants", lvl), "must not be negative")
		}
	}
	return errors.Join(errs...)
}

// maxRetention bounds both retentions (ten years).
const maxRetention = 10 * 365 * 24 * time.Hour

func (c *Config) limits() Limits {
	return Limits{MaxOccurrences: c.MaxOccurrences, MaxSeriesSpan: c.MaxSeriesSpan, MaxDuration: c.MaxDuration}
}
