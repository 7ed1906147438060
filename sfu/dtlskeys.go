package sfu

import (
	"fmt"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// DTLSKeys captures the DTLS-SRTP keying material of one DTLS connection
// through pion's public hooks, as the direct send path does (fastpath.go),
// for a component that runs its own SRTP over a pion DTLS transport (the
// bridge's relay). Only the DTLS server sees the Server Hello; the client
// gets its random, suite and profile from the server (SetServerHello) —
// public data, sent in clear in the handshake. The zero value is ready.
type DTLSKeys struct {
	k keyCapture
}

// Hook installs the capture on a setting engine; use that engine for one
// DTLS transport only.
func (d *DTLSKeys) Hook(se *webrtc.SettingEngine) {
	se.SetDTLSServerHelloMessageHook(d.k.serverHello)
	se.SetDTLSKeyLogWriter(&d.k)
}

// ServerHello returns what this side's Server Hello said (random, cipher
// suite, SRTP profile); ok is false unless this side was the DTLS server.
func (d *DTLSKeys) ServerHello() (random []byte, suite, profile uint16, ok bool) {
	d.k.mu.Lock()
	defer d.k.mu.Unlock()
	if len(d.k.serverRandom) != handshake.RandomLength || d.k.suite == 0 || d.k.profile == 0 {
		return nil, 0, 0, false
	}
	return append([]byte(nil), d.k.serverRandom...), uint16(d.k.suite), uint16(d.k.profile), true
}

// SetServerHello records the server's Hello on the DTLS client side.
func (d *DTLSKeys) SetServerHello(random []byte, suite, profile uint16) error {
	if len(random) != handshake.RandomLength {
		return fmt.Errorf("random: must be %d bytes, got %d", handshake.RandomLength, len(random))
	}
	if suite == 0 || profile == 0 {
		return fmt.Errorf("suite, profile: must be set")
	}
	d.k.mu.Lock()
	defer d.k.mu.Unlock()
	d.k.serverRandom = append([]byte(nil), random...)
	d.k.suite = dtls.CipherSuiteID(suite)
	d.k.profile = dtls.SRTPProtectionProfile(profile)
	return nil
}

// SRTPKeys are the SRTP master keys and salts of both directions of one
// DTLS-SRTP association (RFC 5764 §4.2). Its String never shows them.
type SRTPKeys struct {
	Profile               srtp.ProtectionProfile
	LocalKey, LocalSalt   []byte
	RemoteKey, RemoteSalt []byte
}

// String implements fmt.Stringer without the key material.
func (k SRTPKeys) String() string { return fmt.Sprintf("SRTPKeys{profile %#04x}", uint16(k.Profile)) }

// GoString implements fmt.GoStringer without the key material.
func (k SRTPKeys) GoString() string { return k.String() }

// SRTPKeys derives both directions' keys (isClient: this side was the DTLS
// client) and forgets the master secret.
func (d *DTLSKeys) SRTPKeys(isClient bool) (SRTPKeys, error) {
	profile, sk, err := d.k.sessionKeys(isClient)
	if err != nil {
		return SRTPKeys{}, err
	}
	return SRTPKeys{
		Profile:  profile,
		LocalKey: sk.LocalMasterKey, LocalSalt: sk.LocalMasterSalt,
		RemoteKey: sk.RemoteMasterKey, RemoteSalt: sk.RemoteMasterSalt,
	}, nil
}
