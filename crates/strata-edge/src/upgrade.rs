//! Upgrades through the edge (WebSocket and the like): which requests ask for one, and the
//! client side of the tunnel, taken from the request before its hop-by-hop headers go.
//! [`crate::serve`] sends such a request on through `Shared::pass` (`pass.rs`), which joins the
//! two sides with the balancer's tunnel once the origin answers `101`.

use http::header;

/// An HTTP/1.1 Upgrade (WebSocket): the protocol asked for, and the client side of the
/// tunnel, taken now and joined to the origin's once it answers 101 (RFC 9110 §7.8: `Upgrade`
/// is ignored in a HTTP/1.0 request). Called before the hop-by-hop headers are stripped.
pub(crate) fn take_upgrade(
    parts: &mut http::request::Parts,
) -> Option<(http::HeaderValue, hyper::upgrade::OnUpgrade)> {
    match parts.headers.get(header::UPGRADE) {
        Some(protocol) if parts.version == http::Version::HTTP_11 => parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .map(|client_side| (protocol.clone(), client_side)),
        _ => None,
    }
}
