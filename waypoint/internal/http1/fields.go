package http1

import (
	"bufio"
	"net/http"
	"slices"
	"strconv"
)

func appendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }

// writeStatusLine writes "HTTP/1.1 code reason" and its CRLF. An unknown
// code gets an empty reason phrase, which RFC 9112 4 allows.
func writeStatusLine(bw *bufio.Writer, code int, scratch []byte) {
	bw.WriteString("HTTP/1.1 ")
	bw.Write(appendInt(scratch, int64(code)))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\n")
}

// writeField writes one "name: value" line.
func writeField(bw *bufio.Writer, name, value string) {
	bw.WriteString(name)
	bw.WriteString(": ")
	bw.WriteString(value)
	bw.WriteString("\r\n")
}

// writeFields writes h's fields, keys in sorted order and each key's
// values in order, except the keys skip names. A field whose name is not
// a token or whose value holds a CR, LF or other control byte is left out
// rather than risk splitting the message; writeFields returns how many
// were left out. keys is scratch space.
func writeFields(bw *bufio.Writer, h http.Header, keys *[]string, skip func(string) bool) (dropped int) {
	ks := (*keys)[:0]
	for k := range h {
		if skip == nil || !skip(k) {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	for _, k := range ks {
		if !validToken(k) {
			dropped += len(h[k])
			continue
		}
		for _, v := range h[k] {
			if !validFieldValue(v) {
				dropped++
				continue
			}
			writeField(bw, k, v)
		}
	}
	clear(ks)
	*keys = ks[:0]
	return dropped
}
