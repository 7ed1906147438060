package sfu

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // RFC 5389 long-term credentials and the TURN REST API are defined on HMAC-SHA1.
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// TURN credentials follow the TURN REST API draft
// (draft-uberti-behave-turn-rest-00 §2.2), as coturn's use-auth-secret
// and LiveKit do: username = "<unix expiry>:<identity>", password =
// base64(HMAC-SHA1(secret, username)). Nothing is stored per credential;
// the server recomputes the password from the username it is given.

// turnCredential derives the credential of identity valid until expiry.
func turnCredential(secret []byte, identity string, expiry time.Time) (username, password string) {
	username = strconv.FormatInt(expiry.Unix(), 10) + ":" + identity
	return username, turnPassword(secret, username)
}

// turnPassword is base64(HMAC-SHA1(secret, username)).
func turnPassword(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// parseTURNUsername splits "<expiry>:<identity>". The identity is
// everything after the first colon: Matrix-derived identities contain
// colons themselves ("@alice:example.org:DEVICE").
func parseTURNUsername(username string) (expiry time.Time, identity string, ok bool) {
	ts, id, found := strings.Cut(username, ":")
	if !found || id == "" {
		return time.Time{}, "", false
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, "", false
	}
	return time.Unix(sec, 0), id, true
}
