//! `warden dev --watch DIR`: rebuilds an agent when its sources change and
//! publishes each new build as a dev version, so `warden submit NAME` (its
//! newest version) always runs the latest code, with no version bumps.

use crate::project::Project;
use crate::remote::Remote;
use crate::sdk::Sdk;
use sha2::Digest;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// How often the sources are looked at.
const POLL: Duration = Duration::from_millis(700);

/// Checks each directory is an agent's, before anything starts.
pub(crate) fn projects(dirs: &[PathBuf]) -> anyhow::Result<Vec<Project>> {
    dirs.iter().map(|d| Project::open(d)).collect()
}

/// Watches `project` for the life of the process, publishing to the
/// control plane at `url`.
pub(crate) async fn watch(project: Project, sdk: Sdk, url: String) {
    let remote = Remote::local(url);
    let mut seen: Option<SystemTime> = None;
    let mut published: Option<Vec<u8>> = None;
    loop {
        let stamp = project.sources_changed_at();
        if seen != Some(stamp) {
            seen = Some(stamp);
            let (p, s) = (project.clone(), sdk.clone());
            // A build newer than the sources (from `warden build`) is used
            // as it is.
            let built = tokio::task::spawn_blocking(move || p.ensure_built(&s)).await;
            match built {
                Ok(Ok(out)) => match publish(&project, &remote, &out, &mut published).await {
                    Ok(Some(reference)) => println!(
                        "published {reference}: `warden submit {}` runs it",
                        project.name
                    ),
                    Ok(None) => eprintln!("{}: the build did not change", project.name),
                    Err(e) => {
                        eprintln!(
                            "error: {}: cannot publish (trying again): {e:#}",
                            project.name
                        );
                        // Look again (the build is fresh: publish only).
                        seen = None;
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                },
                Ok(Err(e)) => eprintln!("error: {e:#}\n(watching {} for the fix)", project.name),
                Err(e) => eprintln!("error: {}: the build stopped: {e}", project.name),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Publishes the build at `out` unless it is the one published last; the
/// version is `dev-TIME-HASH`, so the newest build is the newest version.
async fn publish(
    project: &Project,
    remote: &Remote,
    out: &std::path::Path,
    last: &mut Option<Vec<u8>>,
) -> anyhow::Result<Option<String>> {
    let bytes = std::fs::read(out)?;
    let capabilities = match project.manifest() {
        Some(path) => crate::args::read_manifest(&path)?.0,
        None => String::new(),
    };
    let digest = sha2::Sha256::new()
        .chain_update(&bytes)
        .chain_update(capabilities.as_bytes())
        .finalize()
        .to_vec();
    if last.as_ref() == Some(&digest) {
        return Ok(None);
    }
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let version = format!("dev-{secs}-{}", &hex::encode(&digest)[..8]);
    crate::registry::publish_to(
        remote.channel().await?,
        &project.name,
        &version,
        &bytes,
        capabilities,
        String::new(),
    )
    .await?;
    *last = Some(digest);
    Ok(Some(format!("{}@{version}", project.name)))
}
