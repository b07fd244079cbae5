//! Strict HTTP/1.1 request heads (RFC 9112): the checks the framing guard
//! ([`crate::framing`]) makes of every request head before the parser sees it.
//!
//! hyper's HTTP/1 parser (httparse) is lenient exactly where leniency lets a front end and a
//! back end read one byte stream as different requests: it takes a bare LF for a line end, a
//! HTTP/1.1 request without `Host` or with two, a target of any form for any method and with
//! bytes beyond ASCII, and frames a request carrying both `Content-Length` and
//! `Transfer-Encoding` by the latter. A head that fails any check here is refused — the guard
//! hands the parser a head it answers `400 Bad Request`, and the connection is closed.
//!
//! What httparse itself refuses, and so is refused too (as [`Refusal::Syntax`]): a method or
//! header name that is not a token, whitespace between a field name and its colon, a control
//! byte (NUL, a lone CR, DEL) in a field value, obs-fold, a version other than `HTTP/1.0` or
//! `HTTP/1.1`, more than 100 header fields.
//!
//! Every check is a pass over the head the guard already holds, complete, and over httparse's
//! slices into it: nothing is allocated or copied.

/// The most header bytes the framing guard holds back (the parser's own limit is the same); a
/// longer head is refused. A chunked body's trailer section has the same limit.
pub const MAX_HEAD: usize = 64 * 1024;

/// The longest request line accepted (method, target and version, without the CRLF), RFC
/// 9112 §2.3 ("at least 8000 octets" is the recommended minimum to support).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// Why a request was refused; `reason()` labels `strata_lb_refused_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// httparse refused the head (see the module's documentation).
    Syntax,
    /// A line ended by LF without CR (RFC 9112 §2.2).
    BareLf,
    /// A request line over [`MAX_REQUEST_LINE`] bytes (RFC 9112 §3).
    RequestLineTooLong,
    /// A head over [`MAX_HEAD`] bytes.
    HeadTooLong,
    /// A request target that is not origin-form, absolute-form (`http`/`https`) or `*` for
    /// OPTIONS, or has a byte no URI may hold (RFC 9112 §3.2).
    Target,
    /// CONNECT: the balancer is a reverse proxy and opens no tunnels (RFC 9110 §9.3.6).
    Connect,
    /// A HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    HostMissing,
    /// More than one `Host` field line (RFC 9112 §3.2).
    HostRepeated,
    /// A `Host` that is not `uri-host [":" port]` (RFC 9112 §3.2, RFC 9110 §7.2).
    HostInvalid,
    /// A `Content-Length` that is not 1*DIGIT within 64 bits (RFC 9112 §6.3, RFC 9110 §8.6).
    ContentLength,
    /// More than one `Content-Length` field line (RFC 9110 §8.6 lets a recipient refuse).
    ContentLengthRepeated,
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.1, §6.3).
    LengthAndEncoding,
    /// A `Transfer-Encoding` other than the single coding `chunked` (RFC 9112 §6.1, §7).
    TransferEncoding,
    /// `Transfer-Encoding` in a HTTP/1.0 request (RFC 9112 §6.1).
    TransferEncodingHttp10,
    /// A chunked body that breaks the chunked grammar (RFC 9112 §7.1).
    ChunkedBody,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Syntax => "syntax",
            Refusal::BareLf => "bare-lf",
            Refusal::RequestLineTooLong => "request-line-too-long",
            Refusal::HeadTooLong => "head-too-long",
            Refusal::Target => "target",
            Refusal::Connect => "connect",
            Refusal::HostMissing => "host-missing",
            Refusal::HostRepeated => "host-repeated",
            Refusal::HostInvalid => "host-invalid",
            Refusal::ContentLength => "content-length",
            Refusal::ContentLengthRepeated => "content-length-repeated",
            Refusal::LengthAndEncoding => "content-length-and-transfer-encoding",
            Refusal::TransferEncoding => "transfer-encoding",
            Refusal::TransferEncodingHttp10 => "transfer-encoding-http10",
            Refusal::ChunkedBody => "chunked-body",
        }
    }
}

/// How a valid request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// A HTTP/1.1 `Upgrade` request: what follows may be another protocol.
    Upgrade,
}

