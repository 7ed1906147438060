// Package strictjson decodes untrusted JSON — credentials, API bodies,
// control messages, cluster records, files — with one set of rules: a member
// name may appear only once per object (RFC 8259 §4 leaves duplicates to the
// implementation, and two implementations reading different values of one
// signed claim is a signature bypass), a member meant for a struct field is
// spelled exactly as the field's JSON name (encoding/json would also take
// "ROOM" or "ſtatus" for "room" or "status"), nesting is bounded by MaxDepth
// for every format, and nothing may follow the value. Numbers decode as
// float64, as with encoding/json into an interface.
package strictjson
