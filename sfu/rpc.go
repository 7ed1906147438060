package sfu

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/utils/guid"
	"github.com/twitchtv/twirp"
	"google.golang.org/protobuf/proto"
)

// RoomService.PerformRpc: the server calls a method of one participant's
// client over the data channel, as livekit-server does. The request goes
// out as a reliable DataPacket rpc_request {id, method, payload,
// response_timeout_ms, version 1} whose sender identity is the request id
// (clients answer "the caller", which names nobody in the room); the client
// acknowledges (rpc_ack) and answers (rpc_response) to that identity, and
// the SFU takes both from that participant's data channel instead of
// routing them. Without an ack within rpcAckTimeout the call fails as a
// connection timeout, without an answer within the response timeout
// (default 15 s) as a response timeout; an answer from any other
// participant resolves nothing.

// Limits and timeouts of server calls (livekit/protocol utils).
const (
	rpcMaxPayload       = 15360
	rpcDefaultTimeout   = 15 * time.Second
	rpcMaxTimeout       = 5 * time.Minute
	rpcMaxPending       = 64 // per participant
	rpcVersion          = 1
	rpcErrConnTimeout   = 1501
	rpcErrRespTimeout   = 1502
	rpcErrDisconnected  = 1503
	rpcErrRespTooLarge  = 1504
	rpcErrUnsupportedFn = 1400
	rpcErrReqTooLarge   = 1402
)

// rpcAckTimeout is how long the client has to acknowledge (variable for
// tests).
var rpcAckTimeout = 7 * time.Second

// rpcResult is a call's outcome: the payload, or an RPC error.
type rpcResult struct {
	payload string
	err     *livekit.RpcError
}

// pendingRPC is a server call waiting for its client.
type pendingRPC struct {
	acked bool
	done  chan rpcResult // buffered 1; the first outcome wins
}

// rpcState is a participant's server calls in flight.
type rpcState struct {
	mu      sync.Mutex
	pending map[string]*pendingRPC
}

func (st *rpcState) finish(id string, res rpcResult) bool {
	st.mu.Lock()
	c := st.pending[id]
	delete(st.pending, id)
	st.mu.Unlock()
	if c == nil {
		return false
	}
	c.done <- res
	return true
}

// failAll ends every call in flight (the participant left).
func (st *rpcState) failAll(code uint32, msg string) {
	st.mu.Lock()
	calls := st.pending
	st.pending = nil
	st.mu.Unlock()
	for _, c := range calls {
		c.done <- rpcResult{err: &livekit.RpcError{Code: code, Message: msg}}
	}
}

// performRPC calls method on p's client and waits for its answer, ctx's
// end or the timeouts.
func (p *Participant) performRPC(ctx context.Context, method, payload string, timeout time.Duration) (string, error) {
	res, outcome, err := p.callClient(ctx, method, payload, timeout)
	if outcome != "" {
		p.s.metrics.rpcCalls.WithLabelValues(outcome).Inc()
		p.log.Debug().Str("method", method).Str("outcome", outcome).Msg("server call to the client")
	}
	return res, err
}

