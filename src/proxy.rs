//! Which proxy a request to a target or to Port goes through:
//! `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` (or their lower-case names) and
//! `NO_PROXY`, read as curl and Python `requests` read them. reqwest's own
//! reading of `NO_PROXY` misses IP-literal hosts for `*` and `host:port`
//! entries, so the agent decides itself and hands reqwest the answer.
//!
//! A `NO_PROXY` entry (comma-separated; spaces ignored; any case) is one of:
//! - `*`: every host;
//! - an IP address (`10.1.2.3`, `::1`, `[::1]`): that address;
//! - a network in CIDR form (`10.0.0.0/8`, `fd00::/8`): IP-literal hosts in
//!   it (host names are not resolved);
//! - a host name, with or without a leading `.` or `*.`: that host and its
//!   subdomains (`example.com` covers `ci.example.com`, not `badexample.com`);
//! - any of the above with `:port` (`[::1]:8080` for IPv6): the same, only
//!   for URLs to that port (the scheme's default port when none is given).

use std::net::IpAddr;

use url::Url;

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `*`.
    All,
    /// An IP address, with an optional port.
    Ip(IpAddr, Option<u16>),
    /// A network: address and prefix length.
    Network(IpAddr, u8),
    /// A host name (lower case, no leading dot) and its subdomains, with an
    /// optional port.
    Name(String, Option<u16>),
}

/// `NO_PROXY`: the hosts reached directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    entries: Vec<Entry>,
}

/// `host` and `:port` of an entry (`[v6]:port`, `name:port`, `v4:port`);
/// a bare IPv6 address has no port.
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            return (host, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    if entry.matches(':').count() == 1 {
        if let Some((host, port)) = entry.split_once(':') {
            if let Ok(port) = port.parse() {
                return (host, Some(port));
            }
        }
    }
    (entry, None)
}

/// Is `ip` in the network `net`/`bits`?
pub fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits.min(32))).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits.min(128))).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// `10.0.0.0/8` as an address and a prefix length within its family.
fn parse_network(entry: &str) -> Option<(IpAddr, u8)> {
    let (net, bits) = entry.split_once('/')?;
    let net: IpAddr = net.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((net, bits))
}

impl NoProxy {
    /// Parse a `NO_PROXY` value; entries that fit none of the forms are
    /// ignored (as curl and `requests` do).
    pub fn parse(value: &str) -> NoProxy {
        let mut entries = Vec::new();
        for raw in value.split(',') {
            let entry: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
            let entry = entry.to_ascii_lowercase();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                entries.push(Entry::All);
            } else if let Some((net, bits)) = parse_network(&entry) {
                entries.push(Entry::Network(net, bits));
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                entries.push(Entry::Ip(ip, None));
            } else {
                let (host, port) = split_port(&entry);
                if let Ok(ip) = host.parse::<IpAddr>() {
                    entries.push(Entry::Ip(ip, port));
                } else {
                    let name = host.trim_start_matches("*.").trim_start_matches('.');
                    if !name.is_empty() {
                        entries.push(Entry::Name(name.to_string(), port));
                    }
                }
            }
        }
        NoProxy { entries }
    }

    /// Does `url` go direct?
    pub fn bypasses(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        let ip = host.parse::<IpAddr>().ok();
        let port = url.port_or_known_default();
        let port_ok = |want: &Option<u16>| want.is_none() || *want == port;
        self.entries.iter().any(|e| match e {
            Entry::All => true,
            Entry::Ip(addr, p) => ip == Some(*addr) && port_ok(p),
            Entry::Network(net, bits) => ip.is_some_and(|ip| in_network(ip, *net, *bits)),
            Entry::Name(name, p) => {
                ip.is_none() && (host == name || host.ends_with(&format!(".{name}"))) && port_ok(p)
            }
        })
    }
}

/// The proxies of the environment, and the hosts that bypass them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    /// For `http` URLs (`HTTP_PROXY`, else `ALL_PROXY`).
    pub http: Option<Url>,
    /// For `https` URLs (`HTTPS_PROXY`, else `ALL_PROXY`).
    pub https: Option<Url>,
    /// `NO_PROXY`.
    pub no_proxy: NoProxy,
}

/// A proxy address as curl takes it: a URL, or `host:port` meaning
/// `http://host:port`.
pub fn parse_proxy_url(value: &str) -> Result<Url, ProxyUrlError> {
    let value = value.trim();
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let url = Url::parse(&with_scheme).map_err(ProxyUrlError::NotAUrl)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ProxyUrlError::Unsupported);
    }
    Ok(url)
}

/// A proxy setting that is not a proxy address the agent can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyUrlError {
    /// Not a URL.
    #[error("expected a proxy URL such as http://proxy:3128 ({0})")]
    NotAUrl(url::ParseError),
    /// Not `http`/`https`, or without a host.
    #[error("expected an http:// or https:// proxy URL with a host")]
    Unsupported,
}

/// `%XX` sequences of a URL's user or password decoded.
pub fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match (b, hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Proxies {
    /// The proxy for a request to `url`, if any.
    pub fn for_url(&self, url: &Url) -> Option<Url> {
        let proxy = match url.scheme() {
            "http" => self.http.as_ref(),
            "https" => self.https.as_ref(),
            _ => None,
        }?;
        (!self.no_proxy.bypasses(url)).then(|| proxy.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    /// Each form, for an IP-literal host and a named host.
    #[test]
    fn no_proxy_forms() {
        let ip = "http://127.0.0.1:8080/hook";
        let named = "http://api.example.com:8080/hook";
        for (list, ip_direct, named_direct) in [
            ("*", true, true),
            ("127.0.0.1", true, false),
            ("127.0.0.1:8080", true, false),
            ("127.0.0.1:9090", false, false),
            ("127.0.0.0/8", true, false),
            ("10.0.0.0/8", false, false),
            ("api.example.com", false, true),
            ("example.com", false, true),
            (".example.com", false, true),
            ("*.example.com", false, true),
            ("api.example.com:8080", false, true),
            ("api.example.com:9090", false, false),
            ("ample.com", false, false),
            ("other.org, 127.0.0.1 ,api.example.com", true, true),
            ("", false, false),
            ("API.Example.COM", false, true),
        ] {
            let n = NoProxy::parse(list);
            assert_eq!(n.bypasses(&u(ip)), ip_direct, "{list:?} for {ip}");
            assert_eq!(n.bypasses(&u(named)), named_direct, "{list:?} for {named}");
        }
        let v6 = NoProxy::parse("[::1]:8080, fd00::/8");
        assert!(v6.bypasses(&u("http://[::1]:8080/")));
        assert!(!v6.bypasses(&u("http://[::1]:80/")));
        assert!(v6.bypasses(&u("https://[fd12::1]/")));
        assert!(NoProxy::parse("::1").bypasses(&u("http://[::1]/")));
        // Default ports count.
        assert!(NoProxy::parse("example.com:443").bypasses(&u("https://example.com/")));
    }

    #[test]
    fn the_proxy_follows_the_scheme() {
        let p = Proxies {
            http: Some(u("http://p:3128")),
            https: None,
            no_proxy: NoProxy::parse("direct.example"),
        };
        assert_eq!(p.for_url(&u("http://a.example/")), Some(u("http://p:3128")));
        assert_eq!(p.for_url(&u("https://a.example/")), None);
        assert_eq!(p.for_url(&u("http://direct.example/")), None);
        assert_eq!(parse_proxy_url("p:3128").unwrap(), u("http://p:3128"));
        assert!(parse_proxy_url("socks5://p:1080").is_err());
    }
}
