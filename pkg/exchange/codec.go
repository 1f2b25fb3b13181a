package exchange

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// frameCodecName is the content-subtype of exchange streams.
const frameCodecName = "sluice-exchange"

func init() { encoding.RegisterCodecV2(frameCodec{}) }

// frameCodec is the proto codec, except that a consumer receives data frames into an
// inFrame: the data lands in a pooled Buffer in one copy, without allocating.
type frameCodec struct{}

func (frameCodec) Name() string { return frameCodecName }

func protoCodec() encoding.CodecV2 { return encoding.GetCodecV2(protocodec.Name) }

func (frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*outFrame)
	if !ok {
		return protoCodec().Marshal(v)
	}
	// Fields 4 (channel), 5 (kind), 6 (data): the same bytes proto.Marshal writes, but
	// the data is not copied: gRPC writes it from the exchange buffer and releases the
	// buffer (back to its pool) once written.
	hdr := make([]byte, 0, 24)
	if f.channel != 0 {
		hdr = protowire.AppendTag(hdr, 4, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, f.channel)
	}
	if f.buf.Kind != 0 {
		hdr = protowire.AppendTag(hdr, 5, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, uint64(f.buf.Kind))
	}
	if len(f.buf.Data) == 0 {
		f.buf.Recycle()
		return mem.BufferSlice{mem.SliceBuffer(hdr)}, nil
	}
	hdr = protowire.AppendTag(hdr, 6, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(len(f.buf.Data)))
	return mem.BufferSlice{mem.SliceBuffer(hdr), mem.NewBuffer(&f.buf.Data, (*releaser)(f.buf))}, nil
}

// outFrame is a data frame whose buffer the codec hands to gRPC without copying.
type outFrame struct {
	channel uint64
	buf     *Buffer
}

// releaser recycles an exchange buffer once gRPC freed its reference.
type releaser Buffer

func (r *releaser) Get(n int) *[]byte { b := make([]byte, n); return &b } // not called by gRPC
func (r *releaser) Put(*[]byte)       { (*Buffer)(r).Recycle() }

func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*inFrame)
	if !ok {
		return protoCodec().Unmarshal(data, v)
	}
	return f.decode(data)
}

// inFrame is a producer-to-consumer ExchangeFrame decoded straight into a pooled buffer.
type inFrame struct {
	pool    *Pool
	channel uint64
	kind    Kind
	buf     *Buffer // nil if the frame had no data field
	err     string
}

var errBadFrame = errors.New("exchange: malformed frame")

// cursor reads across the buffers of a BufferSlice.
type cursor struct {
	bufs mem.BufferSlice
	cur  []byte
}

func (c *cursor) next() bool {
	for len(c.cur) == 0 {
		if len(c.bufs) == 0 {
			return false
		}
		c.cur = c.bufs[0].ReadOnlyData()
		c.bufs = c.bufs[1:]
	}
	return true
}

func (c *cursor) varint() (uint64, error) {
	var x uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if !c.next() {
			return 0, errBadFrame
		}
		b := c.cur[0]
		c.cur = c.cur[1:]
		x |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return x, nil
		}
	}
	return 0, errBadFrame
}

// read appends n bytes to dst.
func (c *cursor) read(dst []byte, n int) ([]byte, error) {
	for n > 0 {
		if !c.next() {
			return dst, errBadFrame
		}
		k := min(n, len(c.cur))
		dst = append(dst, c.cur[:k]...)
		c.cur = c.cur[k:]
		n -= k
	}
	return dst, nil
}

func (c *cursor) skip(n int) error {
	for n > 0 {
		if !c.next() {
			return errBadFrame
		}
		k := min(n, len(c.cur))
		c.cur = c.cur[k:]
		n -= k
	}
	return nil
}

func (f *inFrame) decode(data mem.BufferSlice) error {
	*f = inFrame{pool: f.pool}
	c := cursor{bufs: data}
	for c.next() {
		tag, err := c.varint()
		if err != nil {
			return err
		}
		num, typ := tag>>3, tag&7
		switch typ {
		case 0: // varint
			x, err := c.varint()
			if err != nil {
				return err
			}
			switch num {
			case 4:
				f.channel = x
			case 5:
				f.kind = Kind(x)
			}
		case 2: // length-delimited
			n, err := c.varint()
			if err != nil {
				return err
			}
			switch num {
			case 6:
				b := f.buf
				if b == nil {
					b = f.pool.Get()
				}
				if int(n) > cap(b.Data)-len(b.Data) {
					grown := make([]byte, len(b.Data), len(b.Data)+int(n))
					copy(grown, b.Data)
					b.Data = grown
				}
				if b.Data, err = c.read(b.Data, int(n)); err != nil {
					b.Recycle()
					return err
				}
				f.buf = b
			case 7:
				s, err := c.read(nil, int(n))
				if err != nil {
					return err
				}
				f.err = string(s)
			default:
				if err := c.skip(int(n)); err != nil {
					return err
				}
			}
		case 1:
			if err := c.skip(8); err != nil {
				return err
			}
		case 5:
			if err := c.skip(4); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: wire type %d", errBadFrame, typ)
		}
	}
	return nil
}
