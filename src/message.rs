//! Incoming messages (SPEC §3): what kind of invocation a message is, and the
//! invocation method that says where it goes.

use serde_json::{Map, Value};

/// Which topic a message came from; decides where the invocation method is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// The runs topic: `.payload.action.invocationMethod`.
    Runs,
    /// The change-log topic: `.changelogDestination`.
    ChangeLog,
    /// Any other topic: no invocation method.
    Other,
}

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An action (or automation) run: report to `/v1/actions/runs/{id}`.
    ActionRun(String),
    /// A workflow node run (`wfnr_…`): report to `/v1/workflows/nodes/runs/{id}`.
    NodeRun(String),
    /// A change-log event: send the request, report nothing.
    ChangeLog,
}

impl Kind {
    /// The run id, when there is one.
    pub fn run_id(&self) -> Option<&str> {
        match self {
            Kind::ActionRun(id) | Kind::NodeRun(id) => Some(id),
            Kind::ChangeLog => None,
        }
    }
}

/// A parsed message and what was derived from it.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The message (signature headers are stripped later).
    pub message: Value,
    /// The invocation method (`{}` when absent).
    pub method: Map<String, Value>,
}

/// Why a message cannot be handled at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not UTF-8 JSON.
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("message is not a JSON object")]
    NotAnObject,
}

impl Invocation {
    /// Parse a message value from its bytes.
    pub fn parse(bytes: &[u8], topic: TopicKind) -> Result<Invocation, ParseError> {
        let message: Value = serde_json::from_slice(bytes).map_err(|e| ParseError::NotJson(e.to_string()))?;
        Self::from_value(message, topic)
    }

    /// Wrap an already parsed message.
    pub fn from_value(message: Value, topic: TopicKind) -> Result<Invocation, ParseError> {
        if !message.is_object() {
            return Err(ParseError::NotAnObject);
        }
        let method = match topic {
            TopicKind::Runs => message.pointer("/payload/action/invocationMethod"),
            TopicKind::ChangeLog => message.get("changelogDestination"),
            TopicKind::Other => None,
        }
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
        Ok(Invocation { message, method })
    }

    /// `invocationMethod.agent` is literally true.
    pub fn for_agent(&self) -> bool {
        self.method.get("agent") == Some(&Value::Bool(true))
    }

    /// `invocationMethod.synchronized` is literally true.
    pub fn synchronized(&self) -> bool {
        self.method.get("synchronized") == Some(&Value::Bool(true))
    }

    /// `invocationMethod.type`.
    pub fn method_type(&self) -> Option<&str> {
        self.method.get("type").and_then(Value::as_str)
    }

    /// A GitLab invocation (its signature covers a different body).
    pub fn is_gitlab(&self) -> bool {
        self.method_type() == Some("GITLAB")
    }

    /// The run id (`.context.runId`), if any.
    pub fn run_id(&self) -> Option<&str> {
        self.message
            .pointer("/context/runId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The kind, or `None` when there is neither a run id nor a URL.
    pub fn kind(&self) -> Option<Kind> {
        match self.run_id() {
            Some(id) if id.starts_with("wfnr_") => Some(Kind::NodeRun(id.to_string())),
            Some(id) => Some(Kind::ActionRun(id.to_string())),
            None if self.method.get("url").is_some() => Some(Kind::ChangeLog),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inv(v: Value, t: TopicKind) -> Invocation {
        Invocation::from_value(v, t).unwrap()
    }

    #[test]
    fn a_message_nested_deeper_than_128_levels_is_unparsable() {
        let nested = |depth: usize| {
            let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            format!(r#"{{"context": {{"runId": "r_1"}}, "payload": {{"x": {deep}}}}}"#)
        };
        // 2 levels are the message and its payload.
        assert!(Invocation::parse(nested(120).as_bytes(), TopicKind::Runs).is_ok());
        assert!(Invocation::parse(nested(200).as_bytes(), TopicKind::Runs).is_err());
    }

    #[test]
    fn invocation_method_depends_on_the_topic() {
        let m = json!({"payload": {"action": {"invocationMethod": {"agent": true, "url": "http://a"}}},
                       "changelogDestination": {"agent": true, "url": "http://c"}});
        assert_eq!(inv(m.clone(), TopicKind::Runs).method["url"], "http://a");
        assert_eq!(inv(m.clone(), TopicKind::ChangeLog).method["url"], "http://c");
        assert!(inv(m, TopicKind::Other).method.is_empty());
    }

    #[test]
    fn kinds() {
        let run = |id: &str| json!({"context": {"runId": id}, "payload": {"action": {"invocationMethod": {"agent": true}}}});
        assert_eq!(
            inv(run("r_1"), TopicKind::Runs).kind(),
            Some(Kind::ActionRun("r_1".into()))
        );
        assert_eq!(
            inv(run("wfnr_1"), TopicKind::Runs).kind(),
            Some(Kind::NodeRun("wfnr_1".into()))
        );
        let cl = json!({"changelogDestination": {"agent": true, "url": "http://c"}});
        assert_eq!(inv(cl, TopicKind::ChangeLog).kind(), Some(Kind::ChangeLog));
        assert_eq!(inv(json!({}), TopicKind::Runs).kind(), None);
    }

    #[test]
    fn agent_must_be_literally_true() {
        for (agent, want) in [
            (json!(true), true),
            (json!("true"), false),
            (json!(1), false),
            (json!(null), false),
        ] {
            let m = json!({"payload": {"action": {"invocationMethod": {"agent": agent}}}});
            assert_eq!(inv(m, TopicKind::Runs).for_agent(), want);
        }
    }

    #[test]
    fn unparsable_messages_are_errors_not_panics() {
        assert!(matches!(
            Invocation::parse(b"{nope", TopicKind::Runs),
            Err(ParseError::NotJson(_))
        ));
        assert_eq!(
            Invocation::parse(b"[1]", TopicKind::Runs).unwrap_err(),
            ParseError::NotAnObject
        );
        assert!(matches!(
            Invocation::parse(&[0xff, 0xfe], TopicKind::Runs),
            Err(ParseError::NotJson(_))
        ));
    }
}
