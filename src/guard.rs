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
    pub fn allows(self, from: &Url, to: &Url) -> Result<(), String> {
        if !matches!(to.scheme(), "http" | "https") {
            return Err(format!("redirect to a {} URL is not followed", to.scheme()));
        }
        if from.scheme() == "https" && to.scheme() == "http" {
            return Err("redirect from https to http is not followed".into());
        }
        match self {
            RedirectPolicy::None => Err("AGENT_TARGET_REDIRECTS is none".into()),
            RedirectPolicy::Any => Ok(()),
            RedirectPolicy::SameHost if same_host(from, to) => Ok(()),
            RedirectPolicy::SameHost => Err(format!(
                "redirect to another host ({}) is not followed (AGENT_TARGET_REDIRECTS=same-host)",
                host_port(to)
            )),
        }
    }
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
    pub fn parse(list: &str) -> Result<AllowList, String> {
        let mut rules = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            rules.push(parse_rule(entry)?);
        }
        if rules.is_empty() {
            return Err("expected at least one URL prefix, host pattern or network".into());
        }
        Ok(AllowList { rules })
    }

    /// Is `url` allowed?
    pub fn allows(&self, url: &Url) -> bool {
        self.rules.iter().any(|r| rule_allows(r, url))
    }
}

fn parse_rule(entry: &str) -> Result<Rule, String> {
    if entry.contains("://") {
        let u = Url::parse(entry).map_err(|e| format!("'{entry}' is not a URL prefix: {e}"))?;
        if u.host_str().is_none() {
            return Err(format!("'{entry}' has no host"));
        }
        return Ok(Rule::Prefix(u));
    }
    if let Some((net, bits)) = entry.split_once('/') {
        let net: IpAddr = net
            .parse()
            .map_err(|_| format!("'{entry}' is not a network such as 10.0.0.0/8"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("'{entry}': the prefix length must be 0 to {max}"))?;
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
        return Err(format!(
            "'{entry}' is not a URL prefix (https://host/path), host (ci.example.com, *.internal) or network (10.0.0.0/8)"
        ));
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
        let e = AllowList::parse("ok.host, 10.0.0.0/99").unwrap_err();
        assert!(e.contains("10.0.0.0/99"), "{e}");
    }

    #[test]
    fn redirect_rules() {
        let same = RedirectPolicy::SameHost;
        assert!(same.allows(&u("http://a:8080/x"), &u("http://a:8080/y")).is_ok());
        assert!(same.allows(&u("http://a/x"), &u("https://a/y")).is_ok());
        assert!(same.allows(&u("http://a:8080/x"), &u("http://a:8081/y")).is_err());
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
