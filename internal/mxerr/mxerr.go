package mxerr

import (
	"errors"

	"github.com/gxfs-conf/gxconf/internal/clip"
	"maunium.net/go/mautrix"
)

// MaxSays bounds the homeserver's message in what Says returns: another
// server's refusal (of an invite, say) comes back through ours.
const MaxSays = 200

// NoAnswer is what Says tells of an error that carries no Matrix error.
const NoAnswer = "the homeserver did not answer"

// Says is the homeserver's Matrix error code and message in err, clipped
// to MaxSays, or NoAnswer when err carries none (a transport error, a
// response that was not a Matrix error). The caller logs err whole.
func Says(err error) string {
	var he mautrix.HTTPError
	if !errors.As(err, &he) {
		var hp *mautrix.HTTPError
		if !errors.As(err, &hp) || hp == nil {
			return NoAnswer
		}
		he = *hp
	}
	if he.RespError == nil || he.RespError.ErrCode == "" {
		return NoAnswer
	}
	return clip.Text(he.RespError.ErrCode+": "+he.RespError.Err, MaxSays)
}
