package meetings

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gxfs-conf/gxconf/internal/mxerr"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// DirectRooms finds (or creates) the bot's direct chat with a user; the
// appservice implements it, so meetings and the credential requests share it.
type DirectRooms interface {
	DirectRoom(ctx context.Context, userID string) (string, error)
}

// warning is a warning for the user about a failed homeserver request
// (what, then mxerr.Says), logged with the whole error.
func (s *Service) warning(err error, format string, args ...any) string {
	w := fmt.Sprintf(format, args...) + ": " + mxerr.Says(err)
	s.log.Warn().Err(err).Msg("Meeting: " + w)
	return w
}

// mautrixMatrix is Matrix over the bot's client-server API client.
type mautrixMatrix struct {
	cli *mautrix.Client
	dm  DirectRooms
}

// NewMatrix adapts the bot's mautrix client.
func NewMatrix(cli *mautrix.Client, dm DirectRooms) Matrix {
	return &mautrixMatrix{cli: cli, dm: dm}
}

func (m *mautrixMatrix) CreateRoom(ctx context.Context, req RoomRequest) (string, error) {
	state := make([]map[string]any, 0, len(req.InitialState))
	for _, s := range req.InitialState {
		state = append(state, map[string]any{"type": s.Type, "state_key": "", "content": s.Content})
	}
	body := map[string]any{
		"preset":                       "private_chat",
		"name":                         req.Name,
		"topic":                        req.Topic,
		"power_level_content_override": req.PowerLevels,
		"initial_state":                state,
	}
	var resp mautrix.RespCreateRoom
	if _, err := m.cli.MakeRequest(ctx, http.MethodPost, m.cli.BuildClientURL("v3", "createRoom"), body, &resp); err != nil {
		return "", err
	}
	return resp.RoomID.String(), nil
}

func (m *mautrixMatrix) Invite(ctx context.Context, roomID, userID, reason string) error {
	_, err := m.cli.InviteUser(ctx, id.RoomID(roomID), &mautrix.ReqInviteUser{UserID: id.UserID(userID), Reason: reason})
	return err
}

func (m *mautrixMatrix) RefreshInvite(ctx context.Context, roomID, userID, reason string) error {
	_, err := m.cli.SendStateEvent(ctx, id.RoomID(roomID), event.StateMember, userID,
		map[string]any{"membership": string(event.MembershipInvite), "reason": reason})
	return err
}

func (m *mautrixMatrix) Memberships(ctx context.Context, roomID string) (map[string]string, error) {
	resp, err := m.cli.Members(ctx, id.RoomID(roomID))
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(resp.Chunk))
	for _, evt := range resp.Chunk {
		if evt.StateKey == nil {
			continue
		}
		ms, _ := evt.Content.Raw["membership"].(string)
		out[*evt.StateKey] = ms
	}
	return out, nil
}

func (m *mautrixMatrix) Kick(ctx context.Context, roomID, userID, reason string) error {
	_, err := m.cli.KickUser(ctx, id.RoomID(roomID), &mautrix.ReqKickUser{UserID: id.UserID(userID), Reason: reason})
	return err
}

func (m *mautrixMatrix) SendState(ctx context.Context, roomID, eventType, stateKey string, content any) error {
	_, err := m.cli.SendStateEvent(ctx, id.RoomID(roomID), event.Type{Type: eventType, Class: event.StateEventType}, stateKey, content)
	return err
}

func (m *mautrixMatrix) SendMessage(ctx context.Context, roomID string, content map[string]any) error {
	_, err := m.cli.SendMessageEvent(ctx, id.RoomID(roomID), event.EventMessage, content)
	return err
}

func (m *mautrixMatrix) SendSecretMessage(ctx context.Context, roomID string, content map[string]any) error {
	_, err := m.cli.MakeFullRequest(ctx, mautrix.FullRequest{
		Method:           http.MethodPut,
		URL:              m.cli.BuildClientURL("v3", "rooms", roomID, "send", event.EventMessage.Type, m.cli.TxnID()),
		RequestJSON:      content,
		SensitiveContent: true,
	})
	return err
}

func (m *mautrixMatrix) Upload(ctx context.Context, data []byte, contentType, fileName string) (string, error) {
	resp, err := m.cli.UploadBytesWithName(ctx, data, contentType, fileName)
	if err != nil {
		return "", err
	}
	return resp.ContentURI.String(), nil
}

func (m *mautrixMatrix) DirectRoom(ctx context.Context, userID string) (string, error) {
	if m.dm == nil {
		return "", fmt.Errorf("no direct chats")
	}
	return m.dm.DirectRoom(ctx, userID)
}

func (m *mautrixMatrix) Leave(ctx context.Context, roomID string) error {
	_, err := m.cli.LeaveRoom(ctx, id.RoomID(roomID))
	return err
}
