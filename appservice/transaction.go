package appservice

import (
	"encoding/json"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/event"
)

// Transaction is the body of PUT /_matrix/app/v1/transactions/{txnId}. Only
// timeline/state events are used; ephemeral data is ignored.
type Transaction struct {
	Events []*event.Event `json:"events"`
}

// maxEventsPerTxn bounds the work one request can cause (Synapse sends at
// most 100, Dendrite 50).
const maxEventsPerTxn = 1000

// DecodeTransaction parses a transaction body. Events with a missing type,
// room or sender are dropped rather than failing the transaction, because a
// refused transaction blocks the homeserver's queue for the appservice.
func DecodeTransaction(body []byte) (*Transaction, error) {
	var raw struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("transaction is not JSON: %w", err)
	}
	if raw.Events == nil {
		return nil, errors.New(`events: missing (a transaction is {"events":[...]})`)
	}
	if len(raw.Events) > maxEventsPerTxn {
		return nil, fmt.Errorf("events: %d, more than %d", len(raw.Events), maxEventsPerTxn)
	}
	txn := &Transaction{Events: make([]*event.Event, 0, len(raw.Events))}
	for _, r := range raw.Events {
		var evt event.Event
		if err := json.Unmarshal(r, &evt); err != nil {
			continue
		}
		if evt.Type.Type == "" || evt.RoomID == "" || evt.Sender == "" {
			continue
		}
		if evt.StateKey != nil {
			evt.Type.Class = event.StateEventType
		} else {
			evt.Type.Class = event.MessageEventType
		}
		txn.Events = append(txn.Events, &evt)
	}
	return txn, nil
}
