package sfu

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/utils"
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

// Limits of server calls beyond livekit/protocol's (utils.DataChannelRpc*:
// payload size, default response timeout, ack latency, error codes).
const (
	rpcMaxPending = 64 // per participant
	rpcVersion    = 1
)

// MaxRPCResponseTimeout bounds the response timeout a PerformRpc request
// may ask for (a longer one is cut to it).
const MaxRPCResponseTimeout = 5 * time.Minute

// rpcAckTimeout is how long the client has to acknowledge (variable for
// tests).
var rpcAckTimeout = utils.DataChannelRpcMaxRoundTripLatency

// rpcResult is a call's outcome: the payload, or an RPC error.
type rpcResult struct {
	payload string
	err     *utils.DataChannelRpcError
}

// rpcError is a built-in RPC error.
func rpcError(code utils.DataChannelRpcErrorCode) *utils.DataChannelRpcError {
	return utils.DataChannelRpcErrorFromBuiltInCodes(code, "")
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

// failAll ends every call in flight with err (the participant left).
func (st *rpcState) failAll(err *utils.DataChannelRpcError) {
	st.mu.Lock()
	calls := st.pending
	st.pending = nil
	st.mu.Unlock()
	for _, c := range calls {
		c.done <- rpcResult{err: err}
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
	if len(payload) > utils.DataChannelRpcMaxPayloadBytes {
		return "", "refused", rpcTwirpError(rpcError(utils.DataChannelRpcRequestPayloadTooLarge))
	}
	if timeout <= 0 {
		timeout = utils.DataChannelRpcDefaultResponseTimeout
	}
	timeout = min(timeout, MaxRPCResponseTimeout)
	id := guid.New("RPC_")
	call := &pendingRPC{done: make(chan rpcResult, 1)}
	st := &p.rpc
	st.mu.Lock()
	if p.isClosed() {
		st.mu.Unlock()
		return "", "gone", rpcTwirpError(rpcError(utils.DataChannelRpcRecipientDisconnected))
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
			case r.err.Code == utils.DataChannelRpcRecipientDisconnected:
				return "", "gone", rpcTwirpError(r.err)
			}
			return "", "error", rpcTwirpError(r.err)
		case <-ack.C:
			st.mu.Lock()
			acked := call.acked
			st.mu.Unlock()
			if !acked {
				return "", "timeout", rpcTwirpError(rpcError(utils.DataChannelRpcConnectionTimeout))
			}
		case <-resp.C:
			return "", "timeout", rpcTwirpError(rpcError(utils.DataChannelRpcResponseTimeout))
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
			e := r.GetError()
			res.err = &utils.DataChannelRpcError{Code: utils.DataChannelRpcErrorCode(e.GetCode()), Message: e.GetMessage(), Data: e.GetData()}
		case len(r.GetPayload()) > utils.DataChannelRpcMaxPayloadBytes:
			res.err = rpcError(utils.DataChannelRpcResponsePayloadTooLarge)
		default:
			res.payload = r.GetPayload()
		}
		return st.finish(r.GetRequestId(), res)
	}
	return false
}

// rpcTwirpError is an RPC error as livekit-server's Twirp answers it: the
// psrpc code protocol gives the RPC error code, the message "RpcError
// <code>: …".
func rpcTwirpError(e *utils.DataChannelRpcError) error {
	var te twirp.Error
	if errors.As(e.PsrpcError(), &te) {
		return te
	}
	return twirp.InternalErrorWith(e)
}
