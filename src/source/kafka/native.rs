//! Two librdkafka calls that rust-rdkafka 0.39 does not offer the way the
//! agent needs them:
//!
//! * an offset commit that waits for the broker's answer **at most** a given
//!   time ([`commit_within`]). rust-rdkafka's `CommitMode::Sync` waits with
//!   no deadline (librdkafka's `rd_kafka_commit` blocks until the broker
//!   answers): a commit to brokers that are gone, made while the consumer
//!   closes, held a shutdown (and a test run) for ever (issue 23). Here the
//!   commit is posted with `rd_kafka_commit_queue` to a queue of its own,
//!   which is polled with a timeout. A commit that is not answered in time
//!   is not cancelled: librdkafka still sends it, and waits for it before
//!   it completes a rebalance, as it would for a synchronous one;
//! * the metadata of committed offsets, read without the panic of
//!   `TopicPartitionListElem::metadata` on bytes that are not UTF-8 (any
//!   client may commit any metadata).
//!
//! The only `unsafe` code of the agent lives here.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;

/// Why a commit did not happen (as far as the agent knows).
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The client or the broker refused it.
    #[error("{0}")]
    Refused(KafkaError),
    /// No answer within the deadline.
    #[error("no answer from the broker within {0:?}")]
    TimedOut(Duration),
}

/// Commit `offsets` (with their metadata) and wait at most `timeout` for
/// the broker's answer.
pub fn commit_within<C: ClientContext>(
    client: &Client<C>,
    offsets: &TopicPartitionList,
    timeout: Duration,
) -> Result<(), CommitError> {
    let rk = client.native_ptr();
    let no_error = rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
    let refused = |e: rd::rd_kafka_resp_err_t| {
        CommitError::Refused(KafkaError::ConsumerCommit(RDKafkaErrorCode::from(e)))
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `rk` is the live handle of `client`, borrowed for the whole
    // call, and `offsets` a live list librdkafka copies. The queue is ours:
    // created here and destroyed on every path. The commit keeps its own
    // reference to the queue (librdkafka reference-counts queues), so
    // destroying ours before an answer that comes late is safe; the event
    // we get is destroyed once read.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        if queue.is_null() {
            return Err(refused(rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__FAIL));
        }
        let posted = rd::rd_kafka_commit_queue(rk, offsets.ptr(), queue, None, std::ptr::null_mut());
        let result = if posted != no_error {
            Err(refused(posted))
        } else {
            let event = rd::rd_kafka_queue_poll(queue, ms);
            if event.is_null() {
                Err(CommitError::TimedOut(timeout))
            } else {
                let answer = rd::rd_kafka_event_error(event);
                rd::rd_kafka_event_destroy(event);
                if answer == no_error {
                    Ok(())
                } else {
                    Err(refused(answer))
                }
            }
        };
        rd::rd_kafka_queue_destroy(queue);
        result
    }
}

/// The metadata of `topic`/`partition` in `list` (as a committed-offsets
/// answer holds it), bytes that are not UTF-8 replaced; empty when absent.
pub fn metadata(list: &TopicPartitionList, topic: &str, partition: i32) -> String {
    let Ok(name) = CString::new(topic) else {
        return String::new();
    };
    // SAFETY: `list` is a live list for the whole call; the element found
    // (or null) points into it, and its metadata pointer and size describe
    // a buffer librdkafka owns, copied out before `list` can change.
    unsafe {
        let elem = rd::rd_kafka_topic_partition_list_find(list.ptr(), name.as_ptr(), partition);
        if elem.is_null() || (*elem).metadata.is_null() || (*elem).metadata_size == 0 {
            return String::new();
        }
        let bytes = std::slice::from_raw_parts((*elem).metadata as *const u8, (*elem).metadata_size);
        String::from_utf8_lossy(bytes).into_owned()
    }
}
