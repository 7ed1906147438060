package sfu

import (
	"strings"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
)

// Dynacast: a simulcast publisher is told which layers anybody wants
// (subscribed_quality_update), so unwatched layers are not encoded, sent
// or received. Layers up to the highest one wanted stay on; an upgrade is
// sent at once, a downgrade only after it held for dynacastDowngradeDelay.
// The lowest layer always stays on so a new subscriber starts at once.

const dynacastDowngradeDelay = 3 * time.Second

// desiredLayer is the layer the downtrack would forward given enough
// layers: -1 when disabled.
func (dt *downTrack) desiredLayer() int32 {
	if dt.disabled.Load() {
		return -1
	}
	return min(dt.pref.Load(), dt.bweCap.Load())
}

// dynacast re-evaluates the wanted layers; immediate only applies
// upgrades (downgrades wait for the periodic call).
func (t *publishedTrack) dynacast(now time.Time) {
	if t.relay.onWant != nil {
		t.relayWant() // relayed track: the origin runs dynacast
		return
	}
	if t.kind != webrtc.RTPCodecTypeVideo {
		return
	}
	need := max(0, t.relayNeed())
	for _, dt := range *t.dts.Load() {
		need = max(need, dt.desiredLayer())
	}
	t.mu.Lock()
	if !t.simulcastLocked() || t.closed {
		t.mu.Unlock()
		return
	}
	switch {
	case need > t.dynMax:
		t.dynMax, t.dynLowerSince = need, time.Time{}
	case need < t.dynMax:
		if t.dynLowerSince.IsZero() {
			t.dynLowerSince = now
			t.mu.Unlock()
			return
		}
		if now.Sub(t.dynLowerSince) < dynacastDowngradeDelay {
			t.mu.Unlock()
			return
		}
		t.dynMax, t.dynLowerSince = need, time.Time{}
	default:
		t.dynLowerSince = time.Time{}
		t.mu.Unlock()
		return
	}
	upd := t.qualityUpdateLocked()
	t.mu.Unlock()
	t.owner.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_SubscribedQualityUpdate{SubscribedQualityUpdate: upd}})
}

func (t *publishedTrack) simulcastLocked() bool {
	return t.info.GetSimulcast() || len(t.info.GetLayers()) > 1
}

func (t *publishedTrack) qualityUpdateLocked() *livekit.SubscribedQualityUpdate {
	var qs []*livekit.SubscribedQuality
	for q := livekit.VideoQuality_LOW; q <= livekit.VideoQuality_HIGH; q++ {
		qs = append(qs, &livekit.SubscribedQuality{Quality: q, Enabled: int32(q) <= t.dynMax})
	}
	codec := strings.ToLower(strings.TrimPrefix(strings.ToLower(t.info.GetMimeType()), "video/"))
	return &livekit.SubscribedQualityUpdate{
		TrackSid:            t.sid,
		SubscribedQualities: qs,
		SubscribedCodecs:    []*livekit.SubscribedCodec{{Codec: codec, Qualities: qs}},
	}
}
