package appservice

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// Property: no panic; an accepted transaction re-marshals and decodes to the
// same events.
func FuzzDecodeTransaction(f *testing.F) {
	f.Add([]byte(`{"events":[{"type":"m.room.member","room_id":"!r:x","sender":"@a:x","state_key":"@a:x","event_id":"$e","origin_server_ts":1,"content":{"membership":"join"}}]}`))
	f.Add([]byte(`{"events":[{"type":"m.room.message","room_id":"!r:x","sender":"@a:x","content":{"msgtype":"m.text","body":"!conf help"}}],"ephemeral":[]}`))
	f.Add([]byte(`{"events":[{"type":5}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		txn, err := DecodeTransaction(body)
		if err != nil {
			return
		}
		for _, evt := range txn.Events {
			require.NotEmpty(t, evt.Type.Type)
			require.NotEmpty(t, evt.RoomID)
			require.NotEmpty(t, evt.Sender)
		}
		again, err := json.Marshal(txn)
		require.NoError(t, err)
		txn2, err := DecodeTransaction(again)
		require.NoError(t, err)
		require.Len(t, txn2.Events, len(txn.Events))
		for i := range txn.Events {
			require.Equal(t, txn.Events[i].Type, txn2.Events[i].Type)
			require.Equal(t, txn.Events[i].RoomID, txn2.Events[i].RoomID)
			require.Equal(t, txn.Events[i].StateKey, txn2.Events[i].StateKey)
		}
	})
}

// Property: no panic; the user is always the sender; an accepted membership
// has the fields the store needs.
func FuzzParseCallMember(f *testing.F) {
	f.Add(TypeCallMember, true, []byte(`{"application":"m.call","call_id":"","device_id":"DEV","expires":14400000,"foci_preferred":[{"type":"livekit","livekit_service_url":"https://f"}]}`))
	f.Add(TypeRTCMember, false, []byte(`{"slot_id":"m.call#ROOM","member":{"id":"mid","user_id":"@evil:x","device_id":"DEV"},"sticky_key":"mid"}`))
	f.Add(TypeRTCMember, false, []byte(`{}`))
	f.Add(TypeCallMember, true, []byte(`{}`))
	f.Fuzz(func(t *testing.T, typ string, isState bool, content []byte) {
		var sk *string
		if isState {
			s := "_@a:x_DEV_m.call"
			sk = &s
		}
		m, leave, err := ParseCallMember(typ, "@a:x", "!r:x", sk, 1000, content)
		if err != nil {
			return
		}
		require.Equal(t, "@a:x", m.UserID)
		require.NotEmpty(t, m.Key)
		if !leave {
			require.NotEmpty(t, m.DeviceID)
			require.NotEmpty(t, m.SlotID)
		}
	})
}
