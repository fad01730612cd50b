//! Where a target request may go: the allow-list (`AGENT_ALLOWED_TARGETS`)
//! and the redirect policy (`AGENT_TARGET_REDIRECTS`). Pure rules, no I/O;
//! the pipeline checks the allow-list before a request is sent, the invoker
//! checks both before it follows a redirect.

use std::net::IpAddr;

use crate::proxy::in_network;

use url::Url;

/// Which redirects of a target are followed (at most [`MAX_REDIRECTS`] hops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectPolicy {
    /// None: a 3xx is the target's answer.
    None,
    /// Only to the same host and port (an `http` → `https` upgrade of the
    /// same host is allowed; `https` → `http` never). The default.
    SameHost,
    /// Any host, unless the request carries a known secret value (then a
    /// redirect to another host is the answer); another host gets none of
    /// the mapping's headers nor the signature.
    Any,
}

/// Most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;

impl RedirectPolicy {
    /// Parse `none|same-host|any` (any case).
    pub fn parse(s: &str) -> Option<RedirectPolicy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Some(RedirectPolicy::None),
            "same-host" => Some(RedirectPolicy::SameHost),
            "any" => Some(RedirectPolicy::Any),
            _ => None,
        }
    }

    /// May a request to `from` follow a redirect to `to`? `Err` says why not.
    pub fn allows(self, from: &Url, to: &Url) -> Result<(), RedirectRefused> {
        if !matches!(to.scheme(), "http" | "https") {
            return Err(RedirectRefused::Scheme(to.scheme().to_string()));
        }
        if from.scheme() == "https" && to.scheme() == "http" {
            return Err(RedirectRefused::Downgrade);
        }
        match self {
            RedirectPolicy::None => Err(RedirectRefused::Off),
            RedirectPolicy::Any => Ok(()),
            RedirectPolicy::SameHost if same_host(from, to) => Ok(()),
            RedirectPolicy::SameHost => Err(RedirectRefused::OtherHost(host_port(to))),
        }
    }
}

/// Why a target's redirect is not followed (it is then the answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectRefused {
    /// To a URL that is not `http` or `https`: its scheme.
    #[error("redirect to a {0} URL is not followed")]
    Scheme(String),
    /// From `https` to `http`.
    #[error("redirect from https to http is not followed")]
    Downgrade,
    /// `AGENT_TARGET_REDIRECTS=none`.
    #[error("AGENT_TARGET_REDIRECTS is none")]
    Off,
    /// To another host under `same-host`: its `host[:port]`.
    #[error("redirect to another host ({0}) is not followed (AGENT_TARGET_REDIRECTS=same-host)")]
    OtherHost(String),
    /// To another host while the request carries a secret.
    #[error("redirect to another host ({0}) is not followed: the request carries a secret")]
    CarriesSecret(String),
    /// To a URL outside `AGENT_ALLOWED_TARGETS`.
    #[error("redirect to {0} is not followed: not allowed by AGENT_ALLOWED_TARGETS")]
    NotAllowed(String),
}

/// Same host name and port; or the `http` → `https` upgrade of the same host
/// from port 80 to 443.
pub fn same_host(from: &Url, to: &Url) -> bool {
    if from.host_str() != to.host_str() {
        return false;
    }
    let (fp, tp) = (from.port_or_known_default(), to.port_or_known_default());
    fp == tp || (from.scheme() == "http" && to.scheme() == "https" && fp == Some(80) && tp == Some(443))
}

/// `host[:port]` of a URL, for messages.
pub fn host_port(u: &Url) -> String {
    match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => u.as_str().to_string(),
    }
}

/// One entry of `AGENT_ALLOWED_TARGETS`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `https://ci.example.com/hooks/`: same scheme, host and port, and the
    /// path under the prefix's path.
    Prefix(Url),
    /// `ci.example.com` (exact) or `*.internal` (any subdomain).
    Host { name: String, wildcard: bool },
    /// `10.0.0.0/8`: URLs whose host is an IP address in the network (host
    /// names are not resolved).
    Network { net: IpAddr, bits: u8 },
}

/// `AGENT_ALLOWED_TARGETS`: the URLs target requests may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<Rule>,
}

impl AllowList {
    /// Parse a comma-separated list; `Err` names the entry that is not a URL
    /// prefix, host pattern or network.
    pub fn parse(list: &str) -> Result<AllowList, AllowListError> {
        let mut rules = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            rules.push(parse_rule(entry)?);
        }
        if rules.is_empty() {
            return Err(AllowListError::Empty);
        }
        Ok(AllowList { rules })
    }

    /// Is `url` allowed?
    pub fn allows(&self, url: &Url) -> bool {
        self.rules.iter().any(|r| rule_allows(r, url))
    }
}

/// An entry of `AGENT_ALLOWED_TARGETS` that is none of the three forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowListError {
    /// No entry at all.
    #[error("expected at least one URL prefix, host pattern or network")]
    Empty,
    /// Has `://` but does not parse as a URL.
    #[error("'{entry}' is not a URL prefix: {reason}")]
    NotAUrl {
        /// The entry.
        entry: String,
        /// The URL parser's words.
        reason: url::ParseError,
    },
    /// A URL prefix without a host.
    #[error("'{0}' has no host")]
    NoHost(String),
    /// Has `/` but its address part is not an IP address.
    #[error("'{0}' is not a network such as 10.0.0.0/8")]
    NotANetwork(String),
    /// A network whose prefix length is too long for its address.
    #[error("'{entry}': the prefix length must be 0 to {max}")]
    PrefixLength {
        /// The entry.
        entry: String,
        /// 32 (IPv4) or 128 (IPv6).
        max: u8,
    },
    /// Not a host name either.
    #[error("'{0}' is not a URL prefix (https://host/path), host (ci.example.com, *.internal) or network (10.0.0.0/8)")]
    Unrecognised(String),
}

