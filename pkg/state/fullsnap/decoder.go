package fullsnap

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
)

// Visitor receives the records of a key group. Slices are valid only during the call.
// An error returned by a method stops the decoding and is returned as is.
type Visitor interface {
	Value(st int, key, ns, v []byte) error
	List(st int, key, ns, list []byte) error
	MapEntry(st int, key, ns, userKey, userValue []byte) error
	Timer(d state.TimeDomain, ts int64, key, ns []byte) error
}

// File is an open snapshot file: header and footer are read and checked.
type File struct {
	Header Header
	// Offsets holds the offset of each key group's section, as in the footer.
	Offsets     []int64
	r           io.ReaderAt
	size        int64
	footerStart int64
	br          *bufio.Reader
	bufs        [4][]byte
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", state.ErrCorrupt, fmt.Sprintf(format, args...))
}

// Open reads and checks the header and footer of the snapshot file in r (size bytes).
// Malformed input is an error wrapping state.ErrCorrupt.
func Open(r io.ReaderAt, size int64) (*File, error) {
	if size < int64(len(headMagic))+trailerLen {
		return nil, corrupt("file of %d bytes is too short", size)
	}
	var tr [trailerLen]byte
	if _, err := r.ReadAt(tr[:], size-trailerLen); err != nil {
		return nil, readErr(err)
	}
	if string(tr[12:]) != tailMagic {
		return nil, corrupt("bad trailer magic (truncated file?)")
	}
	footerStart := int64(binary.BigEndian.Uint64(tr[:8]))
	// The footer is a u32 count and 8 bytes per section, ending where the trailer starts.
	footerLen := size - trailerLen - footerStart
	if footerStart < 0 || footerLen < 4 || (footerLen-4)%8 != 0 || (footerLen-4)/8 > keygroup.UpperBound {
		return nil, corrupt("bad footer offset %d", footerStart)
	}
	footer := make([]byte, footerLen+8)
	if _, err := r.ReadAt(footer, footerStart); err != nil {
		return nil, readErr(err)
	}
	if crc32.Checksum(footer, castagnoli) != binary.BigEndian.Uint32(tr[8:12]) {
		return nil, corrupt("footer checksum mismatch")
	}
	n := int(binary.BigEndian.Uint32(footer))
	if int64(n) != (footerLen-4)/8 || n == 0 {
		return nil, corrupt("footer has %d sections in %d bytes", n, footerLen)
	}
	f := &File{r: r, size: size, footerStart: footerStart, Offsets: make([]int64, n)}
	prev := int64(len(headMagic))
	for i := range n {
		o := int64(binary.BigEndian.Uint64(footer[4+8*i:]))
		if o <= prev || (i > 0 && o-prev < minSection) {
			return nil, corrupt("section offsets not increasing at %d", i)
		}
		f.Offsets[i] = o
		prev = o
	}
	if footerStart-prev < minSection {
		return nil, corrupt("last section overlaps the footer")
	}
	if err := f.readHeader(); err != nil {
		return nil, err
	}
	if f.Header.KeyGroups.Len() != n {
		return nil, corrupt("header covers key groups %v but the footer has %d sections", f.Header.KeyGroups, n)
	}
	return f, nil
}

func readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return corrupt("unexpected end of file")
	}
	return err
}

