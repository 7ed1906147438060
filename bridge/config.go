package bridge

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Config is the bridge section of a node's configuration.
type Config struct {
	// NodeID identifies this node to its peers: always the cluster's node
	// id (set by gxconf, not configured).
	NodeID string `yaml:"-"`
	// Listen is the relay address (the IX interface): the HTTP signalling
	// listener; media uses UDP ports on the same IP. Empty: cluster.relay_address.
	Listen string `yaml:"listen"`
	// Secret is the cluster secret shared by all nodes, >= 32 bytes.
	Secret string `yaml:"secret"`
	// ConnectTimeout bounds establishing an association.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// MaxBitrate is the media budget of one association towards the peer
	// (bit/s; 0: unlimited): simulcast layers are chosen to fit it, the
	// lowest layer of every wanted track always crosses.
	MaxBitrate int64 `yaml:"max_bitrate"`

	// TestLinkLoss and TestLinkDelay impair the relay link for tests only
	// (this kernel has no netem): TestLinkLoss drops that fraction of the
	// relayed video packets this node sends (first transmissions, every
	// 1/TestLinkLoss-th; retransmissions and RTCP pass), TestLinkDelay
	// holds back every datagram this node sends on the relay. Refused
	// unless Testing.
	TestLinkLoss  float64       `yaml:"test_link_loss"`
	TestLinkDelay time.Duration `yaml:"test_link_delay"`
	// Testing is set when the process runs with GXCONF_TESTING=1 (not
	// configured).
	Testing bool `yaml:"-"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{ConnectTimeout: 10 * time.Second}
}

// Validate reports every problem, each named by its key.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("node_id: must be set"))
	}
	if len(c.Secret) < 32 {
		errs = append(errs, fmt.Errorf("secret: must be at least 32 bytes, got %d", len(c.Secret)))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %w", err))
	}
	if c.MaxBitrate < 0 {
		errs = append(errs, errors.New("max_bitrate: must not be negative"))
	}
	if c.TestLinkLoss < 0 || c.TestLinkLoss > 0.5 {
		errs = append(errs, fmt.Errorf("test_link_loss: must be within 0..0.5, got %g", c.TestLinkLoss))
	}
	if c.TestLinkDelay < 0 || c.TestLinkDelay > time.Second {
		errs = append(errs, fmt.Errorf("test_link_delay: must be within 0..1s, got %s", c.TestLinkDelay))
	}
	if (c.TestLinkLoss != 0 || c.TestLinkDelay != 0) && !c.Testing {
		errs = append(errs, errors.New("test_link_loss, test_link_delay: test-only, refused unless GXCONF_TESTING=1"))
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, errors.New("connect_timeout: must be positive"))
	}
	return errors.Join(errs...)
}
