package focus

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
)

// LegacySlotID is the slot that call IDs "" (MSC3401) and the legacy /sfu/get
// endpoint map to, so that both endpoints put a room's users into one LiveKit room.
const LegacySlotID = "m.call#ROOM"

// hashJSONArray is unpadded standard base64 of sha256 over the JSON array of
// parts. HTML escaping is off, matching JSON.stringify and canonical JSON as the
// clients compute it (lk-jwt-service's Go encoder escapes <, > and &; realistic
// Matrix IDs never contain them).
func hashJSONArray(parts ...string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(parts) // encoding []string cannot fail
	sum := sha256.Sum256(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
	return base64.RawStdEncoding.EncodeToString(sum[:])
}

// LiveKitRoomAlias is the LiveKit room name for a Matrix room and MatrixRTC slot
// (lk-jwt-service helper.go, MSC4195).
func LiveKitRoomAlias(roomID, slotID string) string {
	return hashJSONArray(roomID, slotID)
}

// LiveKitIdentity is the participant identity for an m.rtc.member membership:
// the hash of [user ID, claimed device ID, member ID], as lk-jwt-service and
// matrix-js-sdk compute it.
func LiveKitIdentity(userID, deviceID, memberID string) string {
	return hashJSONArray(userID, deviceID, memberID)
}

// LegacyLiveKitIdentity is the identity for the legacy /sfu/get endpoint and
// MSC3401 memberships: "@user:server:DEVICE", not hashed. It is unambiguous
// only for device IDs without a colon (the last colon then separates user
// and device), which LegacyTokenRequest.Validate requires.
func LegacyLiveKitIdentity(userID, deviceID string) string {
	return userID + ":" + deviceID
}
