"""The differential smuggling corpus: raw requests, each documented, grouped by class.

Every case is sent as is through the proxy to each origin (see run.py). It passes when the
proxy refuses it, or when every origin parses the forwarded bytes as the same requests with
the same bodies, each of them one the proxy itself parsed, routed and stamped with its `Via`
(a request hidden inside another, usually the `/smuggled` one below, arrives without it). `expect` pins the proxy's own verdict where the RFC leaves no choice:
`reject` (the proxy must answer it itself, nothing forwarded), `forward` (it must reach the
origins), or `either`.

Sources: RFC 9112 (§2.2 line endings, §3 request line, §5 field syntax, §6 body framing,
§7 chunked), RFC 9110 (§5.5 field values, §8.6 Content-Length, §10.1.1 Expect), and the
published research: Linhart et al. (2005), Kettle "HTTP Desync Attacks" (2019) and
"Browser-Powered Desync" (2022), the Funky Chunks write-ups (2024-2025: chunk extensions,
bare LF, trailers), and the smuggling corpora of h2csmuggler and http-garden.
"""

from dataclasses import dataclass

CRLF = b"\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: evil\r\n\r\n"


@dataclass(frozen=True)
class Case:
    id: str
    cls: str
    doc: str
    raw: bytes
    expect: str = "either"
    h2: "H2 | None" = None


def head(*lines, end=CRLF):
    """A request head from its lines, each ended by `end`, then the empty line."""
    out = b""
    for line in lines:
        out += (line.encode("latin-1") if isinstance(line, str) else line) + end
    return out + end


def post(*fields, body=b"", target="/", method="POST"):
    return head(f"{method} {target} HTTP/1.1", "Host: app.example", *fields) + body


CASES = []


def case(id, cls, doc, raw, expect="either"):
    CASES.append(Case(id, cls, doc, raw, expect))


# ===== baseline: well-formed requests every parser agrees on =====
B = "baseline"
case("get", B, "A plain GET.", head("GET /a?b=c HTTP/1.1", "Host: app.example"), "forward")
case("head", B, "HEAD: no body in the answer.", head("HEAD / HTTP/1.1", "Host: app.example"), "forward")
case("options-star", B, "OPTIONS * (asterisk-form, RFC 9112 §3.2.4).",
     head("OPTIONS * HTTP/1.1", "Host: app.example"), "forward")
case("post-cl", B, "POST with a Content-Length body.",
     post("Content-Length: 5", body=b"hello"), "forward")
