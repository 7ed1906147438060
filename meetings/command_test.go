package meetings

import (
	"context"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseCommand(t *testing.T) {
	c, err := ParseCommand(`create Weekly round start=2026-03-23 10:00 for=90m repeat=weekly times=10 tz=Europe/Berlin @bob:hs.test with=@carol:other.test,@dave:hs.test level=public`)
	require.NoError(t, err)
	require.Equal(t, "create", c.Verb)
	require.Equal(t, "Weekly round", *c.Spec.Title)
	require.Equal(t, "2026-03-23 10:00", *c.Spec.Start)
	require.Equal(t, "90m", *c.Spec.Duration)
	require.Equal(t, "weekly", *c.Spec.Repeat)
	require.Equal(t, 10, *c.Spec.Count)
	require.Equal(t, []string{"@bob:hs.test", "@carol:other.test", "@dave:hs.test"}, c.Spec.Invite)

	c, err = ParseCommand(`create "Krisenstab KRITIS" date=2026-04-01 time=14:30 end=16:00`)
	require.NoError(t, err)
	require.Equal(t, "Krisenstab KRITIS", *c.Spec.Title)
	require.Equal(t, "2026-04-01 14:30", *c.Spec.Start)

	c, err = ParseCommand(`update abcdefgh title="New title" uninvite=@bob:hs.test`)
	require.NoError(t, err)
	require.Equal(t, "abcdefgh", c.Target)
	require.Equal(t, "New title", *c.Spec.Title)

	c, err = ParseCommand(`cancel abcdefgh 2026-03-30`)
	require.NoError(t, err)
	require.Equal(t, "2026-03-30", c.Occurrence)
	c, err = ParseCommand(`cancel`)
	require.NoError(t, err)
	require.Equal(t, "", c.Target)

	for text, want := range map[string]string{
		`create x start=2026-03-23T10:00 colour=red`:  "colour: unknown option",
		`create x start=2026-03-23T10:00 tomorrow`:    `"tomorrow": I do not understand this word`,
		`create x start="2026-03-23 10:00`:            "a quote is not closed",
		`create x count=ten`:                          `count: "ten" is not a number`,
		`create x start=2026-03-23T10:00 start=10:00`: "start: given twice",
		`frobnicate`:                "frobnicate: unknown meeting command",
		`update title=x`:            "",
		`update notanid title=x`:    `"notanid": not a meeting ID`,
		`cancel abcdefgh next-week`: `"next-week": cancel takes a meeting ID`,
		`create x time=10:00`:       "time: give the date too",
	} {
		_, err := ParseCommand(text)
		if want == "" {
			require.NoError(t, err, text)
			continue
		}
		require.ErrorContains(t, err, want, text)
	}
}

func TestBotAnswers(t *testing.T) {
	env := newTestService(t)
	bot := env.svc.Bot("!conf")
	ctx := context.Background()
	reply, _ := bot.HandleCommand(ctx, "!dm", alice, `create Lage start="2026-02-30 10:00"`)
	require.Equal(t, `❌ I did not schedule the meeting — start: "2026-02-30" is not a date: February 2026 has 28 days`, reply)
	reply, _ = bot.HandleCommand(ctx, "!dm", alice, `create Lage start="2026-03-23 10:00" tz=Narnia/Cair_Paravel`)
	require.Contains(t, reply, `timezone: unknown time zone "Narnia/Cair_Paravel"`)
	reply, _ = bot.HandleCommand(ctx, "!dm", alice, `create Lage start="2026-03-23 10:00" rrule=FREQ=DAILY`)
	require.Contains(t, reply, "The series had no end, so it ends after 730 days")
	reply, _ = bot.HandleCommand(ctx, "!dm", alice, `tz America/New_York`)
	require.Contains(t, reply, "✅ Your time zone is America/New_York")
	reply, _ = bot.HandleCommand(ctx, "!dm", alice, `list`)
	require.Contains(t, reply, "Mon 23 Mar 2026, 05:00–06:00 (America/New_York)", "listed in the organiser's zone")
	reply, _ = bot.HandleCommand(ctx, "!dm", alice, `create NY call start="2026-03-23 10:00"`)
	require.Contains(t, reply, "10:00–11:00 (America/New_York)", "new meetings default to the organiser's zone")
	reply, _ = bot.HandleCommand(ctx, "!dm", alice, `help`)
	require.Contains(t, reply, "!conf meeting create <title>")
	reply, _ = bot.HandleCommand(ctx, "!shared-room", bob, `feed`)
	require.Contains(t, reply, "I sent your calendar address to you in our direct chat")
	require.NotContains(t, reply, "/meetings/cal/", "the secret address never goes to a shared room")
	msgs := env.mx.roomMessages("!dm-" + bob)
	require.Contains(t, msgs[len(msgs)-1]["body"], "https://conf.hs.test/meetings/cal/")
}

// Users who may not organise (here: of another homeserver) cannot make the
// bot open direct chats or store settings for them with "feed" and "tz";
// the bot says why. A local user still can.
func TestFeedAndTimezoneNeedOrganiser(t *testing.T) {
	env := newTestService(t)
	bot := env.svc.Bot("!conf")
	ctx := context.Background()
	for _, cmd := range []string{"feed", "tz Europe/Berlin"} {
		body, _ := bot.HandleCommand(ctx, "!attackerroom:evil.example", "@puppet:evil.example", cmd)
		require.Contains(t, body, "only users of hs.test may", cmd)
	}
	env.mx.mu.Lock()
	require.Empty(t, env.mx.dms, "no direct chat for the remote user")
	env.mx.mu.Unlock()
	tz, feed, err := env.svc.store.user(ctx, "@puppet:evil.example")
	require.NoError(t, err)
	require.Empty(t, tz+feed, "no settings row for the remote user")

	body, _ := bot.HandleCommand(ctx, "!dm", alice, "feed")
	require.Contains(t, body, "I sent your calendar address")
}

// TestFeedKeepsAddressUntilReset: asking for the calendar address again
// does not replace it (calendars subscribed to it keep working); the bot
// says it cannot resend it and points to `feed reset`, which makes a new
// address and ends the old one.
func TestFeedKeepsAddressUntilReset(t *testing.T) {
	env := newTestService(t)
	bot := env.svc.Bot("!conf")
	ctx := context.Background()
	dm := "!dm-" + alice
	re := regexp.MustCompile(`/meetings/cal/([a-z0-9]+)\.ics`)
	lastToken := func() string {
		msgs := env.mx.roomMessages(dm)
		m := re.FindStringSubmatch(msgs[len(msgs)-1]["body"].(string))
		require.NotNil(t, m, "the last direct message carries the address")
		return m[1]
	}
	works := func(token string) bool {
		_, ok, err := env.svc.Feed(ctx, token)
		require.NoError(t, err)
		return ok
	}

	reply, _ := bot.HandleCommand(ctx, "!dm", alice, "feed")
	require.Equal(t, "✅ I sent your calendar address to you in our direct chat.", reply)
	first := lastToken()
	require.True(t, works(first))
	sent := len(env.mx.roomMessages(dm))

	reply, _ = bot.HandleCommand(ctx, "!dm", alice, "feed")
	require.Contains(t, reply, "You already have a calendar address, and I cannot send it again")
	require.Contains(t, reply, "`!conf meeting feed reset`")
	require.Contains(t, reply, "the old one stops working")
	require.Len(t, env.mx.roomMessages(dm), sent, "no new address was sent")
	require.True(t, works(first), "plain feed keeps the address")

	reply, _ = bot.HandleCommand(ctx, "!dm", alice, "feed reset")
	require.Contains(t, reply, "Made a new calendar address; the old one no longer works")
	second := lastToken()
	require.NotEqual(t, first, second)
	require.False(t, works(first), "reset ends the old address")
	require.True(t, works(second))
}
