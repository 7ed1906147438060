package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// A room's creator asks for a token right after creating the room, while the
// bot's invite is still pending. Dendrite answers the bot's single-state-event
// lookup for de.gxconf.access with another event's content then (the room's
// create event); gxconf must neither fail (it answered 500) nor mistake it for
// a policy — and a policy the room does have must still be enforced.
func TestFirstTokenInFreshRoom(t *testing.T) {
	ctx := context.Background()
	s := startStack(t, harness.StackOptions{})
	alice := register(t, s, "alice")

	for i := range 5 {
		created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "private_chat", Name: fmt.Sprintf("Frisch %d", i), Invite: []id.UserID{s.BotID},
		})
		require.NoError(t, err)
		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(created.RoomID, alice, "alice-1", openID(t, alice)))
		require.Equal(t, http.StatusOK, status, "room %d: %v", i, out)
	}

	// The same race with a policy in the room's initial state that refuses
	// alice (she is not on the need-to-know list): 403, not 200 or 500.
	policy, err := json.Marshal(credentials.AccessPolicy{Level: credentials.LevelPublic, NeedToKnow: []string{"@someone:else.example"}})
	require.NoError(t, err)
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Name: "Need to know", Invite: []id.UserID{s.BotID},
		InitialState: []*event.Event{{
			Type: event.Type{Type: credentials.AccessEventType, Class: event.StateEventType}, StateKey: ptr(""),
			Content: event.Content{VeryRaw: policy},
		}},
	})
	require.NoError(t, err)
	status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(created.RoomID, alice, "alice-1", openID(t, alice)))
	require.Equal(t, http.StatusForbidden, status, out)
	require.Equal(t, "M_FORBIDDEN", out["errcode"])
}

func ptr[T any](v T) *T { return &v }