case("post-cl-zero", B, "POST with Content-Length: 0.", post("Content-Length: 0"), "forward")
case("post-chunked", B, "POST with a chunked body of two chunks.",
     post("Transfer-Encoding: chunked", body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "forward")
case("post-chunked-empty", B, "A chunked body with only the last chunk.",
     post("Transfer-Encoding: chunked", body=b"0\r\n\r\n"), "forward")
case("put", B, "PUT with a body.", post("Content-Length: 3", body=b"abc", method="PUT"), "forward")
case("patch", B, "PATCH with a body.", post("Content-Length: 2", body=b"{}", method="PATCH"), "forward")
case("delete", B, "DELETE without a body.", head("DELETE /x HTTP/1.1", "Host: app.example"), "forward")
case("extension-method", B, "An extension method (a token).",
     head("PURGE /x HTTP/1.1", "Host: app.example"), "forward")
case("absolute-form", B, "Absolute-form target: the authority is the Host (RFC 9112 §3.2.2).",
     head("GET http://app.example/abs?q HTTP/1.1", "Host: other.example"), "forward")
case("host-port", B, "Host with a port.", head("GET / HTTP/1.1", "Host: app.example:8080"), "forward")
case("host-ipv6", B, "Host as an IPv6 literal.", head("GET / HTTP/1.1", "Host: [::1]:80"), "forward")
case("percent-target", B, "Percent-encoded target passed through as is.",
     head("GET /a%20b/%2e%2e/c HTTP/1.1", "Host: app.example"), "forward")
case("chunk-ext-token", B, "A chunk extension (token=token) is valid and dropped.",
     post("Transfer-Encoding: chunked", body=b"5;name=value\r\nhello\r\n0\r\n\r\n"), "forward")
case("chunk-ext-quoted", B, "A chunk extension with a quoted value.",
     post("Transfer-Encoding: chunked", body=b'5;n="a b;c"\r\nhello\r\n0\r\n\r\n'), "forward")
case("chunk-leading-zeros", B, "Leading zeros in a chunk size are hex digits like any other.",
     post("Transfer-Encoding: chunked", body=b"0005\r\nhello\r\n0000\r\n\r\n"), "forward")
case("chunk-upper-hex", B, "Upper-case hex chunk size.",
     post("Transfer-Encoding: chunked", body=b"A\r\n0123456789\r\n0\r\n\r\n"), "forward")
case("trailer", B, "A trailer field after the last chunk (dropped, not forwarded).",
     post("Transfer-Encoding: chunked", "Trailer: X-Sum", body=b"2\r\nhi\r\n0\r\nX-Sum: 1\r\n\r\n"), "forward")
case("te-case", B, "`Transfer-Encoding: CHUNKED`: codings are case-insensitive.",
     post("Transfer-Encoding: CHUNKED", body=b"2\r\nhi\r\n0\r\n\r\n"), "forward")
case("te-trailing-space", B, "Whitespace around a field value is not part of it (RFC 9110 §5.5).",
     post("Transfer-Encoding: chunked  ", body=b"2\r\nhi\r\n0\r\n\r\n"), "forward")
case("name-case", B, "Field names are case-insensitive.",
     post("cOnTeNt-LeNgTh: 2", body=b"hi"), "forward")
case("get-with-body", B, "GET with a Content-Length body: framed like any other.",
     post("Content-Length: 4", body=b"body", method="GET"), "forward")
case("obs-text-value", B, "obs-text (bytes over 0x7F) in a field value.",
     head("GET / HTTP/1.1", "Host: app.example", b"X-Name: caf\xe9"), "forward")

# ===== CL.TE and TE.CL: both framings in one request =====
C = "cl-te"
for i, (fields, body) in enumerate([
    (["Content-Length: 6", "Transfer-Encoding: chunked"], b"0\r\n\r\nG" + SMUGGLED),
    (["Transfer-Encoding: chunked", "Content-Length: 6"], b"0\r\n\r\nG" + SMUGGLED),
    (["Content-Length: 4", "Transfer-Encoding: chunked"], b"5c\r\n" + SMUGGLED + b"\r\n0\r\n\r\n"),
    (["Content-Length: 0", "Transfer-Encoding: chunked"], b"0\r\n\r\n" + SMUGGLED),
    (["Transfer-Encoding: chunked", "Content-Length: 0"], b"3\r\nabc\r\n0\r\n\r\n"),
    (["Content-Length: 45", "Transfer-Encoding: chunked"], b"0\r\n\r\n" + SMUGGLED),
    (["Transfer-Encoding: identity", "Content-Length: 5"], b"hello"),
    (["Content-Length: 5", "Transfer-Encoding: gzip"], b"hello"),
]):
    case(f"cl-te-{i}", C, f"Both framings ({', '.join(fields)}): RFC 9112 §6.3 makes it an "
         "error a proxy must refuse rather than pick one.", post(*fields, body=body), "reject")

# ===== TE.TE: Transfer-Encoding obfuscations =====
T = "te-obfuscation"
te_values = [
    ("xchunked", "Not the chunked coding at all."),
    ("chunked, chunked", "chunked twice (RFC 9112 §6.1: at most once)."),
    ("chunked, identity", "A coding after chunked: the body is not self-delimiting."),
    ("identity, chunked", "identity before chunked (identity is no longer a coding)."),
    ("gzip, chunked", "A coding the proxy would pass on undecoded."),
    ("deflate", "A coding other than chunked alone."),
    ('"chunked"', "chunked in quotes."),
    ("chunked;q=1", "A parameter on chunked."),
    ("chunk", "A truncated name."),
    ("chunked\x0b", "A vertical tab after the value."),
    ("\x0cchunked", "A form feed before the value."),
    ("chunked,", "A trailing empty list element."),
    (",chunked", "A leading empty list element."),
    ("", "An empty Transfer-Encoding."),
    ("cHuNkEd, x", "An unknown coding after chunked."),
]
for i, (value, doc) in enumerate(te_values):
    raw = post("Transfer-Encoding: " + value, body=b"0\r\n\r\n" + SMUGGLED)
    case(f"te-value-{i}", T, f"`Transfer-Encoding: {value!r}`: {doc}", raw, "reject")
te_names = [
    ("Transfer-Encoding : chunked", "Whitespace before the colon (RFC 9112 §5.1: reject)."),
    ("Transfer-Encoding\t: chunked", "A tab before the colon."),
    (" Transfer-Encoding: chunked", "A leading space: obs-fold of the line before."),
    ("Transfer_Encoding: chunked", "An underscore: a different field to most parsers, CGI maps it."),
    ("Transfer-Encoding:\r\n chunked", "The value on an obs-fold continuation line."),
    ("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity", "Two fields, the last not chunked."),
    ("Transfer-Encoding: identity\r\nTransfer-Encoding: chunked", "Two fields, chunked last but not alone."),
    ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", "chunked in two fields."),
    ("Transfer-Encoding\x00: chunked", "A NUL in the field name."),
    ("Transfer-Encoding: chun\x00ked", "A NUL in the value."),
    ("Transfer-Encoding:chunked\r\nContent-Length: 3", "No space after the colon, with a length too."),
    ("X: y\rTransfer-Encoding: chunked", "A bare CR inside the previous line."),
    ("Transfer-\xc3\xa9ncoding: chunked", "Non-ASCII in the name."),
]
for i, (line, doc) in enumerate(te_names):
    raw = post(line.encode("latin-1"), "Content-Length: 5", body=b"0\r\n\r\n" + SMUGGLED)
    case(f"te-name-{i}", T, f"`{line!r}` with `Content-Length: 5`: {doc}", raw, "reject")
case("te-http10", T, "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1: faulty framing).",
     head("POST / HTTP/1.0", "Host: app.example", "Transfer-Encoding: chunked") + b"0\r\n\r\n" + SMUGGLED,
     "reject")
case("te-lf-continuation", T, "A bare-LF obs-fold carrying chunked.",
     head("POST / HTTP/1.1", "Host: app.example", b"Transfer-Encoding:\n chunked") + b"0\r\n\r\n" + SMUGGLED,
     "reject")

# ===== Content-Length tricks =====
L = "content-length"
cl_bad = [
    ("+5", "A sign."), ("-5", "A negative length."), ("0x5", "Hexadecimal."), ("5.0", "A fraction."),
    ("1e1", "An exponent."), ("5 5", "Two numbers with a space."), ("5, 6", "A list that disagrees."),
    ("", "An empty value."), ("five", "Not a number."), ("99999999999999999999", "Past 64 bits."),
    ("\x0b5", "A vertical tab before the digits."), ("5\x00", "A NUL after the digits."),
    ("٥", "A non-ASCII digit."),
]
for i, (value, doc) in enumerate(cl_bad):
    raw = post(("Content-Length: " + value).encode("utf-8"), body=b"hello" + SMUGGLED)
    case(f"cl-bad-{i}", L, f"`Content-Length: {value!r}`: {doc}", raw, "reject")
case("cl-two-differ", L, "Two Content-Length fields that disagree (RFC 9110 §8.6).",
     post("Content-Length: 5", "Content-Length: 43", body=b"hello" + SMUGGLED), "reject")
case("cl-space-colon", L, "Whitespace before the colon.",
     post("Content-Length : 43", body=b"hello" + SMUGGLED), "reject")
case("cl-fold", L, "A Content-Length value on an obs-fold line.",
     post("Content-Length:", " 43", body=b"hello" + SMUGGLED), "reject")
case("cl-underscore", L, "Content_Length: framing to a CGI/WSGI origin (HTTP_CONTENT_LENGTH), an "
     "ordinary field to others: refused.", post("Content_Length: 43", body=SMUGGLED), "reject")
case("cl-leading-zeros", L, "`010`: a valid length of ten, forwarded as `10`.",
     post("Content-Length: 010", body=b"0123456789"), "forward")
case("cl-two-equal", L, "Two equal Content-Length fields: one length, forwarded once.",
     post("Content-Length: 5", "Content-Length: 5", body=b"hello"), "forward")
case("cl-list-equal", L, "`5, 5`: a list of equal lengths is one length.",
     post("Content-Length: 5, 5", body=b"hello"), "forward")
case("cl-short-body", L, "A body shorter than its length, then the connection half-closes.",
     post("Content-Length: 50", body=b"short"), "reject")
case("cl-long-body", L, "Bytes past the length are the next request, read as one.",
     post("Content-Length: 5", body=b"hello" + SMUGGLED.replace(b"/smuggled", b"/second")), "forward")
case("cl-huge", L, "A length past the proxy's limit: 413 before any body is read.",
     post("Content-Length: 99999999999", body=b"x"), "reject")

# ===== chunk-size lines and extensions =====
K = "chunked"
chunk_bad = [
    (b"5\nhello\r\n0\r\n\r\n", "A bare LF ends the size line."),
    (b"5;ext\nhello\r\n0\r\n\r\n", "A bare LF ends an extension."),
    (b"5;a\nb\r\nhello\r\n0\r\n\r\n", "A bare LF inside an extension (Funky Chunks)."),
    (b'5;a="b\nc"\r\nhello\r\n0\r\n\r\n', "A bare LF inside a quoted extension value."),
    (b"5\rhello\r\n0\r\n\r\n", "A bare CR ends the size line."),
    (b"5;a\rb\r\nhello\r\n0\r\n\r\n", "A bare CR inside an extension."),
    (b"5 \r\nhello\r\n0\r\n\r\n", "Whitespace after the size without an extension."),
    (b" 5\r\nhello\r\n0\r\n\r\n", "Whitespace before the size."),
    (b"0x5\r\nhello\r\n0\r\n\r\n", "A 0x prefix."),
    (b"+5\r\nhello\r\n0\r\n\r\n", "A sign."),
    (b"-5\r\nhello\r\n0\r\n\r\n", "A negative size."),
    (b"g\r\nhello\r\n0\r\n\r\n", "Not hex."),
    (b"\r\nhello\r\n0\r\n\r\n", "An empty size line."),
    (b"10000000000000005\r\nhello\r\n0\r\n\r\n", "A size past 64 bits that wraps to 5."),
    (b"5;\r\nhello\r\n0\r\n\r\n", "A semicolon with no extension name."),
    (b"5;=x\r\nhello\r\n0\r\n\r\n", "An extension with no name."),
    (b"5;a=\r\nhello\r\n0\r\n\r\n", "An extension with an empty value."),
    (b'5;a="open\r\nhello\r\n0\r\n\r\n', "An unterminated quoted value."),
    (b"5;a b\r\nhello\r\n0\r\n\r\n", "Whitespace inside an extension name."),
    (b"5;a=b c\r\nhello\r\n0\r\n\r\n", "Whitespace inside an extension value."),
    (b"5;a=\x00\r\nhello\r\n0\r\n\r\n", "A NUL in an extension."),
    (b"5,6\r\nhello\r\n0\r\n\r\n", "A list of sizes."),
    (b"3\r\nhello\r\n0\r\n\r\n", "Data longer than its size: `lo` is where a CRLF must be."),
    (b"5\r\nhelloXX0\r\n\r\n", "No CRLF after the data."),
    (b"5\r\nhello\n0\r\n\r\n", "A bare LF after the data."),
    (b"5\r\nhello\r\r\n0\r\n\r\n", "CR CR LF after the data."),
    (b"5\r\nhello\r\n0\r\n", "No empty line after the last chunk (then the half-close)."),
    (b"5\r\nhello\r\n0\n\n", "Bare LFs end the last chunk."),
    (b"5\r\nhello\r\n0\r\nX: y\n\r\n", "A bare LF ends a trailer field."),
    (b"5\r\nhello\r\n0\r\n bad: fold\r\n\r\n", "A trailer that starts with whitespace."),
    (b"5\r\nhel", "A truncated chunk (then the half-close)."),
]
for i, (body, doc) in enumerate(chunk_bad):
    raw = post("Transfer-Encoding: chunked", body=body + SMUGGLED)
    case(f"chunk-bad-{i}", K, f"{doc} Body `{body!r}`.", raw, "reject")
chunk_ok = [
    (b"5 ;a\r\nhello\r\n0\r\n\r\n", "Whitespace before `;` (BWS, RFC 9112 §7.1.1)."),
    (b"5;a;b=c;d=\"e\"\r\nhello\r\n0\r\n\r\n", "Several extensions."),
    (b"5\r\nhello\r\n0;last=1\r\n\r\n", "An extension on the last chunk."),
    (b"5\r\nhello\r\n0\r\nContent-Length: 43\r\n\r\n", "A Content-Length in the trailers: dropped, never framing."),
    (b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\nHost: evil\r\n\r\n", "Framing and routing fields in the trailers: dropped."),
    (b"5\r\nhello\r\n00\r\n\r\n", "A last chunk written `00`."),
    (b"1\r\na\r\n" * 20 + b"0\r\n\r\n", "Twenty one-byte chunks."),
    (b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED.replace(b"/smuggled", b"/second"),
     "A pipelined request after a complete chunked body is read as the next one."),
]
for i, (body, doc) in enumerate(chunk_ok):
    case(f"chunk-ok-{i}", K, f"{doc} Body `{body[:40]!r}`.",
         post("Transfer-Encoding: chunked", body=body), "forward")

# ===== field names, values and line endings =====
F = "fields"
case("connection-cl", F, "Issue 13's smuggle: `Connection: content-length`. The framing is the "
     "proxy's own: one request with its 38-byte body.",
     post("Connection: content-length", "Content-Length: 38", body=SMUGGLED), "forward")
case("connection-te", F, "`Connection: transfer-encoding` on a chunked request.",
     post("Connection: transfer-encoding", "Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"), "forward")
case("connection-host", F, "`Connection: host`: Host is the proxy's own, it stays.",
     post("Connection: host", "Content-Length: 2", body=b"hi"), "forward")
case("connection-close-pipelined", F, "`Connection: close` then a pipelined request: not read.",
     post("Connection: close", "Content-Length: 2", body=b"hi" + SMUGGLED), "forward")
case("space-before-colon", F, "Whitespace between name and colon (RFC 9112 §5.1).",
     head("GET / HTTP/1.1", "Host : app.example"), "reject")
case("name-tab", F, "A tab inside a field name.", head("GET / HTTP/1.1", "Host: a", "X\tY: z"), "reject")
case("name-empty", F, "An empty field name.", head("GET / HTTP/1.1", "Host: a", ": z"), "reject")
case("name-nul", F, "A NUL in a field name.", head("GET / HTTP/1.1", "Host: a", b"X\x00: z"), "reject")
case("no-colon", F, "A line without a colon.", head("GET / HTTP/1.1", "Host: a", "garbage"), "reject")
case("obs-fold", F, "obs-fold (RFC 9112 §5.2: a proxy must reject or replace it).",
     head("GET / HTTP/1.1", "Host: a", "X-A: b", " c"), "reject")
case("obs-fold-tab", F, "obs-fold with a tab.", head("GET / HTTP/1.1", "Host: a", "X-A: b", "\tc"), "reject")
case("value-nul", F, "A NUL in a value.", head("GET / HTTP/1.1", "Host: a", b"X-A: b\x00c"), "reject")
case("value-cr", F, "A bare CR in a value.", head("GET / HTTP/1.1", "Host: a", b"X-A: b\rc"), "reject")
case("value-vt", F, "A vertical tab in a value.", head("GET / HTTP/1.1", "Host: a", b"X-A: b\x0bc"), "reject")
case("lf-lines", F, "Bare LF line endings throughout (RFC 9112 §2.2 allows a recipient to "
     "accept them; what goes upstream is CRLF).",
     head("POST / HTTP/1.1", "Host: app.example", "Content-Length: 2", end=b"\n") + b"hi", "forward")
case("lf-mixed", F, "One field line ended by a bare LF among CRLF lines.",
     b"POST / HTTP/1.1\r\nHost: app.example\nContent-Length: 2\r\n\r\nhi", "forward")
case("cr-cr-lf", F, "CR CR LF as a line ending.", b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", "reject")
case("two-hosts", F, "Two Host fields (RFC 9112 §3.2: 400).",
     head("GET / HTTP/1.1", "Host: app.example", "Host: evil"), "reject")
case("no-host", F, "HTTP/1.1 without Host (RFC 9112 §3.2: 400).", head("GET / HTTP/1.1"), "reject")
case("host-space", F, "A space inside Host.", head("GET / HTTP/1.1", "Host: app example"), "reject")
case("host-userinfo", F, "Userinfo in Host.", head("GET / HTTP/1.1", "Host: user@app.example"), "reject")
case("host-slash", F, "A path in Host.", head("GET / HTTP/1.1", "Host: app.example/x"), "reject")
case("host-empty-11", F, "An empty Host on HTTP/1.1: no authority (allowed when the target has none).",
     head("GET / HTTP/1.1", "Host:"))
case("absolute-vs-host", F, "Absolute-form and a different Host: the target's authority wins and "
     "is what the origin gets.", head("GET http://app.example/x HTTP/1.1", "Host: evil"), "forward")
case("absolute-userinfo", F, "Userinfo in an absolute-form target.",
     head("GET http://user@app.example/x HTTP/1.1", "Host: app.example"), "reject")
case("absolute-no-host", F, "An absolute-form target with an empty authority.",
     head("GET http:///x HTTP/1.1", "Host: app.example"), "reject")
case("long-field", F, "A field past the head limit: 431.",
     head("GET / HTTP/1.1", "Host: a", "X-Big: " + "a" * 20000), "reject")
case("many-fields", F, "More fields than the proxy takes: 431.",
     head("GET / HTTP/1.1", "Host: a", *[f"X-{i}: v" for i in range(120)]), "reject")
case("leading-crlf", F, "An empty line before the request line (RFC 9112 §2.2 lets a server "
     "ignore it).", CRLF + head("GET / HTTP/1.1", "Host: app.example"))
case("te-header-te", F, "`TE: trailers` is kept; other TE values go.",
     head("GET / HTTP/1.1", "Host: app.example", "TE: trailers, deflate"), "forward")
case("keep-alive-field", F, "Keep-Alive and Proxy-Connection are hop-by-hop.",
     head("GET / HTTP/1.1", "Host: app.example", "Keep-Alive: timeout=5", "Proxy-Connection: keep-alive"),
     "forward")

# ===== request lines =====
R = "request-line"
for i, (line, doc) in enumerate([
    ("GET  / HTTP/1.1", "Two spaces after the method."),
    ("GET /  HTTP/1.1", "Two spaces before the version."),
    ("GET\t/ HTTP/1.1", "A tab as a separator."),
    (" GET / HTTP/1.1", "A space before the method."),
    ("GET / HTTP/1.1 ", "A space after the version."),
    ("GET / HTTP/1.2", "An unknown minor version."),
    ("GET / HTTP/2.0", "HTTP/2.0 on an HTTP/1 connection."),
    ("GET / HTTP/0.9", "HTTP/0.9."),
    ("GET /", "No version (HTTP/0.9 style)."),
    ("GET / http/1.1", "A lower-case protocol name."),
    ("GET / HTTP/1.10", "A two-digit minor version."),
    ("GET /a b HTTP/1.1", "A space inside the target."),
    ("GET /a\x00 HTTP/1.1", "A NUL in the target."),
    ("GET * HTTP/1.1", "`*` for a method other than OPTIONS."),
    ("GET app.example HTTP/1.1", "A target that is no form at all."),
    ("GET //evil/x HTTP/1.1", "Two leading slashes: a path to some origins, `//host` to others."),
    ("G@T / HTTP/1.1", "A method that is not a token."),
    ("CONNECT app.example:443 HTTP/1.1", "CONNECT: a reverse proxy does not tunnel (405)."),
]):
    expect = "reject"
    case(f"line-{i}", R, f"`{line!r}`: {doc}",
         line.encode("latin-1") + CRLF + b"Host: app.example\r\n\r\n", expect)

# ===== HTTP/1.0 =====
H = "http10"
case("h10-get", H, "HTTP/1.0 without Host.", head("GET / HTTP/1.0"), "forward")
case("h10-keep-alive", H, "HTTP/1.0 keep-alive with a second request.",
     head("GET /one HTTP/1.0", "Connection: keep-alive") + head("GET /two HTTP/1.0"), "forward")
case("h10-cl", H, "HTTP/1.0 POST with a Content-Length.",
     head("POST / HTTP/1.0", "Content-Length: 2") + b"hi", "forward")
case("h10-no-length", H, "HTTP/1.0 POST without a length: no body (a request body is never "
     "delimited by the close).", head("POST / HTTP/1.0") + b"stray", "either")
case("h10-close-pipelined", H, "HTTP/1.0 without keep-alive, then a pipelined request: not read.",
     head("GET / HTTP/1.0") + SMUGGLED, "forward")

# ===== pipelining =====
P = "pipelining"
case("pipe-two-gets", P, "Two GETs in one write.",
     head("GET /one HTTP/1.1", "Host: app.example") + head("GET /two HTTP/1.1", "Host: app.example"), "forward")
case("pipe-post-get", P, "A POST and a GET in one write.",
     post("Content-Length: 2", body=b"hi") + head("GET /two HTTP/1.1", "Host: app.example"), "forward")
case("pipe-chunked-get", P, "A chunked POST and a GET in one write.",
     post("Transfer-Encoding: chunked", body=b"2\r\nhi\r\n0\r\n\r\n") + head("GET /two HTTP/1.1", "Host: app.example"),
     "forward")
case("pipe-three", P, "Three requests, the middle one with a body.",
     head("GET /1 HTTP/1.1", "Host: a") + post("Content-Length: 1", body=b"x", target="/2")
     + head("GET /3 HTTP/1.1", "Host: a"), "forward")
case("pipe-bad-second", P, "A good request, then a malformed one: the first is answered, the "
     "second refused and the connection closed.",
     head("GET /one HTTP/1.1", "Host: a") + b"GET / HTTP/1.1\r\nHost : a\r\n\r\n" + SMUGGLED)
case("pipe-cl-zero-body", P, "`Content-Length: 0` with bytes after it: they are the next request.",
     post("Content-Length: 0", body=head("GET /second HTTP/1.1", "Host: a")), "forward")
case("pipe-get-cl-smuggle", P, "A GET whose Content-Length covers a hidden request: it is body.",
     post("Content-Length: 38", body=SMUGGLED, method="GET"), "forward")
case("pipe-head-cl", P, "HEAD with a Content-Length body: still a body, framed.",
     post("Content-Length: 38", body=SMUGGLED, method="HEAD"), "forward")

# ===== Expect =====
E = "expect"
case("expect-100", E, "Expect: 100-continue with the body sent at once.",
     post("Expect: 100-continue", "Content-Length: 5", body=b"hello"), "forward")
case("expect-100-case", E, "`Expect: 100-Continue`: case-insensitive.",
     post("Expect: 100-Continue", "Content-Length: 5", body=b"hello"), "forward")
case("expect-unknown", E, "An expectation other than 100-continue (RFC 9110 §10.1.1: 417).",
     post("Expect: 200-ok", "Content-Length: 5", body=b"hello" + SMUGGLED), "reject")
case("expect-list", E, "100-continue and an unknown one.",
     post("Expect: 100-continue, x", "Content-Length: 5", body=b"hello" + SMUGGLED), "reject")
case("expect-no-body", E, "Expect: 100-continue on a bodiless GET.",
     head("GET / HTTP/1.1", "Host: app.example", "Expect: 100-continue"), "forward")
case("expect-chunked", E, "Expect: 100-continue with a chunked body.",
     post("Expect: 100-continue", "Transfer-Encoding: chunked", body=b"2\r\nhi\r\n0\r\n\r\n"), "forward")

# ===== upgrades =====
U = "upgrade"
case("upgrade-h2c", U, "h2c upgrade (h2csmuggler): dropped, the request goes as a plain one.",
     head("GET / HTTP/1.1", "Host: app.example", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
          "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"), "forward")
case("upgrade-h2c-body", U, "h2c upgrade on a POST whose body looks like the h2 preface.",
     post("Connection: Upgrade", "Upgrade: h2c", "Content-Length: 24", body=b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
     "forward")
case("upgrade-unknown", U, "An upgrade to an unknown protocol: dropped.",
     head("GET / HTTP/1.1", "Host: app.example", "Connection: upgrade", "Upgrade: foo/1"), "forward")
case("upgrade-websocket-refused", U, "A WebSocket handshake the origin does not switch for: a plain "
     "answer, no tunnel.",
     head("GET /ws HTTP/1.1", "Host: app.example", "Connection: Upgrade", "Upgrade: websocket",
          "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="), "forward")
case("upgrade-without-connection", U, "Upgrade without `Connection: upgrade`: no upgrade asked.",
     head("GET / HTTP/1.1", "Host: app.example", "Upgrade: websocket"), "forward")
case("upgrade-then-smuggle", U, "An unknown upgrade followed by a pipelined request: it is one, "
     "not tunnel bytes.",
     head("GET / HTTP/1.1", "Host: app.example", "Connection: upgrade", "Upgrade: foo")
     + head("GET /second HTTP/1.1", "Host: a"), "forward")
case("h2-preface-late", U, "The HTTP/2 preface after an HTTP/1 request: not HTTP/2, a bad request.",
     head("GET / HTTP/1.1", "Host: a") + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")


# ===== HTTP/2 to HTTP/1.1: the downgrade =====
# Sent as HTTP/2 (prior knowledge, on the plain listener) by the `h2` package with its own
# checks turned off, so the frames carry exactly these fields; the proxy forwards over
# HTTP/1.1, where a length, a CR LF or a space it lets through becomes a second request.
# Kettle, "HTTP/2: The Sequel is Always Worse" (2021: H2.CL, H2.TE, request-line and header
# injection), neex's http2smugl, and RFC 9113 §8.2 (malformed: connection-specific fields,
# upper case, CR/LF/NUL, pseudo-header rules) and §8.3.


@dataclass(frozen=True)
class H2:
    """One HTTP/2 request: its header fields in order (pseudo-headers included), its DATA
    frames and, if any, its trailers."""
    fields: tuple
    data: tuple = ()
    trailers: tuple | None = None


def h2(*extra, method="GET", path="/", authority="app.example", scheme="http", data=(),
       trailers=None, pseudo=None):
    """An HTTP/2 request: the four pseudo-headers (or `pseudo`, as given) then `extra`."""
    enc = lambda v: v.encode("latin-1") if isinstance(v, str) else v  # noqa: E731
    if pseudo is None:
        pseudo = [(":method", method), (":scheme", scheme), (":authority", authority),
                  (":path", path)]
    fields = tuple((enc(n), enc(v)) for n, v in [*pseudo, *extra])
    if trailers is not None:
        trailers = tuple((enc(n), enc(v)) for n, v in trailers)
    return H2(fields, tuple(enc(d) for d in data), trailers)


D = "h2-downgrade"
HELLO = (b"hello",)
SMUGGLE_CHUNKED = (b"0\r\n\r\n" + SMUGGLED,)


def h2case(id, doc, request, expect="either"):
    CASES.append(Case(id, D, doc, b"", expect, request))


h2case("h2-get", "A plain HTTP/2 GET.", h2(path="/a?b=c"), "forward")
h2case("h2-post-cl", "A POST whose Content-Length matches its DATA.",
       h2(("content-length", "5"), method="POST", data=HELLO), "forward")
h2case("h2-post-unframed", "A POST with DATA and no Content-Length (HTTP/2 needs none): "
       "the proxy must frame it for HTTP/1.1.",
       h2(method="POST", data=(b"hel", b"lo")), "forward")
h2case("h2-host-only", "No :authority, a Host field instead (RFC 9113 §8.3.1).",
       h2(("host", "app.example"), pseudo=[(":method", "GET"), (":scheme", "http"),
                                           (":path", "/")]), "forward")
h2case("h2-cookies", "Cookies split into several fields (RFC 9113 §8.2.3): joined again.",
       h2(("cookie", "a=1"), ("cookie", "b=2")), "forward")
h2case("h2-te-trailers", "`te: trailers`, the one TE value HTTP/2 allows.",
       h2(("te", "trailers")), "forward")
h2case("h2-trailers", "A body with trailers.",
       h2(method="POST", data=HELLO, trailers=[("x-checksum", "1")]), "forward")
h2case("h2-authority-and-host", "Both :authority and the same Host (in other case): one Host "
       "goes upstream.", h2(("host", "APP.example")), "forward")
h2case("h2-authority-and-other-host", "Both :authority and a different Host (RFC 9113 §8.3.1: "
       "should be treated as malformed); which one an origin routes on is anyone's guess.",
       h2(("host", "other.example")), "reject")
h2case("h2-host-twice", "No :authority and two Host fields.",
       h2(("host", "app.example"), ("host", "other.example"),
          pseudo=[(":method", "GET"), (":scheme", "http"), (":path", "/")]), "reject")
h2case("h2-no-authority", "Neither :authority nor Host: an HTTP/1.1 request needs a Host.",
       h2(pseudo=[(":method", "GET"), (":scheme", "http"), (":path", "/")]), "reject")
# H2.CL
h2case("h2-cl-short", "H2.CL: Content-Length 0 with a request in the DATA.",
       h2(("content-length", "0"), method="POST", data=(SMUGGLED,)), "reject")
h2case("h2-cl-short-get", "H2.CL on a GET: Content-Length 0, a request in the DATA.",
       h2(("content-length", "0"), data=(SMUGGLED,)), "reject")
h2case("h2-cl-long", "H2.CL: Content-Length 50, 5 bytes of DATA, then the end of the stream.",
       h2(("content-length", "50"), method="POST", data=HELLO), "reject")
h2case("h2-cl-plus", "A signed Content-Length.",
       h2(("content-length", "+5"), method="POST", data=HELLO), "reject")
h2case("h2-cl-list-differ", "Content-Length as a list of two values.",
       h2(("content-length", "5, 6"), method="POST", data=HELLO), "reject")
h2case("h2-cl-twice-differ", "Two Content-Length fields that differ.",
       h2(("content-length", "5"), ("content-length", "6"), method="POST", data=HELLO), "reject")
# H2.TE and the other connection-specific fields (RFC 9113 §8.2.2)
h2case("h2-te-chunked", "H2.TE: Transfer-Encoding: chunked, a request after the last chunk.",
       h2(("transfer-encoding", "chunked"), method="POST", data=SMUGGLE_CHUNKED), "reject")
h2case("h2-te-chunked-cl", "H2.TE with a Content-Length that covers the whole DATA.",
       h2(("content-length", str(len(SMUGGLE_CHUNKED[0]))), ("transfer-encoding", "chunked"),
          method="POST", data=SMUGGLE_CHUNKED), "reject")
h2case("h2-te-gzip", "`te` with a value other than `trailers`.", h2(("te", "gzip")), "reject")
for name, value in [("connection", "close"), ("keep-alive", "timeout=5"),
                    ("proxy-connection", "keep-alive"), ("upgrade", "h2c")]:
    h2case(f"h2-{name}", f"`{name}`: connection-specific, malformed in HTTP/2.",
           h2((name, value)), "reject")
# CR, LF and NUL: a field that ends early is a field (or a request) of its own over HTTP/1.1
h2case("h2-crlf-value-te", "A value with CR LF and a Transfer-Encoding after it.",
       h2(("x-a", "b\r\ntransfer-encoding: chunked"), method="POST", data=SMUGGLE_CHUNKED),
       "reject")
h2case("h2-crlf-value-request", "A value with CR LF CR LF and a whole request after it.",
       h2(("x-a", "b\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: evil")), "reject")
h2case("h2-lf-value", "A value with a bare LF and a field after it.",
       h2(("x-a", "b\ntransfer-encoding: chunked"), method="POST", data=SMUGGLE_CHUNKED),
       "reject")
h2case("h2-cr-value", "A value with a bare CR.", h2(("x-a", "b\rc")), "reject")
h2case("h2-nul-value", "A value with NUL.", h2(("x-a", "b\x00c")), "reject")
h2case("h2-crlf-name", "A name with CR LF.",
       h2(("x-a\r\ntransfer-encoding", "chunked"), method="POST", data=SMUGGLE_CHUNKED),
       "reject")
h2case("h2-colon-name", "A name with a colon: `transfer-encoding:chunked` once downgraded.",
       h2(("transfer-encoding:chunked\r\nx", "y"), method="POST", data=SMUGGLE_CHUNKED),
       "reject")
h2case("h2-space-name", "A name with a space.",
       h2(("transfer-encoding ", "chunked"), method="POST", data=SMUGGLE_CHUNKED), "reject")
h2case("h2-upper-name", "An upper-case name (RFC 9113 §8.2.1).",
       h2(("Transfer-Encoding", "chunked"), method="POST", data=SMUGGLE_CHUNKED), "reject")
h2case("h2-empty-name", "An empty name.", h2(("", "x")), "reject")
# underscores: a valid name in HTTP/2, and framing to a WSGI origin (waitress reads
# `Transfer_Encoding` as `TRANSFER_ENCODING`), as over HTTP/1.1 (the fields class)
h2case("h2-underscore-te", "`transfer_encoding: chunked` and a request after the last chunk.",
       h2(("transfer_encoding", "chunked"), method="POST", data=SMUGGLE_CHUNKED), "reject")
h2case("h2-underscore-cl", "`content_length: 0` with a request in the DATA.",
       h2(("content_length", "0"), method="POST", data=(SMUGGLED,)), "reject")
h2case("h2-underscore-host", "`x_forwarded_host`: a routing field in disguise.",
       h2(("x_forwarded_host", "evil")), "reject")
# the request line, rebuilt from pseudo-headers
h2case("h2-path-injection", "A :path with a space, CR LF and a request: the request line "
       "ends early.",
       h2(path="/ HTTP/1.1\r\nhost: app.example\r\n\r\nGET /smuggled HTTP/1.1\r\nx: y"),
       "reject")
h2case("h2-path-space", "A :path with a space.", h2(path="/a b"), "reject")
h2case("h2-path-relative", "A :path without its leading slash.", h2(path="a"), "reject")
h2case("h2-path-empty", "An empty :path.", h2(path=""), "reject")
h2case("h2-path-absolute", "A :path in absolute form.", h2(path="http://evil/smuggled"),
       "reject")
h2case("h2-path-fragment", "A :path with a fragment.", h2(path="/a#b"))
h2case("h2-method-injection", "A :method with a request line and a request in it.",
       h2(method="GET /smuggled HTTP/1.1\r\nhost: evil\r\n\r\nGET"), "reject")
h2case("h2-method-space", "A :method with a space.", h2(method="GET /x"), "reject")
h2case("h2-authority-crlf", "An :authority with CR LF and a field after it.",
       h2(authority="app.example\r\ntransfer-encoding: chunked"), "reject")
h2case("h2-authority-space", "An :authority with a space.", h2(authority="app example"),
       "reject")
h2case("h2-authority-path", "An :authority with a path in it.",
       h2(authority="app.example/smuggled"), "reject")
h2case("h2-authority-userinfo", "An :authority with userinfo (RFC 9113 §8.3.1: must not); "
       "`Host: user@app.example` is no Host over HTTP/1.1.",
       h2(authority="user@app.example"), "reject")
h2case("h2-host-crlf", "A Host field (no :authority) with CR LF.",
       h2(("host", "app.example\r\nx: y"), pseudo=[(":method", "GET"), (":scheme", "http"),
                                                  (":path", "/")]), "reject")
# pseudo-header rules (RFC 9113 §8.3)
P3 = [(":method", "GET"), (":scheme", "http"), (":authority", "app.example"), (":path", "/")]
h2case("h2-path-twice", "Two :path pseudo-headers.",
       h2(pseudo=P3 + [(":path", "/smuggled")]), "reject")
h2case("h2-pseudo-after-field", "A pseudo-header after a regular field.",
       h2(("x-a", "b"), (":path", "/smuggled"), pseudo=P3[:3]), "reject")
h2case("h2-unknown-pseudo", "An unknown pseudo-header.", h2(pseudo=P3 + [(":foo", "bar")]),
       "reject")
h2case("h2-status-in-request", "A response pseudo-header in a request.",
       h2(pseudo=P3 + [(":status", "200")]), "reject")
h2case("h2-no-method", "No :method.", h2(pseudo=P3[1:]), "reject")
h2case("h2-no-path", "No :path.", h2(pseudo=P3[:3]), "reject")
h2case("h2-no-scheme", "No :scheme.", h2(pseudo=[P3[0], P3[2], P3[3]]), "reject")
h2case("h2-trailer-pseudo", "A pseudo-header in the trailers (malformed, RFC 9113 §8.1). The "
       "h2 codec drops it unseen, and the proxy forwards no request trailers: nothing of it "
       "reaches HTTP/1.1.",
       h2(method="POST", data=HELLO, trailers=[(":path", "/smuggled")]))
h2case("h2-trailer-framing", "Framing fields in the trailers: never acted on.",
       h2(method="POST", data=HELLO,
          trailers=[("content-length", "0"), ("transfer-encoding", "chunked")]))
h2case("h2-trailer-crlf", "A trailer value with CR LF and a request after it.",
       h2(method="POST", data=HELLO,
          trailers=[("x-a", "b\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: evil")]), "reject")
# CONNECT
h2case("h2-connect", "A plain CONNECT (no :protocol): the proxy tunnels nothing.",
       h2(pseudo=[(":method", "CONNECT"), (":authority", "app.example:443")]), "reject")
h2case("h2-connect-unknown-protocol", "Extended CONNECT to a protocol not configured.",
       h2(pseudo=[(":method", "CONNECT"), (":protocol", "foo")] + P3[1:]), "reject")
