package focus

import (
	"context"
	"errors"
	"fmt"
	"html"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/gxfs-conf/gxconf/credentials"
)

// RoomInfo is what the credential policy needs to know about a Matrix room
// beyond membership; the appservice implements it from the room state.
type RoomInfo interface {
	// RoomPolicy is the de.gxconf.access policy in force; nil means none.
	RoomPolicy(ctx context.Context, roomID string) (*credentials.AccessPolicy, error)
	// RoomEncrypted tells whether calls in the room are end-to-end encrypted.
	RoomEncrypted(ctx context.Context, roomID string) (bool, error)
}

// CredentialAccess decides token requests with the credentials verifier: the
// room's access policy, the user's attestations and the Rego policy. A user
// who lacks a credential gets a presentation request: its link is in the 403
// message and the bot sends it by direct message.
type CredentialAccess struct {
	verifier     *credentials.Verifier
	rooms        RoomInfo
	msg          Messenger
	siteApproved bool
	log          zerolog.Logger
	now          func() time.Time

	mu      sync.Mutex
	pending map[string]*credentials.Request // user|room → open request
}

// NewCredentialAccess builds the decider. siteApproved says whether the SFU
// runs on an approved site (vs-nfd rooms need it); msg may be nil.
func NewCredentialAccess(v *credentials.Verifier, rooms RoomInfo, msg Messenger, siteApproved bool, log zerolog.Logger) *CredentialAccess {
	return &CredentialAccess{
		verifier: v, rooms: rooms, msg: msg, siteApproved: siteApproved, log: log,
		now: time.Now, pending: make(map[string]*credentials.Request),
	}
}

// Decide applies the room's policy. Every decision is written to the
// credentials audit log by the verifier.
func (c *CredentialAccess) Decide(ctx context.Context, req AccessRequest) (AccessDecision, error) {
	policy, err := c.rooms.RoomPolicy(ctx, req.RoomID)
	switch {
	case errors.Is(err, credentials.ErrInvalidPolicy):
		// The room's admins set a policy that does not parse: refuse rather
		// than treat the room as having none.
		c.log.Warn().Err(err).Str("room_id", req.RoomID).Msg("Refused a token: the room's access policy is invalid")
		return AccessDecision{}, &DeniedError{Reason: "This room's access policy (" + credentials.AccessEventType +
			") is invalid, so nobody can be admitted; a room admin must correct it."}
	case err != nil:
		return AccessDecision{}, fmt.Errorf("%w: %w", ErrRoomStateUnknown, err)
	}
	facts := credentials.RoomFacts{ID: req.RoomID, SiteApproved: c.siteApproved}
	if policy != nil {
		if facts.E2EE, err = c.rooms.RoomEncrypted(ctx, req.RoomID); err != nil {
			return AccessDecision{}, err
		}
		if policy.MaxParticipants > 0 && req.Participants != nil {
			if facts.Participants, err = req.Participants(ctx); err != nil {
				return AccessDecision{}, fmt.Errorf("failed to count participants: %w", err)
			}
		}
	}
	d, err := c.verifier.Authorize(ctx, credentials.AccessRequest{UserID: req.UserID, Policy: policy, Room: facts})
	if err != nil {
		return AccessDecision{}, fmt.Errorf("failed to decide access: %w", err)
	}
	if d.Allow {
		c.forget(req.UserID, req.RoomID)
		dec := AccessDecision{NotAfter: d.ExpiresAt, Level: credentials.LevelPublic}
		if policy != nil {
			dec.Level = policy.Level
		}
		if policy != nil && policy.MaxParticipants > 0 {
			dec.MaxParticipants = uint32(policy.MaxParticipants)
		}
		return dec, nil
	}
	reason := "Access denied: " + strings.Join(d.Reasons, "; ") + "."
	if len(d.Missing) > 0 {
		pr, err := c.presentationRequest(ctx, req.UserID, req.RoomID, d.Missing)
		if err != nil {
			c.log.Warn().Err(err).Str("user_id", req.UserID).Str("room_id", req.RoomID).Msg("Failed to create a presentation request")
		} else {
			reason += " Present it with your wallet: " + pr.PageURL
		}
	}
	return AccessDecision{}, &DeniedError{Reason: reason}
}

// presentationRequest returns the user's open request for the room, or
// creates one and sends it by direct message. One request per user and room
// is open at a time, so retries do not flood the user with messages. A
// request that was answered (and refused: a wrong credential picked in the
// wallet) is no longer open: the user gets a new one to try again with.
func (c *CredentialAccess) presentationRequest(ctx context.Context, userID, roomID string, missing []credentials.CredentialRequirement) (*credentials.Request, error) {
	key := userID + "|" + roomID
	c.mu.Lock()
	pr, ok := c.pending[key]
	ok = ok && c.now().Add(30*time.Second).Before(pr.ExpiresAt)
	c.mu.Unlock()
	if ok {
		unused, err := c.verifier.RequestUnused(ctx, pr.ID)
		if err != nil {
			return nil, err
		}
		if unused {
			return pr, nil
		}
	}
	pr, err := c.verifier.CreateRequest(ctx, userID, roomID, "call")
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.pending[key] = pr
	for k, p := range c.pending {
		if c.now().After(p.ExpiresAt) {
			delete(c.pending, k)
		}
	}
	c.mu.Unlock()
	if c.msg != nil {
		var types []string
		for _, m := range missing {
			types = append(types, m.Type)
		}
		text := fmt.Sprintf("To join calls in %s you need to present %s from your wallet. Open %s (or scan its QR code), or give your wallet this link: %s — it is valid until %s.",
			roomID, strings.Join(types, " and "), pr.PageURL, pr.Link, pr.ExpiresAt.UTC().Format(time.RFC3339))
		htmlText := fmt.Sprintf(`To join calls in %s you need to present <b>%s</b> from your wallet. <a href="%s">Open the verification page</a> (QR code), or give your wallet <a href="%s">this link</a>. Valid until %s.`,
			html.EscapeString(roomID), html.EscapeString(strings.Join(types, " and ")), html.EscapeString(pr.PageURL), html.EscapeString(pr.Link), pr.ExpiresAt.UTC().Format(time.RFC3339))
		if err := c.msg.DirectMessage(ctx, userID, text, htmlText); err != nil {
			c.log.Warn().Err(err).Str("user_id", userID).Msg("Failed to send the presentation request")
		}
	}
	return pr, nil
}

func (c *CredentialAccess) forget(userID, roomID string) {
	c.mu.Lock()
	delete(c.pending, userID+"|"+roomID)
	c.mu.Unlock()
}
