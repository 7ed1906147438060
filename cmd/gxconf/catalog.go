package main

import (
	"context"
	"errors"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/twitchtv/twirp"

	"github.com/gxfs-conf/gxconf/catalog"
	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/meetings"
)

// entitlements lets the focus call the catalog without importing it.
type entitlements struct{ c *catalog.Catalog }

func (e entitlements) Admit(ctx context.Context, req focus.EntitlementRequest) (focus.Entitlement, error) {
	a, err := e.c.Admit(ctx, catalog.AdmitRequest{
		RoomID: req.RoomID, UserID: req.UserID, ServerName: req.ServerName,
		LiveKitRoom: req.LiveKitRoom, Identity: req.Identity, Level: req.Level,
	})
	if err != nil {
		return focus.Entitlement{}, err
	}
	return focus.Entitlement{
		Refused: a.Refused, Booking: a.Booking, MaxParticipants: a.MaxParticipants, Sites: a.Sites, NotAfter: a.NotAfter,
	}, nil
}

// roomDirectory counts a single node's participants from its room service
// (the embedded SFU or a LiveKit server), for the catalog; a cluster uses
// its directory instead.
type roomDirectory struct{ rooms focus.RoomService }

func (d roomDirectory) Participants(ctx context.Context, room cluster.RoomName) ([]cluster.ParticipantEntry, error) {
	resp, err := d.rooms.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: string(room)})
	var terr twirp.Error
	if errors.As(err, &terr) && terr.Code() == twirp.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]cluster.ParticipantEntry, 0, len(resp.Participants))
	for _, p := range resp.Participants {
		out = append(out, cluster.ParticipantEntry{Room: room, Identity: cluster.ParticipantIdentity(p.Identity), SID: p.Sid})
	}
	return out, nil
}

// meetingBookings lets the meetings scheduler check and bind meetings
// against the catalogue's bookings (meetings.BookingChecker).
type meetingBookings struct{ c *catalog.Catalog }

func (m meetingBookings) CheckMeeting(ctx context.Context, req meetings.BookingRequest) (string, error) {
	if req.BookingRef == "" {
		if m.c.RequiresBooking() {
			return "", errors.New("this deployment runs calls only under a service booking: name one with booking=<id> (\"!conf bookings\" in a bound room shows its id)")
		}
		return "", nil
	}
	occ := make([][2]time.Time, len(req.Occurrences))
	for i, o := range req.Occurrences {
		occ[i] = [2]time.Time{o.Start, o.End}
	}
	if err := m.c.CheckMeeting(ctx, req.BookingRef, req.Organiser, req.Level, req.Participants, occ); err != nil {
		return "", err
	}
	return req.BookingRef, nil
}

func (m meetingBookings) BindRoom(ctx context.Context, ref, roomID, meetingID, organiser string) error {
	return m.c.BindMeetingRoom(ctx, ref, roomID, meetingID, organiser)
}
