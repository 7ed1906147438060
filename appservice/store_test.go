package appservice

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func TestStoreMigrationsAndRecords(t *testing.T) {
	ctx := context.Background()
	db, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "as.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	require.NoError(t, err)
	defer db.Close()
	s, err := newStore(ctx, db)
	require.NoError(t, err)
	_, err = newStore(ctx, db)
	require.NoError(t, err, "upgrades are idempotent")
	var version int
	require.NoError(t, db.QueryRow(ctx, "SELECT version FROM "+VersionTable).Scan(&version))
	require.Equal(t, len(upgradeTable), version)

	now := time.Now()
	seen, err := s.seenTxn(ctx, "t1")
	require.NoError(t, err)
	require.False(t, seen)
	require.NoError(t, s.markTxn(ctx, "t1", now))
	require.NoError(t, s.markTxn(ctx, "t1", now), "marking twice is harmless")
	seen, err = s.seenTxn(ctx, "t1")
	require.NoError(t, err)
	require.True(t, seen)

	m := CallMember{RoomID: "!r", Kind: "msc3401", Key: "k1", UserID: "@a:x", DeviceID: "D", SlotID: "m.call#ROOM", UpdatedAt: now}
	require.NoError(t, s.putCallMember(ctx, m))
	expired := m
	expired.Key, expired.ExpiresAt = "k2", now.Add(-time.Minute)
	require.NoError(t, s.putCallMember(ctx, expired))
	list, err := s.callMembers(ctx, "!r", now)
	require.NoError(t, err)
	require.Len(t, list, 1, "expired memberships are not listed")
	require.NoError(t, s.deleteUserCallMembers(ctx, "!r", "@a:x"))
	list, err = s.callMembers(ctx, "!r", now)
	require.NoError(t, err)
	require.Empty(t, list)

	_, known, err := s.roomPolicy(ctx, "!r")
	require.NoError(t, err)
	require.False(t, known)
	require.NoError(t, s.putRoomPolicy(ctx, "!r", `{"level":"kritis"}`, "$e", "@a:x", now))
	content, known, err := s.roomPolicy(ctx, "!r")
	require.NoError(t, err)
	require.True(t, known)
	require.Equal(t, `{"level":"kritis"}`, content)
}

func TestParseCallMember(t *testing.T) {
	sk := "_@a:x_DEV_m.call"
	m, leave, err := ParseCallMember(TypeCallMember, "@a:x", "!r", &sk, 1000,
		[]byte(`{"application":"m.call","call_id":"","device_id":"DEV","expires":3600000,"foci_preferred":[{"type":"livekit","livekit_service_url":"https://f"}]}`))
	require.NoError(t, err)
	require.False(t, leave)
	require.Equal(t, "DEV", m.DeviceID)
	require.Equal(t, "m.call#ROOM", m.SlotID)
	require.Equal(t, "https://f", m.FocusURL)
	require.Equal(t, time.UnixMilli(1000).Add(time.Hour), m.ExpiresAt)

	_, leave, err = ParseCallMember(TypeCallMember, "@a:x", "!r", &sk, 1000, []byte(`{}`))
	require.NoError(t, err)
	require.True(t, leave, "empty content ends the membership")

	m, leave, err = ParseCallMember(TypeRTCMember, "@a:x", "!r", nil, 1000,
		[]byte(`{"slot_id":"m.call#ROOM","member":{"id":"mid","user_id":"@evil:x","device_id":"DEV"},"sticky_key":"mid"}`))
	require.NoError(t, err)
	require.False(t, leave)
	require.Equal(t, "@a:x", m.UserID, "the sender, never the content's user")
	require.Equal(t, "mid", m.MemberID)

	_, _, err = ParseCallMember(TypeRTCMember, "@a:x", "!r", nil, 1000, []byte(`{"slot_id":"s"}`))
	require.ErrorIs(t, err, errBadCallMember)

	// Members are read under their exact names only, as a client's JSON
	// reader does: "Device_ID" is no device_id for Element Call.
	_, _, err = ParseCallMember(TypeCallMember, "@a:x", "!r", &sk, 1000, []byte(`{"application":"m.call","Device_ID":"DEV"}`))
	require.ErrorIs(t, err, errBadCallMember)
	_, _, err = ParseCallMember(TypeRTCMember, "@a:x", "!r", nil, 1000,
		[]byte(`{"slot_id":"m.call#ROOM","member":{"id":"mid","device_id":"DEV"},"Sticky_Key":"other"}`))
	require.ErrorIs(t, err, errBadCallMember)

	// Control characters (a NUL cannot even be stored in PostgreSQL) make
	// an identifying field malformed; a focus URL with one is not used.
	for _, c := range []struct{ typ, content string }{
		{TypeCallMember, `{"application":"m.call","device_id":"DEV\u0000"}`},
		{TypeCallMember, `{"application":"m.call","device_id":"DEV","call_id":"c\n"}`},
		{TypeRTCMember, `{"slot_id":"m.call#ROOM","member":{"id":"mid","device_id":"D\u0000"},"sticky_key":"mid"}`},
		{TypeRTCMember, `{"slot_id":"m.call#ROOM","member":{"id":"mid\u0085","device_id":"D"},"sticky_key":"mid"}`},
		{TypeRTCMember, `{"slot_id":"m.call#\u007f","member":{"id":"mid","device_id":"D"},"sticky_key":"mid"}`},
		{TypeRTCMember, `{"sticky_key":"k\u0000"}`},
	} {
		_, _, err = ParseCallMember(c.typ, "@a:x", "!r", &sk, 1000, []byte(c.content))
		if c.typ == TypeRTCMember {
			_, _, err = ParseCallMember(c.typ, "@a:x", "!r", nil, 1000, []byte(c.content))
		}
		require.ErrorIs(t, err, errBadCallMember, c.content)
	}
	m, _, err = ParseCallMember(TypeRTCMember, "@a:x", "!r", nil, 1000,
		[]byte(`{"slot_id":"m.call#ROOM","member":{"id":"mid","device_id":"DEV"},"sticky_key":"mid","foci_preferred":[{"livekit_service_url":"https://f\u0000"},{"livekit_service_url":"https://g"}]}`))
	require.NoError(t, err)
	require.Equal(t, "https://g", m.FocusURL)
}

