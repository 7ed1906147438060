package focus

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/rs/zerolog"

	"github.com/gxfs-conf/gxconf/cluster"
)

// clientIPKey carries the requester's address (after the trusted-proxy
// rules) from the HTTP edge to placement.
type clientIPKey struct{}

func withClientIP(ctx context.Context, ip string) context.Context {
	return context.WithValue(ctx, clientIPKey{}, ip)
}

func clientIPFrom(ctx context.Context) netip.Addr {
	s, _ := ctx.Value(clientIPKey{}).(string)
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return addr.Unmap()
}

// place chooses the SFU for a token request: the URL for the response and
// whether the room lives on this node (then the focus creates it here).
// Without a placer, it is the configured SFU, always local.
// sites, when set, are the only sites allowed (a service booking's).
func (s *Service) place(ctx context.Context, lkRoom, serverName string, sites []cluster.SiteID) (url string, local bool, err error) {
	if s.placer == nil {
		return s.cfg.SFU.URL, true, nil
	}
	p, err := s.placer.Place(ctx, cluster.PlacementRequest{
		Room: cluster.RoomName(lkRoom), ServerName: serverName, ClientIP: clientIPFrom(ctx), Sites: sites,
	})
	if err != nil {
		// cluster.ErrNoCapacity, cluster.ErrNoNodes, or no registry data.
		return "", false, fmt.Errorf("%w: %w", ErrNoCapacity, err)
	}
	zerolog.Ctx(ctx).UpdateContext(func(c zerolog.Context) zerolog.Context {
		return c.Str("node_id", string(p.Node.ID)).Str("site", string(p.Site))
	})
	if p.Fallback {
		zerolog.Ctx(ctx).Info().Str("home_site", string(p.HomeSite)).Msg("Placed on a fallback site")
	}
	return p.URL, string(p.Node.ID) == s.nodeID, nil
}
