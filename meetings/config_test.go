package meetings

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/credentials"
)

func TestConfigValidateNamesEveryKey(t *testing.T) {
	c := DefaultConfig()
	require.NoError(t, c.Validate())
	c.DefaultTimezone = "Mars/Base"
	c.ReminderBefore = -time.Minute
	c.CallLink = "https://element.example/#/room/"
	c.PublicURL = "ftp://x"
	c.MaxInvitees = 10000
	c.MaxOccurrences = 0
	c.MaxSeriesSpan = time.Hour
	c.MaxDuration = 0
	c.MaxMeetingsPerOrganiser = 0
	c.MaxFeedMeetings = 0
	c.CreateRate = CreateRate{Burst: 0, Every: 0}
	c.Retention.Ended = -time.Hour
	c.Retention.Cancelled = 100000 * time.Hour
	c.Levels = map[credentials.Level]LevelDefaults{"secret": {}}
	err := c.Validate()
	for _, key := range []string{"default_timezone:", "reminder_before:", "call_link: must contain {room_id}", "public_url:",
		"max_invitees: must be between 1 and 5000, got 10000", "max_occurrences:", "max_series_span:", "max_duration:", "max_meetings_per_organiser:",
		"max_feed_meetings: must be between 1 and 5000, got 0", "create_rate.burst: must be between 1 and 10000, got 0",
		"create_rate.every: must be between 1s and 24h, got 0s", "retention.ended: must be between 0s and 87600h, got -1h0m0s",
		"retention.cancelled: must be between 0s and 87600h, got 100000h0m0s", `levels: unknown level "secret"`} {
		require.ErrorContains(t, err, key)
	}
}