// A policy event stored by a transaction while a lookup was under way wins
// over what the lookup found: the lookup never overwrites a record.
func TestInitRoomPolicyKeepsARacingEvent(t *testing.T) {
	ctx := context.Background()
	db, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "as.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	require.NoError(t, err)
	defer db.Close()
	s, err := newStore(ctx, db)
	require.NoError(t, err)
	now := time.Now()

	got, err := s.initRoomPolicy(ctx, "!fresh", "", now)
	require.NoError(t, err)
	require.Equal(t, "", got, "a room without a policy is recorded as having none")

	require.NoError(t, s.putRoomPolicy(ctx, "!raced", `{"level":"kritis"}`, "$e", "@a:x", now))
	got, err = s.initRoomPolicy(ctx, "!raced", "", now)
	require.NoError(t, err)
	require.Equal(t, `{"level":"kritis"}`, got, "the transaction's policy stays in force")
	content, _, err := s.roomPolicy(ctx, "!raced")
	require.NoError(t, err)
	require.Equal(t, `{"level":"kritis"}`, content)
}

// A sticky rtc.member is keyed by its sender: another member sending the same
// sticky key, joining or leaving, neither replaces nor ends the first
// member's membership; the sender's own leave does.
func TestStickyKeyScopedBySender(t *testing.T) {
	ctx := context.Background()
	a := newTestAppservice(t, "http://127.0.0.1:1")
	send := func(sender, content string) {
		t.Helper()
		evt := &event.Event{Type: event.Type{Type: TypeRTCMember, Class: event.MessageEventType}, Sender: id.UserID(sender),
			RoomID: "!r:hs.test", ID: id.EventID("$" + sender + content), Timestamp: time.Now().UnixMilli(),
			Content: event.Content{VeryRaw: []byte(content)}}
		require.NoError(t, a.processEvent(ctx, evt, new(effects)))
	}
	members := func() []string {
		t.Helper()
		list, err := a.store.callMembers(ctx, "!r:hs.test", time.Now())
		require.NoError(t, err)
		var out []string
		for _, m := range list {
			out = append(out, m.UserID+"/"+m.DeviceID)
		}
		return out
	}
	join := func(dev string) string {
		return `{"slot_id":"m.call#ROOM","member":{"id":"mid","device_id":"` + dev + `"},"sticky_key":"alice-key"}`
	}
	send("@alice:hs.test", join("ALICEDEV"))
	require.Equal(t, []string{"@alice:hs.test/ALICEDEV"}, members())

	send("@mallory:hs.test", join("MDEV"))
	require.Equal(t, []string{"@alice:hs.test/ALICEDEV", "@mallory:hs.test/MDEV"}, members(),
		"another sender's event with alice's key is a membership of its own")
	send("@mallory:hs.test", `{"sticky_key":"alice-key"}`)
	require.Equal(t, []string{"@alice:hs.test/ALICEDEV"}, members(), "mallory's leave ends only mallory's membership")

	send("@alice:hs.test", `{"sticky_key":"alice-key"}`)
	require.Empty(t, members(), "alice's own leave ends hers")
}

// Rows stored before version 3 take their sender into the key, so a leave
// parsed now still finds them.
func TestStickyKeyMigration(t *testing.T) {
	ctx := context.Background()
	db, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "as.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	require.NoError(t, err)
	defer db.Close()
	child := db.Child(VersionTable, upgradeTable[:2], nil)
	require.NoError(t, child.Upgrade(ctx))
	old := &store{db: child}
	now := time.Now()
	require.NoError(t, old.putCallMember(ctx, CallMember{RoomID: "!r", Kind: "msc4143", Key: "k", UserID: "@a:x", DeviceID: "D",
		MemberID: "k", SlotID: "m.call#ROOM", ExpiresAt: now.Add(time.Hour), UpdatedAt: now}))
	require.NoError(t, old.putCallMember(ctx, CallMember{RoomID: "!r", Kind: "msc3401", Key: "_@a:x_D_m.call", UserID: "@a:x", DeviceID: "D",
		SlotID: "m.call#ROOM", UpdatedAt: now}))

	s, err := newStore(ctx, db)
	require.NoError(t, err)
	m, leave, err := ParseCallMember(TypeRTCMember, "@a:x", "!r", nil, now.UnixMilli(), []byte(`{"sticky_key":"k"}`))
	require.NoError(t, err)
	require.True(t, leave)
	require.NoError(t, s.deleteCallMember(ctx, m.RoomID, m.Kind, m.Key))
	list, err := s.callMembers(ctx, "!r", now)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "msc3401", list[0].Kind, "state-keyed rows keep their key")
}
