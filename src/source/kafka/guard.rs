//! The crash-loop guard: a message that keeps killing the agent (an abort,
//! an OOM kill) must not stop every run of the organisation for ever.
//!
//! What was in flight is kept where Kafka keeps the offsets: in the
//! metadata string of each committed offset (no local disk is assumed).
//!
//! * Every commit of a partition in normal operation says the owner is
//!   alive (`port-agent live <window>`); leaving cleanly (revoke, shutdown)
//!   commits `port-agent clean`. A message may kill the process before any
//!   commit lists it, so the first commit of each assignment, made before
//!   its first message starts, already says `live`.
//! * A partition assigned with `live` metadata lost its owner without a
//!   goodbye: the messages that can have been in flight are the first
//!   `window` ones from the committed offset (the uncommitted window bounds
//!   them). They are *suspects*, each found in flight at one death, and
//!   are processed one at a time, each alone in the process: before each,
//!   the offset is committed with `port-agent probe <deaths> <left>`, and
//!   after it, past it with `port-agent suspect <left - 1>` (or `live`
//!   once none is left).
//! * A partition assigned with `probe d r` metadata lost its owner while
//!   that one message ran alone: it has now been in flight at `d + 1`
//!   deaths. At [`Guard::limit`] deaths it is not processed again: it is
//!   dead-lettered (when a DLQ is set), its run reported FAILURE, counted.
//! * Anything else (no metadata, another client's) is a clean start.
//!
//! A broker that drops the metadata (tansu 0.6 does) turns the guard off;
//! the source checks once and says so.

use crate::source::offsets::Mode;

/// What a committed offset's metadata says about the partition's last owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Meta {
    /// Alive, processing up to `window` messages at once.
    Live(u32),
    /// Left cleanly.
    Clean,
    /// Between suspects: `remaining` suspects left from here.
    Suspect(u32),
    /// The message at the committed offset runs alone; it had been found
    /// in flight at `deaths` deaths before; `remaining` suspects left.
    Probe {
        /// Deaths before this attempt.
        deaths: u32,
        /// Suspects left, this one included.
        remaining: u32,
    },
    /// Not ours (no metadata, another client's): a clean start.
    Unknown,
}

const PREFIX: &str = "port-agent";

impl Meta {
    /// Read a committed offset's metadata.
    pub(super) fn parse(text: &str) -> Meta {
        let words: Vec<&str> = text.split_whitespace().collect();
        let num = |i: usize| words.get(i).and_then(|w| w.parse::<u32>().ok());
        match words.as_slice() {
            [PREFIX, "live", _] => num(2).map_or(Meta::Unknown, Meta::Live),
            [PREFIX, "clean"] => Meta::Clean,
            [PREFIX, "suspect", _] => num(2).map_or(Meta::Unknown, Meta::Suspect),
            [PREFIX, "probe", _, _] => match (num(2), num(3)) {
                (Some(deaths), Some(remaining)) => Meta::Probe { deaths, remaining },
                _ => Meta::Unknown,
            },
            _ => Meta::Unknown,
        }
    }

    /// The metadata string to commit.
    pub(super) fn text(&self) -> String {
        match self {
            Meta::Live(w) => format!("{PREFIX} live {w}"),
            Meta::Clean => format!("{PREFIX} clean"),
            Meta::Suspect(r) => format!("{PREFIX} suspect {r}"),
            Meta::Probe { deaths, remaining } => format!("{PREFIX} probe {deaths} {remaining}"),
            Meta::Unknown => String::new(),
        }
    }
}

/// Why a commit is made (the metadata depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// In normal operation (periodic, at once, or before the drain): a
    /// death after it must be noticed.
    Alive,
    /// Leaving the partition cleanly (revoke, after the drain).
    Leaving,
}

/// The guard's settings.
#[derive(Debug, Clone, Copy)]
pub(super) struct Guard {
    /// A message found in flight at this many deaths is not processed again.
    pub(super) limit: u32,
    /// This agent's uncommitted window (`AGENT_MAX_IN_FLIGHT`).
    pub(super) window: u32,
}

