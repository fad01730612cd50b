//! The scenarios, one file each, behind one trait: a [`Scenario`] says what
//! it measures ([`Description`]: title, parameters, targets) and runs one
//! repeat. [`Id`] is a scenario's name on the command line and in the JSON;
//! [`Id::scenario`] is the one table from name to scenario.

mod drain;
mod s1;
mod s2;
mod s3;
mod s4;
mod s5;
mod s6;
mod s7;
mod s8;

use std::future::Future;
use std::pin::Pin;

use clap::ValueEnum;

use crate::report::{Sample, Target};
use crate::session::Session;

/// A scenario's name (`--scenarios s1,s7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Id {
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
    S7,
    S8,
}

impl Id {
    /// The scenario of this name.
    pub fn scenario(self) -> Box<dyn Scenario> {
        match self {
            Id::S1 => Box::new(s1::scenario()),
            Id::S2 => Box::new(s2::scenario()),
            Id::S3 => Box::new(s3::scenario()),
            Id::S4 => Box::new(s4::scenario()),
            Id::S5 => Box::new(s5::Backlog),
            Id::S6 => Box::new(s6::Live),
            Id::S7 => Box::new(s7::Startup),
            Id::S8 => Box::new(s8::SyncStatus),
        }
    }
}

/// What a scenario measures, as the tables and the JSON show it.
pub struct Description {
    /// One line, with the sizes in effect.
    pub title: String,
    /// The sizes, in the JSON.
    pub params: serde_json::Value,
    /// The targets its medians are checked against.
    pub targets: Vec<Target>,
}

/// One repeat of a scenario, running.
pub type Run<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Sample>> + 'a>>;

/// A benchmark scenario.
pub trait Scenario {
    /// What it measures, for the options in `s`.
    fn describe(&self, s: &Session) -> Description;
    /// Run one repeat; `tag` names its directory of logs.
    fn run<'a>(&'a self, s: &'a Session, tag: &'a str) -> Run<'a>;
}