fn parse_rule(entry: &str) -> Result<Rule, AllowListError> {
    if entry.contains("://") {
        let u = Url::parse(entry).map_err(|reason| AllowListError::NotAUrl {
            entry: entry.to_string(),
            reason,
        })?;
        if u.host_str().is_none() {
            return Err(AllowListError::NoHost(entry.to_string()));
        }
        return Ok(Rule::Prefix(u));
    }
    if let Some((net, bits)) = entry.split_once('/') {
        let net: IpAddr = net
            .parse()
            .map_err(|_| AllowListError::NotANetwork(entry.to_string()))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits: u8 =
            bits.parse()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| AllowListError::PrefixLength {
                    entry: entry.to_string(),
                    max,
                })?;
        return Ok(Rule::Network { net, bits });
    }
    let (name, wildcard) = match entry.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (entry, false),
    };
    let name = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if name.is_empty() || name.contains(['/', '*', ':', '@']) && name.parse::<IpAddr>().is_err() {
        return Err(AllowListError::Unrecognised(entry.to_string()));
    }
    Ok(Rule::Host { name, wildcard })
}

fn rule_allows(rule: &Rule, url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    match rule {
        Rule::Prefix(p) => {
            let prefix_path = p.path();
            url.scheme() == p.scheme()
                && url.host_str() == p.host_str()
                && url.port_or_known_default() == p.port_or_known_default()
                && (prefix_path.ends_with('/') && url.path().starts_with(prefix_path)
                    || url.path() == prefix_path
                    || url.path().starts_with(&format!("{prefix_path}/")))
        }
        Rule::Host { name, wildcard } => {
            if *wildcard {
                host.len() > name.len() + 1 && host.ends_with(&format!(".{name}"))
            } else {
                host == *name
            }
        }
        Rule::Network { net, bits } => host.parse::<IpAddr>().is_ok_and(|ip| in_network(ip, *net, *bits)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn allow_list_entries() {
        let list = AllowList::parse(
            "https://ci.example.com/hooks/, *.internal ,10.0.0.0/8, exact.host, https://a.b/x",
        )
        .unwrap();
        for (url, want) in [
            ("https://ci.example.com/hooks/deploy", true),
            ("https://ci.example.com/hooks/", true),
            ("https://ci.example.com/other", false),
            ("http://ci.example.com/hooks/deploy", false),
            ("https://ci.example.com:8443/hooks/deploy", false),
            ("https://ci.example.com.evil.io/hooks/", false),
            ("http://deployer.internal/x", true),
            ("http://a.b.internal:9000/x", true),
            ("http://internal/x", false),
            // An empty first label is no subdomain.
            ("http://.internal/x", false),
            ("http://evilinternal/x", false),
            ("http://10.1.2.3:8080/x", true),
            ("http://11.1.2.3/x", false),
            ("http://EXACT.host/x", true),
            ("http://sub.exact.host/x", false),
            ("https://a.b/x", true),
            ("https://a.b/x/y", true),
            ("https://a.b/xy", false),
        ] {
            assert_eq!(list.allows(&u(url)), want, "{url}");
        }
        let v6 = AllowList::parse("fd00::/8").unwrap();
        assert!(v6.allows(&u("http://[fd12::1]/x")));
        assert!(!v6.allows(&u("http://[fe80::1]/x")));
        assert!(AllowList::parse("0.0.0.0/0")
            .unwrap()
            .allows(&u("http://1.2.3.4/")));
    }

    #[test]
    fn bad_allow_list_entries_are_named() {
        for bad in ["", " , ", "10.0.0.0/33", "nope/8", "http://", "a/b"] {
            assert!(AllowList::parse(bad).is_err(), "{bad}");
        }
        let e = AllowList::parse("ok.host, 10.0.0.0/99").unwrap_err().to_string();
        assert!(e.contains("10.0.0.0/99"), "{e}");
    }

    #[test]
    fn redirect_rules() {
        let same = RedirectPolicy::SameHost;
        assert!(same.allows(&u("http://a:8080/x"), &u("http://a:8080/y")).is_ok());
        assert!(same.allows(&u("http://a/x"), &u("https://a/y")).is_ok());
        assert!(same.allows(&u("http://a:8080/x"), &u("http://a:8081/y")).is_err());
        // The upgrade is from port 80 to 443 only: another port is another
        // service, and a port is not an upgrade without the scheme.
        assert!(same.allows(&u("http://a:8080/x"), &u("https://a/y")).is_err());
        assert!(same
            .allows(&u("http://a:8080/x"), &u("https://a:8443/y"))
            .is_err());
        assert!(same.allows(&u("http://a/x"), &u("http://a:443/y")).is_err());
        assert!(same.allows(&u("http://a/x"), &u("http://b/y")).is_err());
        assert!(same.allows(&u("https://a/x"), &u("http://a/y")).is_err());
        assert!(RedirectPolicy::Any
            .allows(&u("https://a/x"), &u("http://b/y"))
            .is_err());
        assert!(RedirectPolicy::Any
            .allows(&u("http://a/x"), &u("https://b/y"))
            .is_ok());
        assert!(RedirectPolicy::Any
            .allows(&u("http://a/x"), &u("file:///etc/passwd"))
            .is_err());
        assert!(RedirectPolicy::None
            .allows(&u("http://a/x"), &u("http://a/y"))
            .is_err());
        assert_eq!(RedirectPolicy::parse("Same-Host"), Some(RedirectPolicy::SameHost));
        assert_eq!(RedirectPolicy::parse("sometimes"), None);
    }
}
