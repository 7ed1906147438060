package loadtest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

// Layer describes one simulcast layer of the synthetic video.
type Layer struct {
	Quality    livekit.VideoQuality
	Width      uint16
	Height     uint16
	FrameBytes int // bytes per inter frame; key frames are 3x
}

// DefaultLayers are q/h/f at 180p/360p/720p with frame sizes that give
// about 150 kbit/s, 500 kbit/s and 1.7 Mbit/s at 30 fps.
func DefaultLayers() []Layer {
	return []Layer{
		{Quality: livekit.VideoQuality_LOW, Width: 320, Height: 180, FrameBytes: 600},
		{Quality: livekit.VideoQuality_MEDIUM, Width: 640, Height: 360, FrameBytes: 2000},
		{Quality: livekit.VideoQuality_HIGH, Width: 1280, Height: 720, FrameBytes: 7000},
	}
}

// PublishOptions configure a synthetic publisher.
type PublishOptions struct {
	Audio      bool
	Video      bool
	Layers     []Layer       // default DefaultLayers()
	FPS        int           // default 30
	KeyEvery   time.Duration // periodic key frame; default 2 s (plus one per PLI)
	AudioBytes int           // bytes per 20 ms audio frame; default 80
}

func (o *PublishOptions) defaults() {
	if len(o.Layers) == 0 {
		o.Layers = DefaultLayers()
	}
	if o.FPS <= 0 {
		o.FPS = 30
	}
	if o.KeyEvery <= 0 {
		o.KeyEvery = 2 * time.Second
	}
	if o.AudioBytes <= 0 {
		o.AudioBytes = 80
	}
}

// RID returns the simulcast RID of a quality: q, h or f.
func RID(q livekit.VideoQuality) string {
	switch q {
	case livekit.VideoQuality_LOW:
		return "q"
	case livekit.VideoQuality_MEDIUM:
		return "h"
	default:
		return "f"
	}
}

// VideoMarker and AudioMarker name the synthetic streams of a publisher.
func VideoMarker(identity string, q livekit.VideoQuality) string { return identity + "/" + RID(q) }

// AudioMarker names a publisher's synthetic audio stream.
func AudioMarker(identity string) string { return identity + "/audio" }

// Publisher writes synthetic audio and simulcast VP8 into a room until
// Stop is called.
type Publisher struct {
	identity string
	opts     PublishOptions
	audio    *lksdk.LocalTrack
	video    []*lksdk.LocalTrack
	wantKey  []atomic.Bool
	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once

	AudioPub *lksdk.LocalTrackPublication
	VideoPub *lksdk.LocalTrackPublication
}

// StartPublisher publishes the tracks on room and starts writing.
func StartPublisher(room *lksdk.Room, opts PublishOptions) (*Publisher, error) {
	opts.defaults()
	p := &Publisher{identity: room.LocalParticipant.Identity(), opts: opts, stop: make(chan struct{})}
	if opts.Audio {
		t, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
		if err != nil {
			return nil, fmt.Errorf("failed to create audio track: %w", err)
		}
		pub, err := room.LocalParticipant.PublishTrack(t, &lksdk.TrackPublicationOptions{Name: "microphone", Source: livekit.TrackSource_MICROPHONE})
		if err != nil {
			return nil, fmt.Errorf("failed to publish audio: %w", err)
		}
		p.audio, p.AudioPub = t, pub
	}
	if opts.Video {
		simID := fmt.Sprintf("TR_sim_%s_%d", p.identity, time.Now().UnixNano())
		p.wantKey = make([]atomic.Bool, len(opts.Layers))
		for i, l := range opts.Layers {
			i := i
			t, err := lksdk.NewLocalTrack(
				webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
				lksdk.WithSimulcast(simID, &livekit.VideoLayer{Quality: l.Quality, Width: uint32(l.Width), Height: uint32(l.Height)}),
				lksdk.WithRTCPHandler(func(pk rtcp.Packet) {
					switch pk.(type) {
					case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
						p.wantKey[i].Store(true)
					}
				}),
			)
			if err != nil {
				return nil, fmt.Errorf("failed to create video layer: %w", err)
			}
			p.video = append(p.video, t)
		}
		pub, err := room.LocalParticipant.PublishSimulcastTrack(p.video, &lksdk.TrackPublicationOptions{Name: "camera", Source: livekit.TrackSource_CAMERA})
		if err != nil {
			return nil, fmt.Errorf("failed to publish video: %w", err)
		}
		p.VideoPub = pub
		for i := range p.wantKey {
			p.wantKey[i].Store(true)
		}
	}
	if p.audio != nil {
		p.wg.Add(1)
		go p.writeAudio()
	}
	if len(p.video) > 0 {
		p.wg.Add(1)
		go p.writeVideo()
	}
	return p, nil
}

// Stop ends the writers and waits for them.
func (p *Publisher) Stop() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}

func (p *Publisher) writeAudio() {
	defer p.wg.Done()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	marker := AudioMarker(p.identity)
	var seq uint32
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		seq++
		_ = p.audio.WriteSample(media.Sample{Data: AudioFrame(marker, seq, p.opts.AudioBytes), Duration: 20 * time.Millisecond}, nil)
	}
}

func (p *Publisher) writeVideo() {
	defer p.wg.Done()
	frameDur := time.Second / time.Duration(p.opts.FPS)
	tick := time.NewTicker(frameDur)
	defer tick.Stop()
	markers := make([]string, len(p.opts.Layers))
	for i, l := range p.opts.Layers {
		markers[i] = VideoMarker(p.identity, l.Quality)
	}
	var seq uint32
	lastKey := time.Now()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		seq++
		periodic := time.Since(lastKey) >= p.opts.KeyEvery
		if periodic {
			lastKey = time.Now()
		}
		for i, l := range p.opts.Layers {
			key := periodic || p.wantKey[i].Swap(false)
			size := l.FrameBytes
			if key {
				size *= 3
			}
			frame := VP8Frame(key, l.Width, l.Height, markers[i], seq, size)
			_ = p.video[i].WriteSample(media.Sample{Data: frame, Duration: frameDur}, nil)
		}
	}
}