func (f *File) readHeader() error {
	hl := f.Offsets[0]
	h := make([]byte, hl)
	if _, err := f.r.ReadAt(h, 0); err != nil {
		return readErr(err)
	}
	body, sum := h[:hl-4], h[hl-4:]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(sum) {
		return corrupt("header checksum mismatch")
	}
	if len(body) < 24 || string(body[:8]) != headMagic {
		return corrupt("bad header magic")
	}
	v := binary.BigEndian.Uint16(body[8:])
	if v != Version {
		return fmt.Errorf("fullsnap: unsupported format version %d (this build reads %d)", v, Version)
	}
	if flags := binary.BigEndian.Uint16(body[10:]); flags != 0 {
		return fmt.Errorf("fullsnap: unsupported format flags %#x", flags)
	}
	hd := Header{
		Version:        int(v),
		MaxParallelism: int(binary.BigEndian.Uint32(body[12:])),
		KeyGroups: keygroup.Range{
			Start: int(binary.BigEndian.Uint32(body[16:])),
			End:   int(binary.BigEndian.Uint32(body[20:])),
		},
	}
	if hd.MaxParallelism < 1 || hd.MaxParallelism > keygroup.UpperBound ||
		hd.KeyGroups.Len() == 0 || hd.KeyGroups.End >= hd.MaxParallelism {
		return corrupt("header has key groups %v of max parallelism %d", hd.KeyGroups, hd.MaxParallelism)
	}
	p := body[24:]
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)) {
		return corrupt("bad state count")
	}
	p = p[k:]
	names := map[string]bool{}
	for range n {
		if len(p) < 1 {
			return corrupt("state table truncated")
		}
		kind := state.Kind(p[0])
		l, k := binary.Uvarint(p[1:])
		if k <= 0 || l > uint64(len(p)-1-k) {
			return corrupt("state table truncated")
		}
		d := state.StateDesc{Name: string(p[1+k : 1+k+int(l)]), Kind: kind}
		if err := d.Validate(); err != nil || names[d.Name] {
			return corrupt("bad state table entry %q (kind %d)", d.Name, kind)
		}
		names[d.Name] = true
		hd.States = append(hd.States, d)
		p = p[1+k+int(l):]
	}
	if len(p) != 0 {
		return corrupt("%d stray bytes after the state table", len(p))
	}
	f.Header = hd
	return nil
}

// crcReader hashes what is read through it.
type crcReader struct {
	r   io.Reader
	crc uint32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc = crc32.Update(c.crc, castagnoli, p[:n])
	return n, err
}

// sectionDecoder parses one section; rem counts the bytes left before the CRC.
type sectionDecoder struct {
	br  *bufio.Reader
	rem int64
	kg  int
}

func (d *sectionDecoder) fail(what string) error {
	return corrupt("key group %d: %s", d.kg, what)
}

func (d *sectionDecoder) byte() (byte, error) {
	if d.rem < 1 {
		return 0, d.fail("section truncated")
	}
	b, err := d.br.ReadByte()
	if err != nil {
		return 0, d.fail("section truncated")
	}
	d.rem--
	return b, nil
}

func (d *sectionDecoder) uvarint() (uint64, error) {
	var x uint64
	var s uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := d.byte()
		if err != nil {
			return 0, err
		}
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				return 0, d.fail("varint overflow")
			}
			return x | uint64(b)<<s, nil
		}
		x |= uint64(b&0x7f) << s
		s += 7
	}
	return 0, d.fail("varint overflow")
}

func (d *sectionDecoder) fixed(buf []byte) error {
	if int64(len(buf)) > d.rem {
		return d.fail("section truncated")
	}
	if _, err := io.ReadFull(d.br, buf); err != nil {
		return d.fail("section truncated")
	}
	d.rem -= int64(len(buf))
	return nil
}

// bytes reads a length-prefixed field into *buf (grown as needed).
func (d *sectionDecoder) bytes(buf *[]byte) ([]byte, error) {
	n, err := d.uvarint()
	if err != nil {
		return nil, err
	}
	if n > uint64(d.rem) {
		return nil, d.fail(fmt.Sprintf("field of %d bytes exceeds the section", n))
	}
	if uint64(cap(*buf)) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	return b, d.fixed(b)
}

func (f *File) sectionEnd(i int) int64 {
	if i+1 < len(f.Offsets) {
		return f.Offsets[i+1]
	}
	return f.footerStart
}

