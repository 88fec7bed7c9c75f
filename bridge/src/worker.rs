//! One bridge's work on its streams: reading jobs, submitting their runs,
//! keeping them owned while they run, and publishing each result once.

use super::*;

impl Bridge {
    /// Reads `spec`'s stream for ever, and keeps the jobs in flight
    /// owned, reconnecting after errors.
    pub(super) async fn serve(self: Arc<Self>, spec: StreamSpec) {
        let slots = Arc::new(Semaphore::new(spec.limit));
        // Jobs being run now: a read after an error starts again from this
        // consumer's pending jobs, and XAUTOCLAIM may hand back one of its
        // own jobs; neither may start a job twice.
        let running: Running = Arc::default();
        let read = || self.clone().read(&spec, &slots, &running);
        let refresh = || self.refresh_in_flight(&spec, &running);
        tokio::join!(
            again_after_errors(&spec.stream, "reading the stream", read),
            again_after_errors(&spec.stream, "refreshing the jobs in flight", refresh),
        );
    }

    /// Every quarter of `--claim-idle`, resets the idle time of the jobs in
    /// flight ([`KEEP_OWNED`]), well before another bridge's `XAUTOCLAIM`
    /// would take them.
    pub(super) async fn refresh_in_flight(
        &self,
        spec: &StreamSpec,
        running: &Running,
    ) -> anyhow::Result<()> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        let every = (self.claim_idle / 4).max(Duration::from_millis(50));
        loop {
            tokio::time::sleep(every).await;
            let ids: Vec<String> = running
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, submitted)| **submitted)
                .map(|(id, _)| id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            self.keep_owned
                .key(&spec.stream)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(&ids)
                .invoke_async::<u64>(&mut conn)
                .await?;
        }
    }

    /// Hands each job to a task while a slot is free: first this
    /// consumer's own unacknowledged jobs, then idle ones of others and
    /// new ones.
    pub(super) async fn read(
        self: Arc<Self>,
        spec: &StreamSpec,
        slots: &Arc<Semaphore>,
        running: &Running,
    ) -> anyhow::Result<()> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        let mut own = Some("0".to_string());
        let mut claimed_at = tokio::time::Instant::now() - self.claim_idle;
        loop {
            // Wait for a free slot, then read as many jobs as are free.
            let first = slots.clone().acquire_owned().await?;
            let free = 1 + slots.available_permits();
            let jobs = if let Some(after) = &own {
                let jobs = self.read_group(&mut conn, spec, free, after, None).await?;
                own = jobs.last().map(|j| j.id.clone());
                jobs
            } else if claimed_at.elapsed() >= self.claim_idle / 2 {
                claimed_at = tokio::time::Instant::now();
                let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                    .arg(&spec.stream)
                    .arg(&self.group)
                    .arg(&self.consumer)
                    .arg(self.claim_idle.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(free)
                    .query_async(&mut conn)
                    .await?;
                if !reply.claimed.is_empty() {
                    tracing::info!(stream = %spec.stream, jobs = reply.claimed.len(), "claimed jobs another consumer left");
                }
                reply.claimed
            } else {
                self.read_group(&mut conn, spec, free, ">", Some(1000))
                    .await?
            };
            let mut permits = vec![first];
            for job in jobs {
                {
                    let mut running = running.lock().unwrap();
                    if running.contains_key(&job.id) {
                        continue;
                    }
                    running.insert(job.id.clone(), false);
                }
                let permit = match permits.pop() {
                    Some(p) => p,
                    None => slots.clone().acquire_owned().await?,
                };
                let this = self.clone();
                let spec = spec.clone();
                let running = running.clone();
                tokio::spawn(async move {
                    let _slot = permit;
                    let id = job.id.clone();
                    this.job(&spec, job, &running).await;
                    running.lock().unwrap().remove(&id);
                });
            }
        }
    }

    pub(super) async fn read_group(
        &self,
        conn: &mut MultiplexedConnection,
        spec: &StreamSpec,
        count: usize,
        after: &str,
        block_ms: Option<u64>,
    ) -> anyhow::Result<Vec<StreamId>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&spec.stream).arg(after);
        let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// Runs one job to its end and publishes the result (or dead-letters
    /// it), retrying what fails on the way until it is done, or until
    /// another bridge has acknowledged it.
    pub(super) async fn job(&self, spec: &StreamSpec, job: StreamId, running: &Running) {
        let mut failures = 0u32;
        loop {
            match self.try_job(spec, &job, running).await {
                Ok(()) => return,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(stream = %spec.stream, id = %job.id, error = %format!("{e:#}"), "job; retrying");
                    tokio::time::sleep(warden_core::Backoff::RECONNECT.delay(failures)).await;
                    if self.acknowledged(spec, &job).await {
                        tracing::info!(stream = %spec.stream, id = %job.id, "job acknowledged meanwhile (by another bridge); dropping it");
                        return;
                    }
                }
            }
        }
    }

    /// Whether the job is no longer pending in the group (an error counts
    /// as still pending).
    pub(super) async fn acknowledged(&self, spec: &StreamSpec, job: &StreamId) -> bool {
        let pending = async {
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("XPENDING")
                .arg(&spec.stream)
                .arg(&self.group)
                .arg(&job.id)
                .arg(&job.id)
                .arg(1)
                .query_async::<Vec<redis::Value>>(&mut conn)
                .await
        };
        pending.await.is_ok_and(|entries| entries.is_empty())
    }

    pub(super) async fn try_job(
        &self,
        spec: &StreamSpec,
        job: &StreamId,
        running: &Running,
    ) -> anyhow::Result<()> {
        let input = match job_input(job) {
            Ok(input) => input,
            Err(reason) => return self.dead_letter(spec, job, &reason).await,
        };
        let submitted = self
            .runs
            .submit(pb::SubmitRequest {
                agent: spec.agent.clone(),
                input,
                idempotency_key: format!("redis:{}:{}", spec.stream, job.id),
                // What the agent's capability manifest declares.
                grant: Some(pb::Grant {
                    as_declared: true,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        let run = match submitted {
            Ok(r) => r.run.context("the control plane answered no run")?,
            // The job itself is bad (its input): it would fail again.
            Err(e) if e.code() == tonic::Code::InvalidArgument => {
                return self.dead_letter(spec, job, e.message()).await;
            }
            // Anything else is the bridge's setup or the control plane's
            // state (unreachable, a quota, an unknown agent, a refused
            // token), not the job's: retried, with the reason logged, so a
            // mistake in --stream or --token loses no job.
            Err(e) => return Err(status(e)),
        };
        // From here on the job is kept owned while its run goes on.
        running.lock().unwrap().insert(job.id.clone(), true);
        let run = self.wait_terminal(&run.run_id).await?;
        self.publish(spec, job, &run).await
    }

    pub(super) async fn wait_terminal(&self, run_id: &str) -> anyhow::Result<pb::Run> {
        let mut pause = Duration::from_millis(20);
        loop {
            let run = self.runs.get(run_id).await.map_err(status)?;
            let terminal = warden_core::RunState::from_proto(run.run_state)
                .is_some_and(warden_core::RunState::is_terminal);
            if terminal {
                return Ok(run);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Acknowledges the job and adds the run's result to the result stream
    /// ([`ACK_THEN_ADD`]).
    pub(super) async fn publish(
        &self,
        spec: &StreamSpec,
        job: &StreamId,
        run: &pb::Run,
    ) -> anyhow::Result<()> {
        let state = warden_core::RunState::from_proto(run.run_state)
            .map_or("unknown", warden_core::RunState::as_str);
        let kind = warden_core::FailureKind::from_proto(run.error_kind)
            .map_or("", warden_core::FailureKind::as_str);
        let usage = run
            .usage
            .as_ref()
            .map(|u| {
                serde_json::json!({
                    "prompt_tokens": u.prompt_tokens,
                    "completion_tokens": u.completion_tokens,
                    "cost_usd": u.cost_usd,
                    "fuel_used": u.fuel_used,
                    "wall_time_ms": u.wall_time_ms,
                })
                .to_string()
            })
            .unwrap_or_else(|| "{}".into());
        let fields: [(&str, &str); 9] = [
            ("stream", &spec.stream),
            ("id", &job.id),
            ("run_id", &run.run_id),
            ("state", state),
            ("output", &run.output),
            ("error_kind", kind),
            ("error_message", &run.error_message),
            ("attempts", &run.attempt.to_string()),
            ("usage", &usage),
        ];
        self.publish_once(spec, job, &self.results, &fields).await
    }

    pub(super) async fn dead_letter(
        &self,
        spec: &StreamSpec,
        job: &StreamId,
        reason: &str,
    ) -> anyhow::Result<()> {
        tracing::warn!(stream = %spec.stream, id = %job.id, %reason, "job dead-lettered");
        let raw = serde_json::to_string(
            &job.map
                .iter()
                .map(|(k, v)| (k.clone(), field_text(v)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        )?;
        let fields: [(&str, &str); 4] = [
            ("stream", &spec.stream),
            ("id", &job.id),
            ("reason", reason),
            ("fields", &raw),
        ];
        self.publish_once(spec, job, &self.dead_letter, &fields)
            .await
    }

    pub(super) async fn publish_once(
        &self,
        spec: &StreamSpec,
        job: &StreamId,
        to: &str,
        fields: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        let mut call = self.ack_then_add.key(&spec.stream);
        call.key(to).arg(&self.group).arg(&job.id);
        for (field, value) in fields {
            call.arg(field).arg(value);
        }
        let added: u8 = call.invoke_async(&mut conn).await?;
        if added == 0 {
            // Another bridge took the job (this one lost Redis, or could
            // not submit, for --claim-idle) and published it first.
            tracing::info!(stream = %spec.stream, id = %job.id, "job already acknowledged (by another bridge); not published again");
        }
        Ok(())
    }
}

/// A field as text (binary-safe: bytes that are not UTF-8 are replaced).
fn field_text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// The job's `input` (JSON text), or why it cannot be run.
fn job_input(job: &StreamId) -> Result<String, String> {
    let value = job
        .map
        .get("input")
        .ok_or_else(|| "the job has no `input` field".to_string())?;
    let redis::Value::BulkString(bytes) = value else {
        return Err("the job's `input` field is not a string".into());
    };
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| "the job's `input` is not UTF-8".to_string())?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| format!("the job's `input` is not JSON: {e}"))?;
    Ok(text)
}
