package config

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/gxfs-conf/gxconf/credentials"
)

// Peering is the `peering:` section: gxconf deployments of other
// federations that relay each other's rooms over the IX (issue 10). Both
// deployments configure each other with the same secret.
type Peering struct {
	// Name is this deployment's peer name, as the peers know it.
	Name string `yaml:"name"`
	// Peers are the peer deployments by their names.
	Peers map[string]PeerConfig `yaml:"peers"`
	// RelayAddresses are further addresses (host:port) peers reach this
	// node's relay by, beyond cluster.relay_address and bridge.listen: a
	// NAT's address on the IX, a host name. A peer's request is signed for
	// the address it was sent to and refused when that is none of them.
	RelayAddresses []string `yaml:"relay_addresses"`
}

// PeerConfig is one peer deployment.
type PeerConfig struct {
	// RelayAddress is the peer's bridge relay listener on the IX (host:port).
	RelayAddress string `yaml:"relay_address"`
	// URL is the peer's signalling URL, handed to its users for our rooms
	// it relays.
	URL string `yaml:"url"`
	// Homeservers are the homeservers whose users the peer serves.
	Homeservers []string `yaml:"homeservers"`
	// Levels are the confidentiality levels of our rooms the peer may
	// relay; vs-nfd only for a peer whose sites are approved for it.
	Levels []credentials.Level `yaml:"levels"`
	// Secret is shared with the peer (the same on both sides), >= 32
	// bytes; or SecretFile holds it.
	Secret     string `yaml:"secret"`
	SecretFile string `yaml:"secret_file"`
}

// Enabled tells whether peering is configured.
func (p *Peering) Enabled() bool { return p.Name != "" || len(p.Peers) > 0 }

// peerName: letters, digits and '-', as it goes into room names and keys
// (sfu.PeerRoomName splits at the first '.').
var peerName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// loadSecrets reads the secret files.
func (p *Peering) loadSecrets() Problems {
	var problems Problems
	for _, name := range slices.Sorted(maps.Keys(p.Peers)) {
		pc := p.Peers[name]
		if pc.SecretFile == "" {
			continue
		}
		if pc.Secret != "" {
			problems = append(problems, fmt.Sprintf("peering.peers.%s.secret_file: set secret or secret_file, not both", name))
			continue
		}
		b, err := os.ReadFile(pc.SecretFile)
		if err != nil {
			problems = append(problems, fmt.Sprintf("peering.peers.%s.secret_file: %v", name, err))
			continue
		}
		pc.Secret = strings.TrimRight(string(b), "\r\n")
		p.Peers[name] = pc
	}
	return problems
}

// Validate reports every problem, each by its key below peering.
func (p *Peering) Validate() error {
	if !p.Enabled() {
		return nil
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if !peerName.MatchString(p.Name) {
		bad("name", "must be 1-32 lower-case letters, digits or '-' (this deployment's peer name), got %q", p.Name)
	}
	if len(p.Peers) == 0 {
		bad("peers", "must name at least one peer deployment")
	}
	for i, a := range p.RelayAddresses {
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" {
			bad(fmt.Sprintf("relay_addresses[%d]", i), "must be host:port, an address peers reach this node's relay by, got %q", a)
		}
	}
	served := map[string]string{}
	// The signalling key is derived from the secret alone: two peers
	// sharing one could each sign as the other (the name a request
	// carries picks the key that checks it).
	secrets := map[string]string{}
	for _, n := range slices.Sorted(maps.Keys(p.Peers)) {
		pc := p.Peers[n]
		key := "peers." + n
		if !peerName.MatchString(n) {
			bad(key, "a peer name must be 1-32 lower-case letters, digits or '-'")
		} else if n == p.Name {
			bad(key, "names this deployment")
		}
		if _, _, err := net.SplitHostPort(pc.RelayAddress); err != nil || pc.RelayAddress == "" {
			bad(key+".relay_address", "must be the peer's relay address host:port on the IX, got %q", pc.RelayAddress)
		}
		if u, err := url.Parse(pc.URL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			bad(key+".url", "must be the peer's ws:// or wss:// signalling URL, got %q", pc.URL)
		}
		if len(pc.Homeservers) == 0 {
			bad(key+".homeservers", "must name the homeservers whose users the peer serves")
		}
		for _, hs := range pc.Homeservers {
			if hs == "" {
				bad(key+".homeservers", "must not contain an empty name")
			} else if other, dup := served[hs]; dup {
				bad(key+".homeservers", "%s is also served by peer %s", hs, other)
			} else {
				served[hs] = n
			}
		}
		if len(pc.Levels) == 0 {
			bad(key+".levels", "must list the levels of our rooms the peer may relay (public, kritis, vs-nfd)")
		}
		for _, l := range pc.Levels {
			if l.Rank() < 0 {
				bad(key+".levels", "must be public, kritis or vs-nfd, got %q", l)
			}
		}
		if len(pc.Secret) < 32 {
			bad(key+".secret", "must be at least 32 bytes (the same on both deployments; or secret_file), got %d", len(pc.Secret))
		} else if other, dup := secrets[pc.Secret]; dup {
			bad(key+".secret", "is the same as peers.%s's; every peer needs its own secret, or either peer could sign requests as the other", other)
		} else {
			secrets[pc.Secret] = n
		}
	}
	return errors.Join(errs...)
}

// TokenSecret is the secret of the tokens issuer signs for the relay of
// its rooms on the other deployment (API key sfu.PeerAPIKey(issuer)):
// HKDF-SHA256 of the peer secret, one per direction, never the signalling
// key.
func (pc PeerConfig) TokenSecret(issuer string) string {
	return base64.RawURLEncoding.EncodeToString(derive32(pc.Secret, "gxconf peering v1 token "+issuer))
}

// SignalKey authenticates relay signalling and grant checks between the
// two deployments (HKDF-SHA256 of the peer secret).
func (pc PeerConfig) SignalKey() []byte {
	return derive32(pc.Secret, "gxconf peering v1 relay signalling")
}

func derive32(secret, info string) []byte {
	k, err := hkdf.Key(sha256.New, []byte(secret), nil, info, 32)
	if err != nil {
		panic(err) // only for lengths beyond 255 hash sizes
	}
	return k
}