// ReadKeyGroup decodes the section of kg (which must be in the header's range), calling
// v for each record; the section's CRC is checked at its end, so a corrupt section may
// have delivered records before the error.
func (f *File) ReadKeyGroup(kg int, v Visitor) error {
	if !f.Header.KeyGroups.Contains(kg) {
		return fmt.Errorf("fullsnap: key group %d not in file range %v", kg, f.Header.KeyGroups)
	}
	i := kg - f.Header.KeyGroups.Start
	start, end := f.Offsets[i], f.sectionEnd(i)
	cr := &crcReader{r: io.NewSectionReader(f.r, start, end-4-start)}
	if f.br == nil {
		// Size the buffer for the largest section, up to 64 KiB.
		size := int64(16)
		for j := range f.Offsets {
			size = max(size, f.sectionEnd(j)-f.Offsets[j])
		}
		f.br = bufio.NewReaderSize(cr, int(min(size, 64<<10)))
	} else {
		f.br.Reset(cr)
	}
	d := &sectionDecoder{br: f.br, rem: end - 4 - start, kg: kg}
	g, err := d.uvarint()
	if err != nil {
		return err
	}
	if g != uint64(kg) {
		return d.fail(fmt.Sprintf("section is labelled key group %d", g))
	}
	nStates := uint64(len(f.Header.States))
	var ts [8]byte
	for {
		rec, err := d.byte()
		if err != nil {
			return err
		}
		if rec == recEnd {
			break
		}
		switch rec {
		case recValue, recList, recMap:
			st, err := d.uvarint()
			if err != nil {
				return err
			}
			if st >= nStates {
				return d.fail(fmt.Sprintf("state index %d out of range", st))
			}
			kind := f.Header.States[st].Kind
			if !(rec == recValue && kind.IsValue() || rec == recList && kind == state.KindList || rec == recMap && kind == state.KindMap) {
				return d.fail(fmt.Sprintf("record type %d for %v state %q", rec, kind, f.Header.States[st].Name))
			}
			key, err := d.bytes(&f.bufs[0])
			if err != nil {
				return err
			}
			ns, err := d.bytes(&f.bufs[1])
			if err != nil {
				return err
			}
			a, err := d.bytes(&f.bufs[2])
			if err != nil {
				return err
			}
			switch rec {
			case recValue:
				err = v.Value(int(st), key, ns, a)
			case recList:
				if !state.ValidList(a) {
					return d.fail("malformed list")
				}
				err = v.List(int(st), key, ns, a)
			case recMap:
				var b []byte
				if b, err = d.bytes(&f.bufs[3]); err != nil {
					return err
				}
				err = v.MapEntry(int(st), key, ns, a, b)
			}
			if err != nil {
				return err
			}
		case recEventTime, recProcTime:
			if err := d.fixed(ts[:]); err != nil {
				return err
			}
			key, err := d.bytes(&f.bufs[0])
			if err != nil {
				return err
			}
			ns, err := d.bytes(&f.bufs[1])
			if err != nil {
				return err
			}
			dom := state.EventTime
			if rec == recProcTime {
				dom = state.ProcessingTime
			}
			if err := v.Timer(dom, int64(binary.BigEndian.Uint64(ts[:])), key, ns); err != nil {
				return err
			}
		default:
			return d.fail(fmt.Sprintf("unknown record type %d", rec))
		}
	}
	if d.rem != 0 {
		return d.fail(fmt.Sprintf("%d stray bytes after the end of the section", d.rem))
	}
	// Drain the reader so the CRC covers the whole section.
	if _, err := d.br.Peek(1); err != io.EOF {
		return d.fail("section longer than its records")
	}
	var sum [4]byte
	if _, err := f.r.ReadAt(sum[:], end-4); err != nil {
		return readErr(err)
	}
	if cr.crc != binary.BigEndian.Uint32(sum[:]) {
		return d.fail("section checksum mismatch")
	}
	return nil
}

// CheckOffsets reports whether offsets (from a KeyedStateHandle) match the file's.
func (f *File) CheckOffsets(offsets []int64) error {
	if len(offsets) != len(f.Offsets) {
		return corrupt("handle has %d key-group offsets, file has %d", len(offsets), len(f.Offsets))
	}
	for i, o := range offsets {
		if o != f.Offsets[i] {
			return corrupt("handle offset of key group %d is %d, file says %d", f.Header.KeyGroups.Start+i, o, f.Offsets[i])
		}
	}
	return nil
}
