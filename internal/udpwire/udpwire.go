// Package udpwire is the datagram format of lbbench's UDP load: a request
// names its flow and itself, and the reply names the worker that answered.
// The flow id sits at a fixed offset, where a steering program can read
// it, as QUIC servers route by connection ID.
//
//	request  "LBQ1" flow(8) id(8) stamp(8)               28 bytes or more
//	reply    "LBP1" flow(8) id(8) stamp(8) pid(4) wid(4)  36 bytes
//
// Numbers are big-endian. The stamp is the client's, echoed.
package udpwire

import "encoding/binary"

// Sizes and offsets.
const (
	RequestSize = 28
	ReplySize   = 36
	// FlowOffset is where the flow id starts in the payload; its low 32
	// bits are at FlowOffset+4.
	FlowOffset = 4
)

var (
	requestMagic = [4]byte{'L', 'B', 'Q', '1'}
	replyMagic   = [4]byte{'L', 'B', 'P', '1'}
)

// Request is what a client sends.
type Request struct {
	Flow, ID, Stamp uint64
}

// Reply is what a worker answers.
type Reply struct {
	Request
	PID, Worker uint32
}

// PutRequest writes r into b (RequestSize bytes) and returns them.
func PutRequest(b []byte, r Request) []byte {
	b = b[:RequestSize]
	copy(b, requestMagic[:])
	binary.BigEndian.PutUint64(b[4:], r.Flow)
	binary.BigEndian.PutUint64(b[12:], r.ID)
	binary.BigEndian.PutUint64(b[20:], r.Stamp)
	return b
}

// ParseRequest reads a request; ok is false for a datagram that is too
// short or not ours.
func ParseRequest(b []byte) (r Request, ok bool) {
	if len(b) < RequestSize || [4]byte(b[:4]) != requestMagic {
		return r, false
	}
	return Request{binary.BigEndian.Uint64(b[4:]), binary.BigEndian.Uint64(b[12:]), binary.BigEndian.Uint64(b[20:])}, true
}

// AnswerInPlace turns the request in b into its reply, naming the worker,
// and returns the reply's bytes: it needs cap(b) >= ReplySize.
func AnswerInPlace(b []byte, pid, worker uint32) []byte {
	b = b[:ReplySize]
	copy(b, replyMagic[:])
	binary.BigEndian.PutUint32(b[28:], pid)
	binary.BigEndian.PutUint32(b[32:], worker)
	return b
}

// ParseReply reads a reply; ok is false for anything else.
func ParseReply(b []byte) (r Reply, ok bool) {
	if len(b) < ReplySize || [4]byte(b[:4]) != replyMagic {
		return r, false
	}
	r.Flow = binary.BigEndian.Uint64(b[4:])
	r.ID = binary.BigEndian.Uint64(b[12:])
	r.Stamp = binary.BigEndian.Uint64(b[20:])
	r.PID = binary.BigEndian.Uint32(b[28:])
	r.Worker = binary.BigEndian.Uint32(b[32:])
	return r, true
}
