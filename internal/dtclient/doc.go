// Package dtclient is a bare LiveKit client of data tracks for tests: it
// joins over a WebSocket (livekit-client's /rtc/v1 join request with one
// peer connection, or /rtc with two), opens the _data_track channel as
// livekit-client does, and lets a test publish, subscribe, send and read
// data track packets and signal messages. It is imported by tests only.
package dtclient