/// What to do with a suspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Run it alone, after committing this probe metadata.
    Probe(Meta),
    /// Do not run it: it was in flight at this many deaths.
    GiveUp(u32),
}

impl Guard {
    /// The mode of a partition whose committed offset carries `meta` (the
    /// committed offset is `committed`).
    pub(super) fn mode_after(&self, meta: Meta, committed: i64) -> Mode {
        match meta {
            Meta::Live(window) if window > 0 => Mode::Suspect {
                remaining: window,
                pending: None,
            },
            Meta::Suspect(remaining) if remaining > 0 => Mode::Suspect {
                remaining,
                pending: None,
            },
            Meta::Probe { deaths, remaining } if remaining > 0 => Mode::Suspect {
                remaining,
                pending: Some((committed, deaths.saturating_add(1))),
            },
            _ => Mode::Normal,
        }
    }

    /// The suspect at `offset` of a partition in `Suspect { remaining,
    /// pending }`: each suspect was in flight at the death that made it one;
    /// the one that ran alone when the owner died, at one more.
    pub(super) fn verdict(&self, offset: i64, remaining: u32, pending: Option<(i64, u32)>) -> Verdict {
        let deaths = match pending {
            Some((at, deaths)) if at == offset => deaths,
            _ => 1,
        };
        if deaths >= self.limit {
            Verdict::GiveUp(deaths)
        } else {
            Verdict::Probe(Meta::Probe { deaths, remaining })
        }
    }

    /// After the suspect of a `Probe { remaining }` partition is done: the
    /// mode and the metadata to commit past it.
    pub(super) fn after_probe(&self, remaining: u32) -> (Mode, Meta) {
        match remaining.saturating_sub(1) {
            0 => (Mode::Normal, Meta::Live(self.window)),
            left => (
                Mode::Suspect {
                    remaining: left,
                    pending: None,
                },
                Meta::Suspect(left),
            ),
        }
    }

    /// The metadata of a commit of `watermark` for a partition in `mode`;
    /// `None`: do not commit it now.
    pub(super) fn metadata(&self, mode: Mode, watermark: i64, purpose: Purpose) -> Option<Meta> {
        match (mode, purpose) {
            (Mode::Unchecked, _) => None,
            (Mode::Normal, Purpose::Alive) => Some(Meta::Live(self.window)),
            (Mode::Normal, Purpose::Leaving) => Some(Meta::Clean),
            (Mode::Suspect { remaining, .. }, _) => Some(Meta::Suspect(remaining)),
            // A death while the suspect runs must be blamed on it: leave
            // its probe metadata as it is.
            (Mode::Probe { .. }, Purpose::Alive) => None,
            // Leaving cleanly is no death: the suspect, done or not, is
            // passed on without one more.
            (Mode::Probe { offset, remaining }, Purpose::Leaving) => {
                if watermark > offset {
                    match remaining.saturating_sub(1) {
                        0 => Some(Meta::Clean),
                        left => Some(Meta::Suspect(left)),
                    }
                } else {
                    Some(Meta::Suspect(remaining))
                }
            }
        }
    }
}