/// Checks a complete head: `head` is exactly the bytes httparse reported as the head, and
/// `request` its parse.
pub fn check(head: &[u8], request: &httparse::Request<'_, '_>) -> Result<Framing, Refusal> {
    // As [`check_partial`] refuses it when it arrives in pieces: the verdict may not depend on
    // how the head was cut.
    if head.len() > MAX_HEAD {
        return Err(Refusal::HeadTooLong);
    }
    if has_bare_lf(head) {
        return Err(Refusal::BareLf);
    }
    let start = empty_lines(head);
    let line = head[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(usize::MAX, |lf| lf.saturating_sub(1));
    if line > MAX_REQUEST_LINE {
        return Err(Refusal::RequestLineTooLong);
    }
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(Refusal::Syntax);
    };
    if method == "CONNECT" {
        return Err(Refusal::Connect);
    }
    if !target_ok(method, target.as_bytes()) {
        return Err(Refusal::Target);
    }
    let http11 = version == 1;
    let mut host = false;
    let mut length = None;
    let mut chunked = false;
    let mut upgrade = false;
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        let value = field.value;
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                if host {
                    return Err(Refusal::HostRepeated);
                }
                if !authority_ok(value, false) {
                    return Err(Refusal::HostInvalid);
                }
                host = true;
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                if length.is_some() {
                    return Err(Refusal::ContentLengthRepeated);
                }
                length = Some(digits(value).ok_or(Refusal::ContentLength)?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                if !http11 {
                    return Err(Refusal::TransferEncodingHttp10);
                }
                // httparse has trimmed the whitespace around the value.
                if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(Refusal::TransferEncoding);
                }
                chunked = true;
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => upgrade = true,
            _ => {}
        }
    }
    if http11 && !host {
        return Err(Refusal::HostMissing);
    }
    Ok(match (length, chunked) {
        (Some(_), true) => return Err(Refusal::LengthAndEncoding),
        // RFC 9110 §7.8: `Upgrade` in a HTTP/1.0 request is ignored.
        _ if upgrade && http11 => Framing::Upgrade,
        (None, true) => Framing::Chunked,
        (Some(n), false) => Framing::Length(n),
        (None, false) => Framing::Length(0),
    })
}

/// Checks a head still incomplete: refused once it can no longer fit the limits.
pub fn check_partial(head: &[u8]) -> Result<(), Refusal> {
    if head.len() >= MAX_HEAD {
        return Err(Refusal::HeadTooLong);
    }
    let line = &head[empty_lines(head)..];
    if line.len() > MAX_REQUEST_LINE + 2 && !line[..MAX_REQUEST_LINE + 2].contains(&b'\n') {
        return Err(Refusal::RequestLineTooLong);
    }
    Ok(())
}

/// The length of the empty lines (CRLF) before the request line, which a server ignores
/// (RFC 9112 §2.2).
fn empty_lines(head: &[u8]) -> usize {
    head.chunks_exact(2).take_while(|p| p == b"\r\n").count() * 2
}

/// Whether some LF is not preceded by CR.
fn has_bare_lf(head: &[u8]) -> bool {
    head.first() == Some(&b'\n') || head.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r')
}

