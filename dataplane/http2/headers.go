package http2

import (
	"errors"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// headerBlock is a decoded header block: its HEADERS frame, and its fields, the pseudo-header
// fields first.
type headerBlock struct {
	*http2.HeadersFrame
	fields    []hpack.HeaderField
	pseudo    int  // how many of fields are pseudo-header fields
	truncated bool // past the header list size: the fields stop there
}

func (b *headerBlock) pseudoFields() []hpack.HeaderField  { return b.fields[:b.pseudo] }
func (b *headerBlock) regularFields() []hpack.HeaderField { return b.fields[b.pseudo:] }

// pseudoValue gives the pseudo-header field's value (name without its colon), "" if it has none.
func (b *headerBlock) pseudoValue(name string) string {
	for _, hf := range b.pseudoFields() {
		if hf.Name[1:] == name {
			return hf.Value
		}
	}
	return ""
}

// headerReader decodes a header block (a HEADERS frame and the CONTINUATION frames after it) into
// a headerBlock it reuses, checking it as x/net's Framer does with ReadMetaHeaders: field values
// and names, pseudo-header fields first and each once, the header list size (a block past it is
// truncated, and one far past it ends the connection). The Framer made a MetaHeadersFrame, a
// closure and a field slice grown by appends for every block: 10 of a request's 22 allocations.
// The block is valid until done.
type headerReader struct {
	dec     *hpack.Decoder
	maxList uint32 // the header list size (SETTINGS_MAX_HEADER_LIST_SIZE)
	b       headerBlock

	// The block being decoded.
	invalid        error  // the first invalid field's error
	sawRegular     bool   // a regular field came: pseudo-header fields may not follow
	remain, remTrl uint32 // what is left of the header list size, for fields and for trailer names
}

func newHeaderReader(maxList uint32) *headerReader {
	h := &headerReader{maxList: maxList}
	h.dec = hpack.NewDecoder(4096, h.emit)
	h.dec.SetMaxStringLength(int(min(maxList, 1<<30)))
	return h
}

// read decodes the block that hf begins, reading its CONTINUATION frames from fr. A malformed
// block is a stream error; one that cannot be decoded (the HPACK state is lost) or runs far past
// the header list size a connection error.
func (h *headerReader) read(fr *http2.Framer, hf *http2.HeadersFrame) (*headerBlock, error) {
	h.b = headerBlock{HeadersFrame: hf, fields: h.b.fields[:0]}
	h.invalid, h.sawRegular = nil, false
	h.remain, h.remTrl = h.maxList, h.maxList
	h.dec.SetEmitEnabled(true)
	frag, ended := hf.HeaderBlockFragment(), hf.HeadersEnded()
	for {
		// A fragment of more than twice what the list may still take is not decoded, nor is one
		// after an invalid field (sizes are no longer counted): the connection ends (as x/net).
		if int64(len(frag)) > 2*int64(h.remain+h.remTrl) || h.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := h.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if ended {
			break
		}
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		cf := f.(*http2.ContinuationFrame) // the Framer checks that CONTINUATION frames follow
		frag, ended = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := h.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if h.invalid != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: h.invalid}
	}
	if err := checkPseudos(h.b.pseudoFields()); err != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return &h.b, nil
}

// done lets go of the block read last, once it is processed: its fields (and the strings in them)
// are not kept while the connection waits, nor past a shorter block; an unusually long field
// slice is dropped.
func (h *headerReader) done() {
	clear(h.b.fields)
	h.b = headerBlock{fields: h.b.fields[:0]}
	if cap(h.b.fields) > 64 {
		h.b.fields = nil
	}
}

// emit takes one decoded field.
func (h *headerReader) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		h.invalid = errInvalidFieldValue // the value itself may be sensitive: not in the error
	}
	pseudo := strings.HasPrefix(hf.Name, ":")
	if pseudo {
		if h.sawRegular {
			h.invalid = errPseudoAfterRegular
		}
	} else {
		h.sawRegular = true
		if !validFieldName(hf.Name) {
			h.invalid = errInvalidFieldName
		}
	}
	if h.invalid != nil {
		h.dec.SetEmitEnabled(false)
		return
	}
	remain, size := &h.remain, hf.Size()
	if hf.Name == "trailer" {
		// Counted as the names it declares would be, each as a field of its own.
		n := uint32(strings.Count(hf.Value, ",") + 1)
		remain, size = &h.remTrl, uint32(len(hf.Value))-n+1+n*hpack.HeaderField{}.Size()
	}
	if size > *remain {
		h.dec.SetEmitEnabled(false)
		h.b.truncated = true
		h.remain, h.remTrl = 0, 0
		return
	}
	*remain -= size
	h.b.fields = append(h.b.fields, hf)
	if pseudo {
		h.b.pseudo++ // they come first: one after a regular field is invalid
	}
}

var (
	errInvalidFieldValue  = errors.New("http2: invalid header field value")
	errInvalidFieldName   = errors.New("http2: invalid header field name")
	errPseudoAfterRegular = errors.New("http2: pseudo header field after a regular one")
	errBadPseudo          = errors.New("http2: invalid or repeated pseudo header field")
)

// validFieldName reports whether name is a token in lower case (RFC 9113 8.2.1).
func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !httpguts.IsTokenRune(rune(c)) || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// checkPseudos checks that the pseudo-header fields are known, each once, and not of a request
// and a response both.
func checkPseudos(pf []hpack.HeaderField) error {
	var request, response bool
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return errBadPseudo
		}
		for _, prev := range pf[:i] {
			if hf.Name == prev.Name {
				return errBadPseudo
			}
		}
	}
	if request && response {
		return errBadPseudo
	}
	return nil
}
