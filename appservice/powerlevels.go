package appservice

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/event"
)

// powerLevelFields are the integer members of m.room.power_levels.
var powerLevelFields = []string{"users_default", "events_default", "state_default", "invite", "kick", "ban", "redact"}

// decodePowerLevels reads m.room.power_levels content as the homeserver's
// auth rules do: only the members named exactly ("users", not "Users":
// encoding/json folds case, so a member that may send power levels could
// merge a "Users" map the homeserver never reads into the one it does and
// be taken here for the room's top level), and a level given as a string
// of an integer (room versions 1 to 9 allow it) as that integer (the
// whole event was ignored, the previous levels kept in force here).
func decodePowerLevels(raw json.RawMessage) (*event.PowerLevelsEventContent, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return nil, err
	}
	exact := map[string]any{}
	for _, name := range powerLevelFields {
		if v, ok := members[name]; ok {
			n, err := powerLevel(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			exact[name] = n
		}
	}
	for _, name := range []string{"users", "events"} {
		v, ok := members[name]
		if !ok {
			continue
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(v, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		levels := make(map[string]int, len(m))
		for key, lv := range m {
			n, err := powerLevel(lv)
			if err != nil {
				return nil, fmt.Errorf("%s[%q]: %w", name, key, err)
			}
			levels[key] = n
		}
		exact[name] = levels
	}
	if v, ok := members["notifications"]; ok {
		var n map[string]json.RawMessage
		if err := json.Unmarshal(v, &n); err == nil {
			if room, ok := n["room"]; ok {
				if lv, err := powerLevel(room); err == nil {
					exact["notifications"] = map[string]int{"room": lv}
				}
			}
		}
	}
	b, err := json.Marshal(exact)
	if err != nil {
		return nil, err
	}
	pl := &event.PowerLevelsEventContent{}
	if err := json.Unmarshal(b, pl); err != nil {
		return nil, err
	}
	return pl, nil
}

// powerLevel is a level: an integer, or a string holding one.
func powerLevel(v json.RawMessage) (int, error) {
	var n int
	if err := json.Unmarshal(v, &n); err == nil {
		return n, nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("not an integer power level: %.32s", v)
}