/// `1*DIGIT` within 64 bits: no sign, no spaces, no list.
pub fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// A byte class as a table.
const fn class(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        // RFC 3986 unreserved and sub-delims.
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

/// Bytes of a `reg-name` (RFC 3986 §3.2.2) besides percent-encoding.
static REG_NAME: [bool; 256] = class(b"");
/// Bytes of a path and query (RFC 3986 `pchar`, `/` and `?`) besides percent-encoding, and
/// the few a browser sends unencoded in a query (WHATWG URL's query set leaves them): `[ ] ^
/// { | }` and the backquote. Not: controls, space, DEL, non-ASCII, `"`, `#`, `<`, `>`, `\`.
static PATH_QUERY: [bool; 256] = class(b":@/?[]^{|}`");

/// Whether `bytes` are all in `table` or well-formed `%XX` escapes.
fn escaped_ok(bytes: &[u8], table: &[bool; 256]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            match bytes.get(i + 1..i + 3) {
                Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if table[usize::from(b)] {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// The request target's form suits the method (RFC 9112 §3.2): origin-form, absolute-form
/// with an `http` or `https` URI, or `*` for OPTIONS. CONNECT's authority-form is refused
/// before this.
fn target_ok(method: &str, target: &[u8]) -> bool {
    match target {
        [b'/', ..] => escaped_ok(target, &PATH_QUERY),
        b"*" => method == "OPTIONS",
        _ => {
            let rest = if prefix_ci(target, b"http://") {
                &target[7..]
            } else if prefix_ci(target, b"https://") {
                &target[8..]
            } else {
                return false;
            };
            let end = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            authority_ok(authority, true) && escaped_ok(path, &PATH_QUERY)
        }
    }
}

fn prefix_ci(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// `uri-host [":" port]` (RFC 3986 §3.2.2–3.2.3): a reg-name or IPv4 address, or an IPv6
/// literal in brackets; no user info. `Host` may be empty (RFC 9112 §3.2); an `http` URI's
/// host may not (RFC 9110 §4.2.1).
pub fn authority_ok(value: &[u8], host_required: bool) -> bool {
    let (host_ok, port) = if let Some(literal) = value.strip_prefix(b"[") {
        let Some(close) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        let ip = &literal[..close];
        (
            !ip.is_empty()
                && ip
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
            &literal[close + 1..],
        )
    } else {
        let colon = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        let (host, port) = value.split_at(colon);
        (
            (!host_required || !host.is_empty()) && escaped_ok(host, &REG_NAME),
            port,
        )
    };
    host_ok
        && match port {
            [] => true,
            [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(head: &[u8]) -> Result<Framing, Refusal> {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(head) {
            Ok(httparse::Status::Complete(len)) => check(&head[..len], &request),
            Ok(httparse::Status::Partial) => panic!("incomplete: {head:?}"),
            Err(_) => Err(Refusal::Syntax),
        }
    }

    #[test]
    fn valid_heads_pass_with_their_framing() {
        for (head, framing) in [
            (
                &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                Framing::Length(0),
            ),
            (
                b"\r\nGET /a?b=c%20d HTTP/1.1\r\nhOsT: x:8080\r\n\r\n",
                Framing::Length(0),
            ),
            (b"GET / HTTP/1.0\r\n\r\n", Framing::Length(0)),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n",
                Framing::Length(12),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  Chunked \r\n\r\n",
                Framing::Chunked,
            ),
            (
                b"GET http://a.example:80/p?q HTTP/1.1\r\nHost: a.example:80\r\n\r\n",
                Framing::Length(0),
            ),
            (
                b"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
                Framing::Length(0),
            ),
            (
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
                Framing::Upgrade,
            ),
            (
                b"GET /ws HTTP/1.0\r\nUpgrade: websocket\r\n\r\n",
                Framing::Length(0),
            ),
            (
                b"GET /q?x={a|b}^[1]` HTTP/1.1\r\nHost: \r\n\r\n",
                Framing::Length(0),
            ),
        ] {
            assert_eq!(
                verdict(head),
                Ok(framing),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn each_violation_is_refused_with_its_reason() {
        let long = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE)
        );
        for (head, refusal) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], Refusal::HostMissing),
            (b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n", Refusal::HostRepeated),
            (b"GET / HTTP/1.1\r\nHost: x\n\r\n", Refusal::BareLf),
            (b"GET / HTTP/1.1\nHost: x\r\n\r\n", Refusal::BareLf),
            (b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::BareLf),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Refusal::HostInvalid),
            (b"GET / HTTP/1.1\r\nHost: u@x\r\n\r\n", Refusal::HostInvalid),
            (b"GET / HTTP/1.1\r\nHost: x:8o\r\n\r\n", Refusal::HostInvalid),
            (b"GET / HTTP/1.1\r\nHost: [x]\r\n\r\n", Refusal::HostInvalid),
            (b"GET a HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::Target),
            (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::Target),
            (b"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::Target),
            (b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::Target),
            (b"GET /%4 HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::Target),
            (b"GET /\\..\\ HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::Target),
            (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::Target),
            (b"GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::Target),
            (b"GET http://u@x/ HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::Target),
            (b"GET http:///p HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::Target),
            (b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", Refusal::Connect),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", Refusal::ContentLength),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", Refusal::ContentLength),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n", Refusal::ContentLength),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", Refusal::ContentLengthRepeated),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Refusal::LengthAndEncoding),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Refusal::TransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Refusal::TransferEncoding),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Refusal::TransferEncodingHttp10),
            (long.as_bytes(), Refusal::RequestLineTooLong),
        ] {
            assert_eq!(verdict(head), Err(refusal), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn what_httparse_refuses_is_syntax() {
        for head in [
            &b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(
                verdict(head),
                Err(Refusal::Syntax),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn a_complete_head_over_the_limit_is_refused_as_one_in_pieces_would_be() {
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        while head.len() <= MAX_HEAD {
            head.extend_from_slice(format!("X-Filler: {}\r\n", "f".repeat(1000)).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(verdict(&head), Err(Refusal::HeadTooLong));
        assert_eq!(check_partial(&head[..MAX_HEAD]), Err(Refusal::HeadTooLong));
    }

    #[test]
    fn a_partial_head_is_refused_once_past_the_limits() {
        assert_eq!(check_partial(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(()));
        let line = vec![b'a'; MAX_REQUEST_LINE + 3];
        assert_eq!(check_partial(&line), Err(Refusal::RequestLineTooLong));
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        while head.len() < MAX_HEAD {
            head.extend_from_slice(b"X-Filler: 0123456789abcdef\r\n");
        }
        assert_eq!(check_partial(&head), Err(Refusal::HeadTooLong));
    }
}