/// The summary a given-up run is reported with.
pub(super) fn given_up_summary(deaths: u32) -> String {
    crate::report::FailureSummary::GivenUp(deaths).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUARD: Guard = Guard { limit: 3, window: 8 };

    #[test]
    fn metadata_round_trips_and_anything_else_is_unknown() {
        for m in [
            Meta::Live(64),
            Meta::Clean,
            Meta::Suspect(3),
            Meta::Probe {
                deaths: 2,
                remaining: 5,
            },
        ] {
            assert_eq!(Meta::parse(&m.text()), m, "{}", m.text());
        }
        for other in [
            "",
            "live 3",
            "port-agent live",
            "port-agent live x",
            "port-agent probe 1",
            "{\"a\":1}",
        ] {
            assert_eq!(Meta::parse(other), Meta::Unknown, "{other:?}");
        }
    }

    #[test]
    fn a_dead_owner_makes_its_window_suspect_and_a_dead_probe_counts_one_more_death() {
        assert_eq!(GUARD.mode_after(Meta::Clean, 10), Mode::Normal);
        assert_eq!(GUARD.mode_after(Meta::Unknown, 10), Mode::Normal);
        assert_eq!(
            GUARD.mode_after(Meta::Live(32), 10),
            Mode::Suspect {
                remaining: 32,
                pending: None
            }
        );
        assert_eq!(
            GUARD.mode_after(Meta::Suspect(4), 10),
            Mode::Suspect {
                remaining: 4,
                pending: None
            }
        );
        assert_eq!(
            GUARD.mode_after(
                Meta::Probe {
                    deaths: 1,
                    remaining: 4
                },
                10
            ),
            Mode::Suspect {
                remaining: 4,
                pending: Some((10, 2))
            }
        );
    }

    #[test]
    fn a_poison_message_is_given_up_at_the_third_death_and_its_neighbours_never() {
        // Death 1: the owner died with the poison (offset 10) somewhere in
        // its window: every suspect was in flight at 1 death.
        let mode = GUARD.mode_after(Meta::Live(8), 10);
        let Mode::Suspect { remaining, pending } = mode else {
            panic!("{mode:?}")
        };
        assert_eq!(
            GUARD.verdict(10, remaining, pending),
            Verdict::Probe(Meta::Probe {
                deaths: 1,
                remaining: 8
            })
        );
        // Death 2, while it ran alone.
        let Mode::Suspect { remaining, pending } = GUARD.mode_after(
            Meta::Probe {
                deaths: 1,
                remaining: 8,
            },
            10,
        ) else {
            panic!()
        };
        assert_eq!(
            GUARD.verdict(10, remaining, pending),
            Verdict::Probe(Meta::Probe {
                deaths: 2,
                remaining: 8
            })
        );
        // Death 3: given up.
        let Mode::Suspect { remaining, pending } = GUARD.mode_after(
            Meta::Probe {
                deaths: 2,
                remaining: 8,
            },
            10,
        ) else {
            panic!()
        };
        assert_eq!(GUARD.verdict(10, remaining, pending), Verdict::GiveUp(3));
        // The next suspect is tried alone, at 1 death.
        assert_eq!(
            GUARD.verdict(11, 7, None),
            Verdict::Probe(Meta::Probe {
                deaths: 1,
                remaining: 7
            })
        );
    }

    #[test]
    fn after_the_last_suspect_the_partition_is_normal_again() {
        assert_eq!(
            GUARD.after_probe(3),
            (
                Mode::Suspect {
                    remaining: 2,
                    pending: None
                },
                Meta::Suspect(2)
            )
        );
        assert_eq!(GUARD.after_probe(1), (Mode::Normal, Meta::Live(8)));
    }

    #[test]
    fn commits_say_alive_leaving_or_keep_a_running_probe_blamable() {
        use Purpose::*;
        assert_eq!(GUARD.metadata(Mode::Normal, 5, Alive), Some(Meta::Live(8)));
        assert_eq!(GUARD.metadata(Mode::Normal, 5, Leaving), Some(Meta::Clean));
        assert_eq!(GUARD.metadata(Mode::Unchecked, 5, Leaving), None);
        let suspect = Mode::Suspect {
            remaining: 4,
            pending: None,
        };
        assert_eq!(GUARD.metadata(suspect, 5, Alive), Some(Meta::Suspect(4)));
        let probe = Mode::Probe {
            offset: 5,
            remaining: 4,
        };
        assert_eq!(GUARD.metadata(probe, 5, Alive), None);
        assert_eq!(GUARD.metadata(probe, 5, Leaving), Some(Meta::Suspect(4)));
        assert_eq!(GUARD.metadata(probe, 6, Leaving), Some(Meta::Suspect(3)));
        let last = Mode::Probe {
            offset: 5,
            remaining: 1,
        };
        assert_eq!(GUARD.metadata(last, 6, Leaving), Some(Meta::Clean));
    }

    #[test]
    fn the_summary_names_the_deaths() {
        assert_eq!(
            given_up_summary(3),
            "the agent stopped 3 times while processing this run"
        );
    }
}