// callClient is performRPC; it also returns the outcome for the metric
// ("" for a request refused before it was a call).
func (p *Participant) callClient(ctx context.Context, method, payload string, timeout time.Duration) (string, string, error) {
	if method == "" {
		return "", "", twirp.RequiredArgumentError("method")
	}
	if len(payload) > rpcMaxPayload {
		return "", "refused", rpcTwirpError(&livekit.RpcError{Code: rpcErrReqTooLarge, Message: "Request payload too large"})
	}
	if timeout <= 0 {
		timeout = rpcDefaultTimeout
	}
	timeout = min(timeout, rpcMaxTimeout)
	id := guid.New("RPC_")
	call := &pendingRPC{done: make(chan rpcResult, 1)}
	st := &p.rpc
	st.mu.Lock()
	if p.isClosed() {
		st.mu.Unlock()
		return "", "gone", rpcTwirpError(&livekit.RpcError{Code: rpcErrDisconnected, Message: "Recipient disconnected"})
	}
	if len(st.pending) >= rpcMaxPending {
		st.mu.Unlock()
		return "", "refused", twirp.NewError(twirp.ResourceExhausted, fmt.Sprintf("%d calls to the participant are in flight already", rpcMaxPending))
	}
	if st.pending == nil {
		st.pending = map[string]*pendingRPC{}
	}
	st.pending[id] = call
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		delete(st.pending, id)
		st.mu.Unlock()
	}()

	b, err := proto.Marshal(&livekit.DataPacket{
		Kind:                livekit.DataPacket_RELIABLE,
		ParticipantIdentity: id,
		Value: &livekit.DataPacket_RpcRequest{RpcRequest: &livekit.RpcRequest{
			Id: id, Method: method, Payload: payload, ResponseTimeoutMs: uint32(timeout / time.Millisecond), Version: rpcVersion,
		}},
	})
	if err != nil {
		return "", "", twirp.InternalErrorWith(err)
	}
	p.sendData(dataReliable, b)

	ack := time.NewTimer(rpcAckTimeout)
	defer ack.Stop()
	resp := time.NewTimer(timeout)
	defer resp.Stop()
	for {
		select {
		case r := <-call.done:
			switch {
			case r.err == nil:
				return r.payload, "answered", nil
			case r.err.GetCode() == rpcErrDisconnected:
				return "", "gone", rpcTwirpError(r.err)
			}
			return "", "error", rpcTwirpError(r.err)
		case <-ack.C:
			st.mu.Lock()
			acked := call.acked
			st.mu.Unlock()
			if !acked {
				return "", "timeout", rpcTwirpError(&livekit.RpcError{Code: rpcErrConnTimeout, Message: "Connection timeout"})
			}
		case <-resp.C:
			return "", "timeout", rpcTwirpError(&livekit.RpcError{Code: rpcErrRespTimeout, Message: "Response timeout"})
		case <-ctx.Done():
			return "", "canceled", twirp.NewError(twirp.Canceled, ctx.Err().Error())
		}
	}
}

// onRPCReply takes an rpc_ack or rpc_response p sent for a server call it
// received; it reports whether the packet was one (it is then not routed).
func (p *Participant) onRPCReply(dp *livekit.DataPacket) bool {
	st := &p.rpc
	switch v := dp.GetValue().(type) {
	case *livekit.DataPacket_RpcAck:
		st.mu.Lock()
		c := st.pending[v.RpcAck.GetRequestId()]
		if c != nil {
			c.acked = true
		}
		st.mu.Unlock()
		return c != nil
	case *livekit.DataPacket_RpcResponse:
		r := v.RpcResponse
		res := rpcResult{}
		switch {
		case r.GetError() != nil:
			res.err = r.GetError()
		case len(r.GetPayload()) > rpcMaxPayload:
			res.err = &livekit.RpcError{Code: rpcErrRespTooLarge, Message: "Response payload too large"}
		default:
			res.payload = r.GetPayload()
		}
		return st.finish(r.GetRequestId(), res)
	}
	return false
}

// rpcTwirpError is an RPC error as livekit-server's Twirp answers it (the
// psrpc code of the RPC error code, the message "RpcError <code>: …").
func rpcTwirpError(e *livekit.RpcError) error {
	code := twirp.Internal
	switch e.GetCode() {
	case rpcErrConnTimeout, rpcErrRespTimeout:
		code = twirp.Canceled
	case rpcErrDisconnected:
		code = twirp.Unavailable
	case rpcErrRespTooLarge, rpcErrReqTooLarge:
		code = twirp.Malformed
	case rpcErrUnsupportedFn:
		code = twirp.InvalidArgument
	case 1401: // recipient not found
		code = twirp.NotFound
	case 1403, 1404: // unsupported server, version
		code = twirp.Unimplemented
	}
	msg := fmt.Sprintf("RpcError %d: %s", e.GetCode(), e.GetMessage())
	if e.GetData() != "" {
		msg += ": " + e.GetData()
	}
	return twirp.NewError(code, msg)
}
