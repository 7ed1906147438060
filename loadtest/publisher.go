package loadtest

import (
	"context"
	"fmt"
	"io"
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
	// AudioVBR varies each audio frame's size between half and one and a
	// half times AudioBytes, as Opus's variable bitrate does (a fixed size
	// lets an SFU treat every publisher's audio packets as one size).
	AudioVBR bool
	// AudioLevel is sent as ssrc-audio-level (-dBov: 0 loudest, 127
	// silence); 0 means 127. Speech is about 20-40.
	AudioLevel uint8
	// OnRTCP, if set, sees the RTCP the SFU sends for each video layer
	// (index into Layers; -1 for audio), from the track's RTCP read
	// goroutine.
	OnRTCP func(layer int, pk rtcp.Packet)
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
	if o.AudioLevel == 0 || o.AudioLevel > 127 {
		o.AudioLevel = 127
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
		var topts []lksdk.LocalTrackOptions
		if opts.OnRTCP != nil {
			topts = append(topts, lksdk.WithRTCPHandler(func(pk rtcp.Packet) { opts.OnRTCP(-1, pk) }))
		}
		t, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, topts...)
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
					if opts.OnRTCP != nil {
						opts.OnRTCP(i, pk)
					}
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
	// lksdk's write worker paces the samples and honours dynacast (it
	// skips layers the server disabled).
	if p.audio != nil {
		p.wg.Add(1)
		if err := p.audio.StartWrite(&audioProvider{p: p, marker: AudioMarker(p.identity)}, writerDone(&p.wg)); err != nil {
			p.wg.Done()
			return nil, fmt.Errorf("failed to start audio: %w", err)
		}
	}
	for i, l := range opts.Layers {
		if i >= len(p.video) {
			break
		}
		p.wg.Add(1)
		vp := &videoProvider{p: p, i: i, layer: l, marker: VideoMarker(p.identity, l.Quality), lastKey: time.Now()}
		if err := p.video[i].StartWrite(vp, writerDone(&p.wg)); err != nil {
			p.wg.Done()
			return nil, fmt.Errorf("failed to start video: %w", err)
		}
	}
	return p, nil
}

// writerDone is a track writer's completion callback. lksdk calls it at
// the end of every write worker, and a full reconnect re-binds the track
// (republish), starting a second worker with the same callback: only the
// first call counts, or the WaitGroup goes negative and panics.
func writerDone(wg *sync.WaitGroup) func() { return sync.OnceFunc(wg.Done) }

// Stop ends the writers and waits for them.
func (p *Publisher) Stop() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}

// audioProvider produces 20 ms synthetic audio frames.
type audioProvider struct {
	lksdk.BaseSampleProvider
	p      *Publisher
	marker string
	seq    uint32
}

func (a *audioProvider) NextSample(context.Context) (media.Sample, error) {
	select {
	case <-a.p.stop:
		return media.Sample{}, io.EOF
	default:
	}
	a.seq++
	// lksdk writes the sample right after NextSample returns (it paces
	// afterwards), so now is the send time.
	size := a.p.opts.AudioBytes
	if a.p.opts.AudioVBR {
		size = vbrSize(size, a.seq)
	}
	return media.Sample{Data: AudioFrame(a.marker, a.seq, time.Now(), size), Duration: 20 * time.Millisecond}, nil
}

// vbrSize is frame seq's size for a mean of size bytes: spread evenly over
// [size/2, 3*size/2] by a hash of seq (publishers, which join at different
// times, send different sizes at any moment).
func vbrSize(size int, seq uint32) int {
	x := seq * 0x9e3779b1 // Fibonacci hashing: consecutive frames far apart
	x ^= x >> 15
	return size/2 + int(x%uint32(size+1))
}

// CurrentAudioLevel is sent in the ssrc-audio-level extension (-dBov,
// 127 silence).
func (a *audioProvider) CurrentAudioLevel() uint8 { return a.p.opts.AudioLevel }

// videoProvider produces the frames of one simulcast layer: a key frame
// every KeyEvery and after each PLI/FIR, inter frames otherwise.
type videoProvider struct {
	lksdk.BaseSampleProvider
	p       *Publisher
	i       int
	layer   Layer
	marker  string
	seq     uint32
	lastKey time.Time
}

func (v *videoProvider) NextSample(context.Context) (media.Sample, error) {
	select {
	case <-v.p.stop:
		return media.Sample{}, io.EOF
	default:
	}
	v.seq++
	now := time.Now()
	key := v.p.wantKey[v.i].Swap(false) || now.Sub(v.lastKey) >= v.p.opts.KeyEvery
	size := v.layer.FrameBytes
	if key {
		v.lastKey = now
		size *= 3
	}
	dur := time.Second / time.Duration(v.p.opts.FPS)
	return media.Sample{Data: VP8Frame(key, v.layer.Width, v.layer.Height, v.marker, v.seq, now, size), Duration: dur}, nil
}

// VideoLayer returns the local track of a simulcast layer, or nil.
func (p *Publisher) VideoLayer(q livekit.VideoQuality) *lksdk.LocalTrack {
	for i, l := range p.opts.Layers {
		if l.Quality == q && i < len(p.video) {
			return p.video[i]
		}
	}
	return nil
}
