# gxconf default room-access policy.
#
# Input (built by credentials.Engine):
#   user:           {id, server}
#   room:           {id, participants, e2ee, site_approved}
#   policy:         the room's de.gxconf.access content, with the level's
#                   mandatory credential types merged into required_credentials
#   level_defaults: the level's requirements (holder_binding, require_e2ee, …)
#   attestations:   [{federation, issuer, type, claims, holder_bound, verified_at, expires_at}]
#                   already filtered to those valid at this level and time
#   now:            Unix seconds
# Output: data.gxconf.access.decision = {allow, reasons[], missing[]}
package gxconf.access

import rego.v1

level := input.policy.level

defaults := input.level_defaults

servers := object.get(input.policy, "allowed_homeservers", [])

need_to_know := object.get(input.policy, "need_to_know", [])

required := object.get(input.policy, "required_credentials", [])

reasons contains msg if {
	defaults.require_allowed_servers
	count(servers) == 0
	msg := sprintf("level %s requires a list of allowed homeservers", [level])
}

reasons contains msg if {
	count(servers) > 0
	not input.user.server in servers
	msg := sprintf("homeserver %s is not allowed in this room", [input.user.server])
}

reasons contains msg if {
	defaults.require_e2ee
	not input.room.e2ee
	msg := sprintf("level %s requires end-to-end encryption in the room", [level])
}

reasons contains msg if {
	max := object.get(input.policy, "max_participants", 0)
	max > 0
	input.room.participants >= max
	msg := sprintf("the call is full (%d participants)", [max])
}

reasons contains msg if {
	defaults.require_need_to_know
	count(need_to_know) == 0
	msg := sprintf("level %s requires a need-to-know list", [level])
}

reasons contains msg if {
	count(need_to_know) > 0
	not input.user.id in need_to_know
	msg := sprintf("%s is not on the need-to-know list", [input.user.id])
}

reasons contains msg if {
	defaults.require_approved_site
	not input.room.site_approved
	msg := sprintf("level %s may only run on approved sites", [level])
}

missing contains req if {
	some req in required
	not satisfied(req)
}

reasons contains msg if {
	some req in missing
	msg := sprintf("missing credential %s%s", [req.type, federation_suffix(req)])
}

federation_suffix(req) := sprintf(" from federation %s", [req.federation]) if {
	object.get(req, "federation", "") != ""
} else := ""

satisfied(req) if {
	some a in input.attestations
	a.type == req.type
	federation_ok(req, a)
	holder_ok(a)
	every path, c in object.get(req, "claims", {}) {
		claim_ok(a.claims, path, c)
	}
}

federation_ok(req, _) if object.get(req, "federation", "") == ""

federation_ok(req, a) if req.federation == a.federation

holder_ok(_) if not defaults.holder_binding

holder_ok(a) if a.holder_bound

claim_ok(claims, path, c) if {
	"eq" in object.keys(c)
	object.get(claims, split(path, "."), null) == c.eq
}

claim_ok(claims, path, c) if {
	v := object.get(claims, split(path, "."), null)
	v != null
	v in object.get(c, "in", [])
}

decision := {
	"allow": count(reasons) == 0,
	"reasons": sort(reasons),
	"missing": [r | some r in missing],
}
