//! A run's logs and state changes as they happen: Server-Sent Events
//! over `RunService.Logs` and `RunService.Watch` (each held open counts
//! against the token's streams, as over gRPC).

use super::openapi::Problems;
use super::problem::ApiError;
use super::{authorize, invoke, query};
use crate::ControlPlane;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::{HeaderMap, Uri};
use serde::Deserialize;
use std::convert::Infallible;
use tokio_stream::Stream;
use utoipa::IntoParams;
use warden_api as api;
use warden_proto::v1 as pb;
use warden_proto::v1::run_service_server::RunService;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsQuery {
    /// Only this attempt's lines (from 1).
    attempt: Option<u32>,
    /// Send lines as they come, as events, until the run ends.
    follow: Option<bool>,
}

/// The event id of a log line: `ATTEMPT.SEQ`, which `Last-Event-ID` gives
/// back to resume after it.
fn line_id(line: &pb::LogLine) -> String {
    format!("{}.{}", line.attempt, line.seq)
}

fn parse_line_id(headers: &HeaderMap) -> Result<Option<(u32, u64)>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let bad = || {
        tonic::Status::invalid_argument(
            "Last-Event-ID is not an id this API sent (ATTEMPT.SEQ of a log line)",
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    let (attempt, seq) = text.split_once('.').ok_or_else(bad)?;
    Ok(Some((
        attempt.parse().map_err(|_| bad())?,
        seq.parse().map_err(|_| bad())?,
    )))
}

/// A stream's failure as a `problem` event carrying the problem document.
fn problem_event(status: tonic::Status) -> Event {
    Event::default()
        .event("problem")
        .json_data(ApiError::from(status).document())
        .unwrap_or_default()
}

/// The events of each message of a gRPC stream, a `problem` event if it
/// fails, and `end` when it is over (the run has ended, or the stream
/// failed): a client closes on `end` rather than reconnect.
fn events_of<T: Send + 'static>(
    stream: impl Stream<Item = Result<T, tonic::Status>> + Send + 'static,
    to_events: impl Fn(T) -> Vec<Event> + Send + 'static,
) -> Response {
    let events = stream
        .map(move |item| match item {
            Ok(message) => to_events(message),
            Err(status) => vec![problem_event(status)],
        })
        .flat_map(futures_util::stream::iter)
        .chain(futures_util::stream::once(async {
            Event::default().event("end").data("{}")
        }))
        .map(Ok::<_, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A run's log (`RunService.Logs`): the lines so far as JSON; with
/// `?follow=true`, Server-Sent Events (`line`, with id `ATTEMPT.SEQ`; then
/// `end` once the run has ended), resumable with `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/runs/{id}/logs", tag = "runs",
    params(("id" = String, Path, description = "the run's id"), LogsQuery,
        ("last-event-id" = Option<String>, Header, description = "resume after this line (`ATTEMPT.SEQ`)")),
    responses(
        (status = 200, description = "the lines, or (follow) their events",
            content((api::LogLines = "application/json"), (String = "text/event-stream"))),
        Problems,
    ))]
pub(super) async fn logs(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let caller = authorize(&cp, method!("RunService", "Logs"), &headers)?;
    let Path(id) = path?;
    let q: LogsQuery = query(&uri)?;
    let after = parse_line_id(&headers)?;
    let follow = q.follow.unwrap_or(false);
    let request = pb::RunLogsRequest {
        run_id: id,
        attempt: q.attempt.unwrap_or(0),
        follow,
        after_attempt: after.map_or(0, |(attempt, _)| attempt),
        after_seq: after.map(|(_, seq)| seq),
    };
    let mut stream = invoke(&cp, &caller, request, |cp, r| async move {
        RunService::logs(&cp, r).await
    })
    .await?;
    if !follow {
        // At most the control plane's --max-log-bytes per attempt.
        let mut lines = Vec::new();
        while let Some(batch) = stream.next().await {
            lines.extend(batch?.lines.iter().map(api::LogLine::from));
        }
        return Ok(Json(api::LogLines { lines }).into_response());
    }
    Ok(events_of(stream, |batch: pb::RunLogsResponse| {
        batch
            .lines
            .iter()
            .map(|line| {
                Event::default()
                    .event("line")
                    .id(line_id(line))
                    .json_data(api::LogLine::from(line))
                    .unwrap_or_default()
            })
            .collect()
    }))
}

/// A run's changes (`RunService.Watch`): Server-Sent Events, the run now
/// and at each change (`run`, the whole run), then `end` once it has
/// ended. A reconnect starts again with the run as it is then.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs",
    params(("id" = String, Path, description = "the run's id")),
    responses(
        (status = 200, description = "`run` events, then `end`", body = String, content_type = "text/event-stream"),
        Problems,
    ))]
pub(super) async fn events(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let caller = authorize(&cp, method!("RunService", "Watch"), &headers)?;
    let Path(id) = path?;
    let request = pb::WatchRunRequest { run_id: id };
    let stream = invoke(&cp, &caller, request, |cp, r| async move {
        RunService::watch(&cp, r).await
    })
    .await?;
    Ok(events_of(stream, |run: pb::Run| {
        vec![
            Event::default()
                .event("run")
                .json_data(api::Run::full(&run))
                .unwrap_or_default(),
        ]
    }))
}
