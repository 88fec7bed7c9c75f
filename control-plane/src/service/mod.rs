//! The gRPC services over [`ControlPlane`], one file each: [`node`]
//! (register, heartbeat, drain), [`lease`] (the lease stream with its flow
//! control, ack, renew, results), [`run`] (submit, get, list, cancel,
//! watch) and [`registry`] (publish, resolve, fetch). This file holds what
//! they share: the store error and lease answers as `tonic::Status`.

mod auth;
mod lease;
mod node;
mod registry;
mod run;
mod submit;

use crate::store::{LeaseCheck, StoreError};
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Response, Status};
use warden_proto::v1::ResultResponse;

/// Most bytes of one page of a list (runs, agents).
const MAX_LIST_BYTES: usize = 4 << 20;

/// Ends a page of a list where its bytes would pass [`MAX_LIST_BYTES`]
/// (after one entry at least); whether it cut any.
pub(crate) fn cut_to_page<T: prost::Message>(entries: &mut Vec<T>) -> bool {
    let mut bytes = 0;
    let fits = entries
        .iter()
        .position(|e| {
            bytes += e.encoded_len() + 8;
            bytes > MAX_LIST_BYTES
        })
        .map_or(entries.len(), |i| i.max(1));
    let cut = fits < entries.len();
    entries.truncate(fits);
    cut
}

pub(crate) type StreamOf<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        match e {
            // The database is away, not the request wrong: worth a retry.
            StoreError::Unreachable { .. } => Status::unavailable(e.to_string()),
            _ => Status::internal(e.to_string()),
        }
    }
}

/// The answer to a single Complete or Fail.
pub(crate) fn lease_answer(check: LeaseCheck) -> Result<Response<ResultResponse>, Status> {
    match check {
        LeaseCheck::Recorded => Ok(Response::new(ResultResponse { recorded: true })),
        LeaseCheck::AlreadyRecorded => Ok(Response::new(ResultResponse { recorded: false })),
        LeaseCheck::Stale(m) | LeaseCheck::Conflict(m) => Err(Status::failed_precondition(m)),
        LeaseCheck::NotFound => Err(Status::not_found("no such run")),
    }
}

/// The answer for a reference `tenant` has not published: `known`, whether
/// it has the agent under another version.
pub(crate) fn agent_not_found(tenant: &str, name: &str, version: &str, known: bool) -> Status {
    Status::not_found(if known {
        format!("agent {name} of tenant {tenant} has no version {version}")
    } else {
        format!(
            "tenant {tenant} has no agent named {name}: publish it first (`warden publish`); \
             `warden whoami` says which tenant your token is for"
        )
    })
}

/// Problems found, as an answer lists them: each one's status code (snake
/// case) and message.
pub(crate) fn listed(found: &[Status]) -> Vec<warden_proto::v1::SubmitProblem> {
    found
        .iter()
        .map(|s| warden_proto::v1::SubmitProblem {
            code: crate::http_api::code_name(s.code()),
            message: s.message().to_string(),
        })
        .collect()
}

pub(crate) fn parse_reference(reference: &str) -> Result<(&str, &str), Status> {
    warden_core::split_reference(reference).map_err(|e| Status::invalid_argument(e.to_string()))
}
