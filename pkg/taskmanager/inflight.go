package taskmanager

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/exchange"
	"github.com/sluice-stream/sluice/pkg/runtime"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// channelKeys names a task's channels: its input gate's, by channel index, and its
// outputs', by output and channel index. Channel state is stored under these names, so a
// restore finds each channel again whatever its index.
type channelKeys struct {
	in  []exchange.ChannelKey
	out [][]exchange.ChannelKey
}

// channelStateFile is the file of a subtask's in-flight data inside its checkpoint.
const channelStateFile = "channels"

// writeChannelState writes the in-flight data of one unaligned checkpoint into one file
// and returns an entry per non-empty channel; nothing is written when all are empty.
func writeChannelState(ctx context.Context, files blobstore.StateFiles, keys channelKeys, cs runtime.ChannelState) ([]*sluicev1.ChannelState, error) {
	if cs.Bytes() == 0 {
		return nil, nil
	}
	w, err := files.Create(ctx, channelStateFile)
	if err != nil {
		return nil, err
	}
	var entries []*sluicev1.ChannelState
	var off int64
	var scratch []byte
	add := func(k exchange.ChannelKey, input bool, bufs [][]byte) error {
		if len(bufs) == 0 {
			return nil
		}
		e := &sluicev1.ChannelState{Edge: k.Edge, Producer: k.Producer, Consumer: k.Consumer, Input: input, Offset: off, Buffers: int32(len(bufs))}
		for _, b := range bufs {
			scratch = binary.AppendUvarint(scratch[:0], uint64(len(b)))
			if _, err := w.Write(scratch); err != nil {
				return err
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
			off += int64(len(scratch) + len(b))
		}
		e.Length = off - e.Offset
		entries = append(entries, e)
		return nil
	}
	for ch, bufs := range cs.Input {
		if len(bufs) == 0 {
			continue
		}
		if ch >= len(keys.in) {
			w.Abort()
			return nil, fmt.Errorf("in-flight data of input channel %d, which the task does not have", ch)
		}
		if err := add(keys.in[ch], true, bufs); err != nil {
			w.Abort()
			return nil, err
		}
	}
	for i, chans := range cs.Output {
		for ch, bufs := range chans {
			if i >= len(keys.out) || ch >= len(keys.out[i]) {
				w.Abort()
				return nil, fmt.Errorf("in-flight data of output %d channel %d, which the task does not have", i, ch)
			}
			if err := add(keys.out[i][ch], false, bufs); err != nil {
				w.Abort()
				return nil, err
			}
		}
	}
	f, err := w.Close()
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		e.File = f
	}
	return entries, nil
}

// errForeignChannel says restored in-flight data belongs to a channel the task does not
// have: the job's topology or parallelism changed since the unaligned checkpoint.
var errForeignChannel = errors.New("in-flight data of an unaligned checkpoint can restore only at the parallelism it was taken at")

// readChannelState reads the restored in-flight data of a task, verifying each file's
// size and checksum, and places each channel's buffers at its index.
func readChannelState(ctx context.Context, files blobstore.StateFiles, entries []*sluicev1.ChannelState, keys channelKeys) (*runtime.ChannelState, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	cs := &runtime.ChannelState{Input: make([][][]byte, len(keys.in)), Output: make([][][][]byte, len(keys.out))}
	for i := range keys.out {
		cs.Output[i] = make([][][]byte, len(keys.out[i]))
	}
	data := map[string][]byte{}
	for _, e := range entries {
		path := e.GetFile().GetPath()
		buf, ok := data[path]
		if !ok {
			r, err := files.Open(ctx, e.GetFile())
			if err != nil {
				return nil, err
			}
			buf = make([]byte, r.Size())
			_, err = r.ReadAt(buf, 0)
			r.Close()
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", path, err)
			}
			data[path] = buf
		}
		if e.GetOffset() < 0 || e.GetLength() < 0 || e.GetOffset()+e.GetLength() > int64(len(buf)) {
			return nil, fmt.Errorf("in-flight data of channel e%d/%d->%d lies outside %s", e.GetEdge(), e.GetProducer(), e.GetConsumer(), path)
		}
		bufs, err := splitBuffers(buf[e.GetOffset() : e.GetOffset()+e.GetLength()])
		if err != nil || len(bufs) != int(e.GetBuffers()) {
			return nil, fmt.Errorf("in-flight data of channel e%d/%d->%d in %s: %d buffers, want %d: corrupt", e.GetEdge(), e.GetProducer(), e.GetConsumer(), path, len(bufs), e.GetBuffers())
		}
		if !placeChannel(cs, keys, e, bufs) {
			return nil, fmt.Errorf("%w: channel e%d/%d->%d is not one of this task's", errForeignChannel, e.GetEdge(), e.GetProducer(), e.GetConsumer())
		}
	}
	return cs, nil
}

func placeChannel(cs *runtime.ChannelState, keys channelKeys, e *sluicev1.ChannelState, bufs [][]byte) bool {
	match := func(k exchange.ChannelKey) bool {
		return k.Edge == e.GetEdge() && k.Producer == e.GetProducer() && k.Consumer == e.GetConsumer()
	}
	if e.GetInput() {
		for ch, k := range keys.in {
			if match(k) {
				cs.Input[ch] = append(cs.Input[ch], bufs...)
				return true
			}
		}
		return false
	}
	for i, out := range keys.out {
		for ch, k := range out {
			if match(k) {
				cs.Output[i][ch] = append(cs.Output[i][ch], bufs...)
				return true
			}
		}
	}
	return false
}

// splitBuffers parses uvarint-length-prefixed buffers.
func splitBuffers(data []byte) ([][]byte, error) {
	var out [][]byte
	for len(data) > 0 {
		n, w := binary.Uvarint(data)
		if w <= 0 || uint64(len(data)-w) < n {
			return out, errors.New("broken buffer framing")
		}
		out = append(out, data[w:w+int(n)])
		data = data[w+int(n):]
	}
	return out, nil
}
